"""The namespace: listings become a stable tree of inodes in a database, listed lazily,
served stale while re-listed, and kept in snapshots."""

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from objmount.backends.base import NotFound, Unreachable
from objmount.backends.runner import Runner
from objmount.namespace import snapshot
from objmount.namespace.tree import (
    LONG_TIMEOUT_S,
    REFRESH_RETRY_S,
    ROOT_INODE,
    Freshness,
    Namespace,
)
from tests.unit.fake_backend import FakeBackend
from tests.unit.trio_test import trio_test

SOURCE = "fake:test/container"


class Clock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def namespace(backend: FakeBackend, prefix: str = "", ttl_s: float = 300, clock=None,
              **kwargs) -> Namespace:
    return Namespace(backend, Runner(4, retries=0), prefix, ttl_s, clock or Clock(), **kwargs)


def clocked(backend: FakeBackend, ttl_s: float) -> tuple[Namespace, Clock]:
    """A namespace whose listings expire after `ttl_s` of its own clock, and that clock."""
    clock = Clock()
    return namespace(backend, ttl_s=ttl_s, clock=clock), clock


def run(fn, *args):
    return trio.run(fn, *args)


def names(ns: Namespace, inode: int = ROOT_INODE) -> list[str]:
    return sorted(run(ns.children, inode))


@contextlib.asynccontextmanager
async def serving(ns: Namespace) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(ns.serve)
        yield
        nursery.cancel_scope.cancel()


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait (polling, up to 20 s) until `condition()` holds: background work runs in
    threads, which trio's wait_all_tasks_blocked does not wait for."""
    with trio.move_on_after(20):
        while not condition():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"never happened: {what}")


def test_common_prefixes_and_markers_are_directories() -> None:
    backend = FakeBackend({"a/x": b"1", "marker/": b"", "f": b"22"})
    ns = namespace(backend)
    assert names(ns) == ["a", "f", "marker"]
    children = run(ns.children, ROOT_INODE)
    assert children["a"].is_dir and children["marker"].is_dir
    assert children["f"].obj is not None and children["f"].obj.size == 2
    assert names(ns, children["marker"].inode) == []


def test_listing_follows_every_page() -> None:
    backend = FakeBackend({f"d/{i:04d}": b"" for i in range(2500)}, page_size=1000)
    ns = namespace(backend)
    d = run(ns.lookup, ROOT_INODE, "d")
    assert len(names(ns, d.inode)) == 2500


@trio_test
async def test_an_expired_listing_answers_at_once_while_one_relisting_runs() -> None:
    backend = FakeBackend({"a": b"1"})
    ns, clock = clocked(backend, ttl_s=10)
    async with serving(ns):
        assert sorted(await ns.children(ROOT_INODE)) == ["a"]
        await ns.children(ROOT_INODE)
        assert backend.list_calls == 1  # fresh: reused
        backend.objects["b"] = b"2"
        clock.now += 11
        assert sorted(await ns.children(ROOT_INODE)) == ["a"]  # expired: old, at once
        await ns.children(ROOT_INODE)  # the re-listing in flight is not started again
        await eventually(lambda: ns.db.lookup(ROOT_INODE, "b") is not None,
                         "the background re-listing")
        assert sorted(await ns.children(ROOT_INODE)) == ["a", "b"]
        assert backend.list_calls == 2


@trio_test
async def test_only_a_never_listed_directory_waits_for_its_listing() -> None:
    backend = FakeBackend({"d/x": b"1"})
    ns = namespace(backend)
    backend.fail = Unreachable("store is down")
    with pytest.raises(Unreachable):
        await ns.children(ROOT_INODE)
    backend.fail = None
    assert sorted(await ns.children(ROOT_INODE)) == ["d"]


@trio_test
async def test_a_dir_cache_time_of_zero_relists_at_every_use_in_the_background() -> None:
    backend = FakeBackend({"a": b"1"})
    ns = namespace(backend, ttl_s=0)
    async with serving(ns):
        assert sorted(await ns.children(ROOT_INODE)) == ["a"]
        backend.objects["b"] = b"2"
        await ns.children(ROOT_INODE)
        await eventually(lambda: backend.list_calls == 2, "a re-listing")
        await eventually(lambda: ns.db.lookup(ROOT_INODE, "b") is not None, "b listed")


@trio_test
async def test_inodes_stay_while_versions_stay_and_a_new_version_gets_a_new_inode() -> None:
    backend = FakeBackend({"a": b"1", "same": b"s", "d/x": b"2"})
    ns, clock = clocked(backend, ttl_s=1)
    gone: list[tuple[int, str]] = []
    ns.on_gone = lambda parent, name: gone.append((parent, name))
    async with serving(ns):
        before = await ns.children(ROOT_INODE)
        backend.objects["a"] = b"changed"
        clock.now += 5
        await ns.children(ROOT_INODE)
        await eventually(lambda: backend.list_calls >= 2 and ns.is_listed(ROOT_INODE)
                         and ns.db.lookup(ROOT_INODE, "a").size == 7, "the re-listing")
        after = await ns.children(ROOT_INODE)
    assert after["same"].inode == before["same"].inode
    assert after["d"].inode == before["d"].inode
    assert after["a"].inode != before["a"].inode  # one inode per version
    assert gone == [(ROOT_INODE, "a")]  # the kernel is told to forget the old entry
    old = ns.get(before["a"].inode)  # still answers by number (an open file's getattr)
    assert old.gone and old.obj.size == 1
    assert ns.current(before["a"].inode).size == len(b"changed")  # what an open reads


@trio_test
async def test_a_vanished_name_is_gone_but_its_inode_still_answers() -> None:
    backend = FakeBackend({"a": b"1", "d/x": b"2"})
    ns, clock = clocked(backend, ttl_s=1)
    async with serving(ns):
        before = await ns.children(ROOT_INODE)
        x = await ns.lookup(before["d"].inode, "x")
        del backend.objects["a"], backend.objects["d/x"]
        clock.now += 5
        await ns.children(ROOT_INODE)
        await eventually(lambda: ns.db.lookup(ROOT_INODE, "a") is None, "the re-listing")
    with pytest.raises(NotFound):
        await ns.lookup(ROOT_INODE, "a")
    assert ns.get(before["a"].inode).gone and ns.current(before["a"].inode) is None
    assert ns.get(x.inode).gone  # the subtree of a vanished directory goes with it


@trio_test
async def test_a_failed_relisting_is_logged_once_and_retried_later(
        caplog: pytest.LogCaptureFixture) -> None:
    backend = FakeBackend({"a": b"1"})
    ns, clock = clocked(backend, ttl_s=1)
    async with serving(ns):
        await ns.children(ROOT_INODE)
        backend.fail = Unreachable("store is down")
        backend.objects["b"] = b"2"
        clock.now += 5
        with caplog.at_level(logging.WARNING):
            assert sorted(await ns.children(ROOT_INODE)) == ["a"]
            await eventually(lambda: backend.list_calls == 2, "the failed re-listing")
            await eventually(lambda: ns._dirs[ROOT_INODE].retry_at > clock.now, "a retry time")
            for _ in range(3):  # before the retry time: no new request, the old listing
                assert sorted(await ns.children(ROOT_INODE)) == ["a"]
            assert backend.list_calls == 2
            clock.now += REFRESH_RETRY_S
            assert sorted(await ns.children(ROOT_INODE)) == ["a"]
            await eventually(lambda: backend.list_calls == 3, "the retry")
            await eventually(lambda: ns._dirs[ROOT_INODE].retry_at > clock.now, "failed again")
            backend.fail = None
            clock.now += REFRESH_RETRY_S
            await ns.children(ROOT_INODE)
            await eventually(lambda: ns.db.lookup(ROOT_INODE, "b") is not None, "recovery")
    failures = [r for r in caplog.records if "cannot refresh the listing" in r.getMessage()]
    assert len(failures) == 1


def test_invalid_names_are_skipped() -> None:
    backend = FakeBackend({
        "ok": b"", "a//b": b"", "./x": b"", "../y": b"", "n\0ul": b"",
        "x" * 256: b"", "é" * 127 + "z": b"",
    })
    assert names(namespace(backend)) == sorted(["ok", "a", "é" * 127 + "z"])


def test_a_directory_wins_over_a_file_of_the_same_name() -> None:
    backend = FakeBackend({"same": b"file", "same/inner": b"x"})
    ns = namespace(backend)
    assert run(ns.lookup, ROOT_INODE, "same").is_dir


def test_lookup_of_a_missing_name_is_not_found() -> None:
    ns = namespace(FakeBackend({"a": b""}))
    with pytest.raises(NotFound):
        run(ns.lookup, ROOT_INODE, "b")
    with pytest.raises(NotFound):
        ns.get(999)


def test_a_prefix_is_the_root() -> None:
    backend = FakeBackend({"data/train/x.jpg": b"1", "other/y": b"2"})
    ns = namespace(backend, prefix="data/")
    assert names(ns) == ["train"]
    train = run(ns.lookup, ROOT_INODE, "train")
    assert run(ns.lookup, train.inode, "x.jpg").obj.key == "data/train/x.jpg"


def test_concurrent_lookups_share_one_listing() -> None:
    backend = FakeBackend({f"f{i}": b"" for i in range(10)})
    ns = namespace(backend)

    async def many_lookups() -> None:
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(ns.lookup, ROOT_INODE, f"f{i}")

    run(many_lookups)
    assert backend.list_calls == 1


def tree_of(ns: Namespace, inode: int = ROOT_INODE, path: str = "") -> set[str]:
    found = set()
    for name, node in run(ns.children, inode).items():
        found.add(path + name + ("/" if node.is_dir else ""))
        if node.is_dir:
            found |= tree_of(ns, node.inode, path + name + "/")
    return found


def test_fast_list_builds_the_same_tree_as_lazy_listing() -> None:
    objects = {
        "top": b"1", "a/b/c": b"2", "a/d": b"3", "m/": b"", "m/n/": b"", "bad//x": b"",
        "clash": b"f", "clash/in": b"d",
    }
    lazy = tree_of(namespace(FakeBackend(objects)))
    backend = FakeBackend(objects, page_size=2)
    eager = namespace(backend)
    assert run(eager.load_all) == len(objects)
    calls = backend.list_calls
    assert tree_of(eager) == lazy
    assert backend.list_calls == calls  # everything was loaded up front
    assert "bad/" in lazy and "m/n/" in lazy and "clash/" in lazy and "clash" not in lazy


def test_a_relative_path_resolves_to_its_file_listing_only_what_is_on_the_way() -> None:
    backend = FakeBackend({"pre/train/c0/a.jpg": b"1", "pre/train/c1/b.jpg": b"22",
                           "pre/val/x.jpg": b"3", "pre/top.txt": b"4"})
    ns = namespace(backend, prefix="pre/")
    b = run(ns.resolve, "train/c1/b.jpg")
    assert b is not None and (b.key, b.size) == ("pre/train/c1/b.jpg", 2)
    calls = backend.list_calls
    assert run(ns.resolve, "train/c1/b.jpg") == b  # its directory is known: no listing
    assert run(ns.resolve, "top.txt").key == "pre/top.txt"
    assert backend.list_calls == calls
    for missing in ("train/c1/nope.jpg", "nope/a.jpg", "top.txt/a", "train/c0"):
        assert run(ns.resolve, missing) is None


# -- snapshots ---------------------------------------------------------------------


def mount_from_snapshot(tmp_path: Path, backend: FakeBackend, clock: Clock,
                        freshness: Freshness) -> Namespace:
    db, inherited = snapshot.open_working_copy(tmp_path, SOURCE, "")
    return Namespace(backend, Runner(4, retries=0), "", clock=clock, freshness=freshness,
                     db=db, inherited=inherited, cache_dir=tmp_path)


async def walk_and_close(ns: Namespace) -> set[str]:
    await ns.start()
    found = await _walk(ns, ROOT_INODE, "")
    await ns.close()
    return found


async def _walk(ns: Namespace, inode: int, path: str) -> set[str]:
    found = set()
    for name, node in (await ns.children(inode)).items():
        found.add(path + name)
        if node.is_dir:
            found |= await _walk(ns, node.inode, path + name + "/")
    return found


OBJECTS = {"a/1": b"1", "a/2": b"22", "b/c/3": b"333", "top": b"t"}


@trio_test
async def test_a_snapshot_serves_the_next_mount_without_listing(tmp_path: Path) -> None:
    clock = Clock()
    fresh = Freshness(dir_cache_time_s=300)
    first = await walk_and_close(mount_from_snapshot(tmp_path, FakeBackend(OBJECTS), clock,
                                                     fresh))
    assert snapshot.snapshot_path(tmp_path, SOURCE, "").exists()
    backend = FakeBackend(OBJECTS)
    clock.now += 60
    second = mount_from_snapshot(tmp_path, backend, clock, fresh)
    assert second.inherited
    await second.start()
    assert await _walk(second, ROOT_INODE, "") == first
    assert backend.list_calls == 0
    node = await second.lookup(ROOT_INODE, "top")
    assert 0 < node.timeout_s <= 240  # long kernel timeouts: what is left of the TTL
    await second.close()


@trio_test
async def test_inodes_are_the_same_on_the_next_mount(tmp_path: Path) -> None:
    clock = Clock()
    fresh = Freshness(dir_cache_time_s=300)
    ns = mount_from_snapshot(tmp_path, FakeBackend(OBJECTS), clock, fresh)
    a = await ns.lookup(ROOT_INODE, "a")
    one = await ns.lookup(a.inode, "1")
    await ns.close()
    again = mount_from_snapshot(tmp_path, FakeBackend(OBJECTS), clock, fresh)
    assert (await again.lookup(ROOT_INODE, "a")).inode == a.inode
    assert (await again.lookup(a.inode, "1")).inode == one.inode
    await again.close()


@trio_test
async def test_an_expired_snapshot_answers_at_once_and_is_relisted_in_the_background(
        tmp_path: Path) -> None:
    clock = Clock()
    fresh = Freshness(dir_cache_time_s=300, snapshot_ttl_s=60)
    await walk_and_close(mount_from_snapshot(tmp_path, FakeBackend(OBJECTS), clock, fresh))
    backend = FakeBackend(OBJECTS | {"new": b"n"})
    clock.now += 61  # past --snapshot-ttl
    ns = mount_from_snapshot(tmp_path, backend, clock, fresh)
    await ns.start()
    async with serving(ns):
        assert "new" not in await ns.children(ROOT_INODE)  # the old listing, at once
        await eventually(lambda: ns.db.lookup(ROOT_INODE, "new") is not None,
                         "the background re-listing")
    await ns.close()


@trio_test
async def test_an_immutable_snapshot_is_never_relisted(tmp_path: Path) -> None:
    clock = Clock()
    fresh = Freshness(dir_cache_time_s=1, immutable=True)
    await walk_and_close(mount_from_snapshot(tmp_path, FakeBackend(OBJECTS), clock, fresh))
    backend = FakeBackend(OBJECTS | {"new": b"n"})
    clock.now += 10 ** 6
    ns = mount_from_snapshot(tmp_path, backend, clock, fresh)
    await ns.start()
    async with serving(ns):
        assert "new" not in await _walk(ns, ROOT_INODE, "")
        assert (await ns.lookup(ROOT_INODE, "top")).timeout_s == LONG_TIMEOUT_S
    await ns.close()
    assert backend.list_calls == 0


@trio_test
async def test_a_change_token_keeps_a_snapshot_fresh_until_it_changes(
        tmp_path: Path) -> None:
    clock = Clock()
    fresh = Freshness(dir_cache_time_s=300)
    await walk_and_close(mount_from_snapshot(
        tmp_path, FakeBackend(OBJECTS, version="count=4"), clock, fresh))
    clock.now += 10 ** 5  # far past the TTL: the token decides
    same = FakeBackend(OBJECTS, version="count=4")
    ns = mount_from_snapshot(tmp_path, same, clock, fresh)
    await ns.start()
    async with serving(ns):
        await eventually(lambda: not ns.validating, "the sampled pages")
        assert ns.vouched_at is not None
        await _walk(ns, ROOT_INODE, "")
    assert same.list_calls == 3  # first, last and a random page: no directory re-listed
    await ns.close()

    changed = FakeBackend(OBJECTS | {"a/new": b"n"}, version="count=5")
    ns = mount_from_snapshot(tmp_path, changed, clock, fresh)
    await ns.start()  # the HEAD differs: every inherited listing has expired
    async with serving(ns):
        a = await ns.lookup(ROOT_INODE, "a")
        await ns.children(a.inode)
        await eventually(lambda: ns.db.lookup(a.inode, "new") is not None, "re-listed")
    await ns.close()


@trio_test
async def test_a_sampled_page_catches_a_change_the_token_misses(tmp_path: Path) -> None:
    clock = Clock()
    fresh = Freshness(dir_cache_time_s=300)
    await walk_and_close(mount_from_snapshot(
        tmp_path, FakeBackend(OBJECTS, version="v"), clock, fresh))
    overwritten = FakeBackend(OBJECTS | {"top": b"T"}, version="v")  # same size, same count
    ns = mount_from_snapshot(tmp_path, overwritten, clock, fresh)
    await ns.start()
    async with serving(ns):
        await eventually(lambda: not ns.validating, "the sampled pages")
        assert ns.vouched_at is None and ns.stale_before > -1
        await ns.children(ROOT_INODE)
        await eventually(lambda: ns.db.lookup(ROOT_INODE, "top").etag
                         == overwritten.info("top").etag, "re-listed")
    await ns.close()


@pytest.mark.parametrize("damage", ["garbage", "foreign format", "other prefix"])
def test_a_corrupt_or_foreign_snapshot_is_ignored_and_rebuilt(
        tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    fresh = Freshness()
    run(walk_and_close, mount_from_snapshot(tmp_path, FakeBackend(OBJECTS), clock, fresh))
    path = snapshot.snapshot_path(tmp_path, SOURCE, "")
    if damage == "garbage":
        path.write_bytes(b"not a database at all" * 100)
    else:
        import sqlite3

        conn = sqlite3.connect(path)
        key, value = ("format", 99) if damage == "foreign format" else ("prefix", "x/")
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
        conn.commit()
        conn.close()
    backend = FakeBackend(OBJECTS)
    with caplog.at_level(logging.WARNING):
        ns = mount_from_snapshot(tmp_path, backend, clock, fresh)
    assert not ns.inherited
    assert sum("ignoring the listing snapshot" in r.getMessage() for r in caplog.records) == 1
    assert run(walk_and_close, ns) == {"a", "a/1", "a/2", "b", "b/c", "b/c/3", "top"}
    assert backend.list_calls > 0
    assert mount_from_snapshot(tmp_path, FakeBackend(OBJECTS), clock, fresh).inherited


def test_a_snapshot_built_from_a_listing_equals_the_walked_one(tmp_path: Path) -> None:
    clock = Clock()
    backend = FakeBackend(OBJECTS)
    pages = [backend.list_page("", None, None)]
    snapshot.build(tmp_path, SOURCE, "", pages, None, clock())
    ns = mount_from_snapshot(tmp_path, FakeBackend(OBJECTS), clock, Freshness())
    assert ns.inherited
    assert run(walk_and_close, ns) == {"a", "a/1", "a/2", "b", "b/c", "b/c/3", "top"}


def test_a_snapshot_is_served_where_it_lies_until_its_copy_and_a_newer_one_changes_neither(
        tmp_path: Path) -> None:
    clock = Clock()
    run(walk_and_close, mount_from_snapshot(tmp_path, FakeBackend(OBJECTS), clock,
                                            Freshness()))
    published = snapshot.snapshot_path(tmp_path, SOURCE, "")
    ns = mount_from_snapshot(tmp_path, FakeBackend(OBJECTS), clock, Freshness())
    work = ns.db.path
    assert ns.inherited and work.stat().st_size == 0  # nothing copied before serving
    # Another mount publishes a different snapshot meanwhile (a rename over this one).
    other = Path(snapshot.build(tmp_path, SOURCE, "", [FakeBackend({"x": b"x"}).list_page(
        "", None, None)], None, clock()))
    assert other == published
    assert sorted(run(ns.children, ROOT_INODE)) == ["a", "b", "top"]
    ns.db.materialize()  # what serve starts at once, in the writer's thread
    assert work.stat().st_size > 0
    assert run(walk_and_close, ns) == {"a", "a/1", "a/2", "b", "b/c", "b/c/3", "top"}


def test_dead_working_copies_are_removed(tmp_path: Path) -> None:
    directory = snapshot.listings_dir(tmp_path)
    dead = directory / f"{snapshot.stem(SOURCE, '')}.work-999999999-1.db"
    dead.write_bytes(b"")
    db, _ = snapshot.open_working_copy(tmp_path, SOURCE, "")
    assert not dead.exists()
    snapshot.discard(db)


@trio_test
async def test_a_snapshot_publish_cut_short_by_the_unmount_is_written_by_close(
        tmp_path: Path) -> None:
    ns = mount_from_snapshot(tmp_path, FakeBackend(OBJECTS), Clock(), Freshness(300))
    await ns.start()
    await _walk(ns, ROOT_INODE, "")
    published = snapshot.snapshot_path(tmp_path, SOURCE, "")
    published.unlink(missing_ok=True)
    ns._dirty = True  # listed since the last snapshot
    call_once = ns.writer.call_once
    with trio.CancelScope() as scope:

        async def cancelled_after_meta(fn: Callable[..., object], *args: object) -> object:
            result = await call_once(fn, *args)
            if fn == ns.db.set_meta:  # the unmount comes between its two steps
                scope.cancel()
                await trio.lowlevel.checkpoint()
            return result

        ns.writer.call_once = cancelled_after_meta  # type: ignore[method-assign]
        await ns._publish()
    ns.writer.call_once = call_once  # type: ignore[method-assign]
    assert not published.exists()
    await ns.close()
    assert published.exists()


@trio_test
async def test_rows_kept_in_memory_never_outlive_a_write() -> None:
    backend = FakeBackend({"a": b"1"})
    ns, clock = clocked(backend, ttl_s=1)
    async with serving(ns):
        a = await ns.lookup(ROOT_INODE, "a")
        assert ns.get(a.inode).obj.size == 1 and ns.current(a.inode).size == 1
        backend.objects["a"] = b"changed"
        clock.now += 5
        await ns.children(ROOT_INODE)
        await eventually(lambda: ns.db.lookup(ROOT_INODE, "a").size == 7, "the re-listing")
    assert ns.get(a.inode).gone  # the row kept at lookup went with the write
    assert ns.current(a.inode).size == 7


def test_a_row_read_while_a_write_commits_is_not_kept() -> None:
    ns = namespace(FakeBackend({"a": b"1"}))
    a = run(ns.lookup, ROOT_INODE, "a")
    db = ns.db
    reader = db._r
    with db.write():  # what the lookup kept goes
        pass
    queries = []

    class Reader:
        """The reader connection, counting queries; with `commit`, a write commits
        while the next query runs."""

        commit = True

        def execute(self, *args):
            queries.append(args[0])
            if self.commit:
                self.commit = False
                with db.write() as conn:
                    conn.execute("UPDATE entries SET size = 5 WHERE ino = ?", (a.inode,))
            return reader.execute(*args)

    db._r = Reader()
    try:
        assert db.row(a.inode).size == 5
        assert len(queries) == 1
        assert db.row(a.inode).size == 5
        assert len(queries) == 2  # the row read across the commit was not kept
        assert db.row(a.inode).size == 5
        assert len(queries) == 2  # the one read after it is
    finally:
        db._r = reader
