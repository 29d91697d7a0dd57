"""DirectoryReadAhead with a fake fetch: what it fetches, when, and within which bounds."""

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import trio
import trio.testing

from objmount.backends.base import ObjectInfo
from objmount.cache.dirahead import DirectoryReadAhead, directory_of
from tests.unit.trio_test import trio_test

KB = 1000


def files(prefix: str, count: int, size: int = 100 * KB) -> list[ObjectInfo]:
    return [ObjectInfo(f"{prefix}img_{i:03d}.jpg", size, f"etag{i}", 0) for i in range(count)]


class Store:
    """Directory listings and a fetch that records keys; `gate` holds fetches until set."""

    def __init__(self, listings: dict[str, list[ObjectInfo]]) -> None:
        self.listings = listings
        self.fetched: list[str] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.gate: trio.Event | None = None
        self.fail: set[str] = set()

    def files_in(self, prefix: str) -> Iterable[ObjectInfo]:
        return self.listings.get(prefix, [])

    async def fetch(self, obj: ObjectInfo) -> None:
        self.fetched.append(obj.key)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await trio.sleep(0)
            if obj.key in self.fail:
                raise OSError("store unreachable")
        finally:
            self.in_flight -= 1


@asynccontextmanager
async def read_ahead(
    store: Store, *, ahead_bytes: int = 10**9, parallel: int = 4, small_bytes: int = 10**6,
    **kwargs: object,
) -> AsyncIterator[DirectoryReadAhead]:
    async with trio.open_nursery() as nursery:
        yield DirectoryReadAhead(
            store.fetch, store.files_in, nursery.start_soon,
            small_bytes=small_bytes, ahead_bytes=ahead_bytes, parallel=parallel, **kwargs,
        )


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


def test_directory_of_a_key_is_its_prefix_up_to_the_last_slash() -> None:
    assert directory_of("train/class_00/img.jpg") == "train/class_00/"
    assert directory_of("top.jpg") == ""


@trio_test
async def test_one_cold_open_fetches_nothing_ahead() -> None:
    dir_files = files("d/", 20)
    store = Store({"d/": dir_files})
    async with read_ahead(store) as ahead:
        ahead.opened(dir_files[5])
        ahead.missed(dir_files[5])
        await settle()
    assert store.fetched == []


@trio_test
async def test_two_cold_opens_fetch_the_rest_of_the_directory_once() -> None:
    dir_files = files("d/", 20)
    store = Store({"d/": dir_files, "other/": files("other/", 5)})
    async with read_ahead(store) as ahead:
        for obj in dir_files[3], dir_files[7]:
            ahead.opened(obj)
            ahead.missed(obj)
        await settle()
    expected = [f.key for f in dir_files if f not in (dir_files[3], dir_files[7])]
    assert sorted(store.fetched) == expected


@trio_test
async def test_files_opened_meanwhile_are_not_fetched_ahead() -> None:
    dir_files = files("d/", 10)
    store = Store({"d/": dir_files})
    store.gate = trio.Event()
    async with read_ahead(store, parallel=1) as ahead:
        for obj in dir_files[0], dir_files[1]:
            ahead.missed(obj)
        await settle()
        ahead.opened(dir_files[9])
        store.gate.set()
        await settle()
    assert dir_files[9].key not in store.fetched
    assert len(store.fetched) == 7


@trio_test
async def test_fetches_stay_within_ahead_bytes_until_the_reader_opens_them() -> None:
    dir_files = files("d/", 50, size=100 * KB)
    store = Store({"d/": dir_files})
    async with read_ahead(store, ahead_bytes=300 * KB) as ahead:
        ahead.missed(dir_files[0])
        ahead.missed(dir_files[1])
        await settle()
        assert sorted(store.fetched) == [f.key for f in dir_files[2:5]]
        ahead.opened(dir_files[2])  # one fetched-ahead file used: room for one more
        await settle()
        assert sorted(store.fetched) == [f.key for f in dir_files[2:6]]


@trio_test
async def test_at_most_parallel_fetches_in_flight_across_directories() -> None:
    listings = {f"d{i}/": files(f"d{i}/", 30) for i in range(3)}
    store = Store(listings)
    store.gate = trio.Event()
    async with read_ahead(store, parallel=4) as ahead:
        for dir_files in listings.values():
            ahead.missed(dir_files[0])
            ahead.missed(dir_files[1])
        await settle()
        assert store.in_flight == 4
        store.gate.set()
        await settle()
    assert store.peak_in_flight == 4
    assert len(store.fetched) == 3 * 28


@trio_test
async def test_only_small_files_are_fetched_ahead_and_only_small_misses_count() -> None:
    dir_files = files("d/", 4) + files("d/big_", 2, size=5_000_000)
    store = Store({"d/": dir_files})
    async with read_ahead(store, small_bytes=1_000_000) as ahead:
        ahead.missed(dir_files[4])
        ahead.missed(dir_files[5])  # two large files: not the ImageFolder pattern
        await settle()
        assert store.fetched == []
        ahead.missed(dir_files[0])
        ahead.missed(dir_files[1])
        await settle()
    assert sorted(store.fetched) == [dir_files[2].key, dir_files[3].key]


@trio_test
async def test_a_failed_fetch_frees_its_room_and_the_rest_go_on() -> None:
    dir_files = files("d/", 6)
    store = Store({"d/": dir_files})
    store.fail = {dir_files[2].key}
    async with read_ahead(store, ahead_bytes=200 * KB, parallel=1) as ahead:
        ahead.missed(dir_files[0])
        ahead.missed(dir_files[1])
        await settle()
    assert sorted(store.fetched) == [f.key for f in dir_files[2:5]]


@trio_test
async def test_zero_ahead_bytes_turns_it_off() -> None:
    dir_files = files("d/", 6)
    store = Store({"d/": dir_files})
    async with read_ahead(store, ahead_bytes=0) as ahead:
        for obj in dir_files[:4]:
            ahead.missed(obj)
        await settle()
    assert store.fetched == []


@trio_test
async def test_a_finished_directory_starts_again_after_new_misses() -> None:
    dir_files = files("d/", 4)
    store = Store({"d/": dir_files})
    async with read_ahead(store) as ahead:
        ahead.missed(dir_files[0])
        ahead.missed(dir_files[1])
        await settle()
        assert len(store.fetched) == 2
        # The cache lost everything (evicted): the next epoch's misses restart it.
        ahead.missed(dir_files[2])
        ahead.missed(dir_files[3])
        await settle()
    assert sorted(store.fetched[2:]) == [dir_files[0].key, dir_files[1].key]


@trio_test
async def test_directories_are_read_ahead_only_while_those_being_read_fit_in_the_cache(
) -> None:
    """Directories of 2 MB with a 5 MB cache: two being read fit, a third does not (files
    fetched ahead would be evicted before their opens): nothing more starts."""
    listings = {f"c{n}/": files(f"c{n}/", 20) for n in range(3)}
    store = Store(listings)
    async with read_ahead(store, cache_bytes=5_000_000) as ahead:
        for n in range(2):
            for obj in listings[f"c{n}/"][:2]:
                ahead.opened(obj)
                ahead.missed(obj)
        await settle()
        assert {directory_of(k) for k in store.fetched} == {"c0/", "c1/"}
        fetched = len(store.fetched)
        for obj in listings["c2/"][:2]:
            ahead.opened(obj)
            ahead.missed(obj)
        await settle()
    assert len(store.fetched) == fetched


@trio_test
async def test_nothing_starts_while_paused() -> None:
    dir_files = files("d/", 20)
    store = Store({"d/": dir_files})
    paused = True
    async with read_ahead(store, paused=lambda: paused) as ahead:
        for obj in dir_files[:3]:
            ahead.opened(obj)
            ahead.missed(obj)
        await settle()
        assert store.fetched == []
        paused = False
        for obj in dir_files[3:5]:
            ahead.opened(obj)
            ahead.missed(obj)
        await settle()
    # Opens while paused are not remembered (that would cost memory per open).
    assert sorted(store.fetched) == sorted(o.key for o in dir_files[:3] + dir_files[5:])


@trio_test
async def test_a_directory_that_makes_the_working_set_too_large_stops_those_active() -> None:
    """Directories of 2 MB with a 5 MB cache, 300 KB ahead each: c0 and c1 read ahead; once
    c2 is being read too, their files fetched ahead would wait for opens longer than the
    cache keeps them, so the reader's opens free no room for more fetches."""
    listings = {f"c{n}/": files(f"c{n}/", 20) for n in range(3)}
    store = Store(listings)
    async with read_ahead(store, ahead_bytes=300 * KB, cache_bytes=5_000_000) as ahead:
        for n in range(2):
            for obj in listings[f"c{n}/"][:2]:
                ahead.opened(obj)
                ahead.missed(obj)
        await settle()
        assert len(store.fetched) == 6  # 3 ahead in each
        ahead.opened(listings["c2/"][0])
        ahead.missed(listings["c2/"][0])
        for key in list(store.fetched):
            ahead.opened(next(o for o in listings[directory_of(key)] if o.key == key))
        await settle()
    assert len(store.fetched) == 6
