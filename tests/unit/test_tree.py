"""The namespace layer: listings become a stable tree of inodes, lazily and safely."""

import pytest
import trio

from objmount.backends.base import NotFound, Unreachable
from objmount.backends.runner import Runner
from objmount.tree import ROOT_INODE, Namespace
from tests.unit.fake_backend import FakeBackend


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def namespace(backend: FakeBackend, prefix: str = "", ttl_s: float = 300, clock=None) -> Namespace:
    return Namespace(backend, Runner(4, retries=0), prefix, ttl_s, clock or Clock())


def run(fn, *args):
    return trio.run(fn, *args)


def names(ns: Namespace, inode: int = ROOT_INODE) -> list[str]:
    return sorted(run(ns.children, inode))


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


def test_a_directory_is_listed_once_until_its_cache_time_passes() -> None:
    backend = FakeBackend({"a": b"1"})
    clock = Clock()
    ns = namespace(backend, ttl_s=10, clock=clock)
    names(ns)
    names(ns)
    assert backend.list_calls == 1
    backend.objects["b"] = b"2"
    clock.now = 11
    assert names(ns) == ["a", "b"]
    assert backend.list_calls == 2


def test_a_dir_cache_time_of_zero_lists_at_every_use() -> None:
    backend = FakeBackend({"a": b"1"})
    ns = namespace(backend, ttl_s=0)
    assert names(ns) == ["a"]
    assert names(ns) == ["a"]
    assert backend.list_calls == 2


def test_inodes_stay_the_same_across_relistings() -> None:
    backend = FakeBackend({"a": b"1", "d/x": b"2"})
    clock = Clock()
    ns = namespace(backend, ttl_s=1, clock=clock)
    before = {name: node.inode for name, node in run(ns.children, ROOT_INODE).items()}
    backend.objects["a"] = b"changed"
    clock.now = 5
    after = run(ns.children, ROOT_INODE)
    assert {name: node.inode for name, node in after.items()} == before
    assert after["a"].obj.size == len(b"changed")


def test_a_failed_relisting_keeps_the_previous_listing() -> None:
    backend = FakeBackend({"a": b"1"})
    clock = Clock()
    ns = namespace(backend, ttl_s=1, clock=clock)
    names(ns)
    backend.fail = Unreachable("store is down")
    clock.now = 5
    assert names(ns) == ["a"]


def test_a_failed_first_listing_is_an_error() -> None:
    backend = FakeBackend({"a": b"1"})
    backend.fail = Unreachable("store is down")
    with pytest.raises(Unreachable):
        names(namespace(backend))


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


def test_concurrent_lookups_share_one_listing() -> None:
    backend = FakeBackend({f"f{i}": b"" for i in range(10)})
    ns = namespace(backend)

    async def many_lookups() -> None:
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(ns.lookup, ROOT_INODE, f"f{i}")

    run(many_lookups)
    assert backend.list_calls == 1


def test_fast_list_builds_the_same_tree_as_lazy_listing() -> None:
    objects = {
        "top": b"1", "a/b/c": b"2", "a/d": b"3", "m/": b"", "m/n/": b"", "bad//x": b"",
        "clash": b"f", "clash/in": b"d",
    }

    def tree(ns: Namespace, inode: int = ROOT_INODE, path: str = "") -> set[str]:
        found = set()
        for name, node in run(ns.children, inode).items():
            found.add(path + name + ("/" if node.is_dir else ""))
            if node.is_dir:
                found |= tree(ns, node.inode, path + name + "/")
        return found

    lazy = tree(namespace(FakeBackend(objects)))
    backend = FakeBackend(objects)
    eager = namespace(backend)
    assert run(eager.load_all) == len(objects)
    calls = backend.list_calls
    assert tree(eager) == lazy
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
