"""Directory list-ahead: subdirectories of a directory in use are listed in the background,
within bounds (parallel, window, one level, pages), sharing listings with demand."""

import threading

import pytest
import trio
import trio.testing

from objmount.backends.base import ListPage, Unreachable
from objmount.backends.runner import Runner
from objmount.namespace.listahead import QUEUE_MAX, ListAhead
from objmount.namespace.tree import LIST_AHEAD_MAX_PAGES, LIST_AHEAD_WINDOW, ROOT_INODE, Namespace
from tests.unit.fake_backend import FakeBackend
from tests.unit.trio_test import trio_test


class ControlledBackend(FakeBackend):
    """A FakeBackend whose listings below the top wait for `release` (recording how many
    wait at once), and fail for the prefixes in `failing`."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        super().__init__(objects)
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.waiting = 0
        self.most_waiting = 0
        self.listed: list[str] = []
        self.failing: set[str] = set()

    def list_page(self, prefix: str, delimiter: str | None, token: str | None,
                  **bounds: object) -> ListPage:
        with self.lock:
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
            self.listed.append(prefix)
        if prefix:
            self.release.wait(10)
        with self.lock:
            self.waiting -= 1
        if prefix in self.failing:
            raise Unreachable("store is down")
        return super().list_page(prefix, delimiter, token, **bounds)


def tree(dirs: int, files_per_dir: int = 1, prefix: str = "") -> dict[str, bytes]:
    return {f"{prefix}d{d:03d}/f{f}": b"x" for d in range(dirs) for f in range(files_per_dir)}


async def settle() -> None:
    """Let every background listing finish (their threads included)."""
    for _ in range(3):
        await trio.testing.wait_all_tasks_blocked(0.05)


@trio_test
async def test_using_a_directory_lists_its_subdirectories_in_the_background() -> None:
    backend = FakeBackend(tree(5) | {"top.txt": b"1"})
    ns = Namespace(backend, Runner(8, retries=0), "", 300)
    async with trio.open_nursery() as nursery:
        await nursery.start(ns.serve)
        children = await ns.children(ROOT_INODE)
        await settle()
        assert backend.list_calls == 1 + 5
        for name in ("d000", "d004"):
            assert sorted(await ns.children(children[name].inode)) == ["f0"]
        assert backend.list_calls == 1 + 5  # the descent found them listed
        nursery.cancel_scope.cancel()


@trio_test
async def test_at_most_parallel_listings_ahead_run_at_once() -> None:
    backend = ControlledBackend(tree(12))
    ns = Namespace(backend, Runner(16, retries=0), "", 300, list_ahead_parallel=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(ns.serve)
        await ns.children(ROOT_INODE)
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert backend.waiting == 3
        backend.release.set()
        await settle()
        assert backend.most_waiting == 3
        assert sorted(backend.listed[1:]) == [f"d{d:03d}/" for d in range(12)]
        nursery.cancel_scope.cancel()


@trio_test
async def test_listing_ahead_is_one_level_deep() -> None:
    backend = FakeBackend({"a/b/c/f": b"1"})
    ns = Namespace(backend, Runner(8, retries=0), "", 300)
    async with trio.open_nursery() as nursery:
        await nursery.start(ns.serve)
        await ns.children(ROOT_INODE)
        await settle()
        assert backend.list_calls == 2  # '' and 'a/', not 'a/b/'
        nursery.cancel_scope.cancel()


@trio_test
async def test_no_more_than_the_window_is_listed_ahead_of_use() -> None:
    backend = FakeBackend(tree(LIST_AHEAD_WINDOW + 10))
    ns = Namespace(backend, Runner(8, retries=0), "", 300)
    async with trio.open_nursery() as nursery:
        await nursery.start(ns.serve)
        children = await ns.children(ROOT_INODE)
        await settle()
        assert backend.list_calls == 1 + LIST_AHEAD_WINDOW
        await ns.children(children["d000"].inode)  # using one makes room for one more
        await settle()
        assert backend.list_calls == 1 + LIST_AHEAD_WINDOW + 1
        nursery.cancel_scope.cancel()


@trio_test
async def test_a_demand_lookup_shares_a_listing_ahead_in_flight() -> None:
    backend = ControlledBackend(tree(1, files_per_dir=3))
    ns = Namespace(backend, Runner(8, retries=0), "", 300)
    async with trio.open_nursery() as nursery:
        await nursery.start(ns.serve)
        d = (await ns.children(ROOT_INODE))["d000"]
        await trio.testing.wait_all_tasks_blocked(0.05)  # the listing ahead waits
        assert backend.listed == ["", "d000/"]
        nursery.start_soon(ns.lookup, d.inode, "f1")
        await trio.testing.wait_all_tasks_blocked(0.05)
        backend.release.set()
        assert sorted(await ns.children(d.inode)) == ["f0", "f1", "f2"]
        await settle()
        assert backend.listed == ["", "d000/"]
        nursery.cancel_scope.cancel()


@trio_test
async def test_a_failed_listing_ahead_is_retried_and_reported_on_demand() -> None:
    backend = ControlledBackend(tree(1))
    backend.release.set()
    backend.failing.add("d000/")
    ns = Namespace(backend, Runner(8, retries=0), "", 300)
    async with trio.open_nursery() as nursery:
        await nursery.start(ns.serve)
        d = (await ns.children(ROOT_INODE))["d000"]
        await settle()
        assert backend.listed == ["", "d000/"] and not ns.is_listed(d.inode)
        with pytest.raises(Unreachable):
            await ns.children(d.inode)
        backend.failing.clear()
        assert sorted(await ns.children(d.inode)) == ["f0"]
        nursery.cancel_scope.cancel()


@trio_test
async def test_a_directory_of_too_many_pages_is_left_to_its_demand_listing() -> None:
    pages = LIST_AHEAD_MAX_PAGES + 2
    backend = FakeBackend({f"big/f{i:03d}": b"" for i in range(pages)}, page_size=1)
    ns = Namespace(backend, Runner(8, retries=0), "", 300)
    async with trio.open_nursery() as nursery:
        await nursery.start(ns.serve)
        big = (await ns.children(ROOT_INODE))["big"]
        await settle()
        assert not ns.is_listed(big.inode)  # gave up: nothing stored
        assert backend.list_calls == 1 + LIST_AHEAD_MAX_PAGES
        assert len(await ns.children(big.inode)) == pages  # listed whole, on demand
        nursery.cancel_scope.cancel()


@trio_test
async def test_without_serve_directories_are_listed_on_demand_only() -> None:
    backend = FakeBackend(tree(3))
    ns = Namespace(backend, Runner(8, retries=0), "", 300)
    await ns.children(ROOT_INODE)
    await settle()
    assert backend.list_calls == 1


@trio_test
async def test_nothing_is_listed_ahead_with_a_dir_cache_time_of_zero() -> None:
    backend = FakeBackend(tree(3))
    ns = Namespace(backend, Runner(8, retries=0), "", 0)  # every use lists again
    async with trio.open_nursery() as nursery:
        await nursery.start(ns.serve)
        children = await ns.children(ROOT_INODE)
        await settle()
        assert not any(ns.is_listed(child.inode) for child in children.values())
        nursery.cancel_scope.cancel()


class GatedLister:
    """`list_one` and `is_listed` for a bare ListAhead: listings wait for `gate`."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.gate = trio.Event()

    async def list_one(self, inode: int) -> bool:
        self.started.append(inode)
        await self.gate.wait()
        return True

    def is_listed(self, inode: int) -> bool:
        return inode in self.started


@trio_test
async def test_the_newest_wanted_directories_are_listed_first() -> None:
    lister = GatedLister()
    ahead = ListAhead(lister.list_one, lister.is_listed, parallel=1, window=2 * QUEUE_MAX)
    async with trio.open_nursery() as nursery:
        await nursery.start(ahead.serve)
        ahead.want([1, 2, 3])
        await trio.testing.wait_all_tasks_blocked()  # 1 is being listed
        ahead.want([10, 11])  # a deeper level: before 2 and 3
        lister.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert lister.started == [1, 10, 11, 2, 3]
        ahead.want(list(range(100, 100 + QUEUE_MAX + 5)))  # past QUEUE_MAX: the last dropped
        await trio.testing.wait_all_tasks_blocked()
        assert lister.started[5:] == list(range(100, 100 + QUEUE_MAX))
        nursery.cancel_scope.cancel()


@trio_test
async def test_a_directory_used_while_being_listed_ahead_takes_no_room() -> None:
    lister = GatedLister()
    ahead = ListAhead(lister.list_one, lister.is_listed, parallel=1, window=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(ahead.serve)
        ahead.want([1, 2])
        await trio.testing.wait_all_tasks_blocked()  # 1 is being listed
        ahead.used(1)  # the descent reached it: it waits on the same listing
        lister.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert lister.started == [1, 2]
        nursery.cancel_scope.cancel()
