"""Properties of object names in the namespace: whatever keys a store holds, the
namespace raises only NotFound or NotADirectoryError, every key that can be a file
is one (by lookup, by path and in its directory's listing), and no entry is a name
a POSIX program could trip on ('', '.', '..', '/', NUL, over 255 bytes, not UTF-8).
"""

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objmount.backends.base import NotFound
from objmount.namespace.tree import ROOT_INODE, Namespace
from tests.unit.fake_backend import FakeBackend
from tests.unit.namespace_model import expected_tree, namespace, walk

# Segments at and past the limits (namespace_model says which are names): empty, dot
# names, NUL, invalid UTF-8 (lone surrogates), 255 bytes (a name) and 256 (none).
HOSTILE = ["", ".", "..", "\0", "a\0b", "\udcff", "\ud800", "x" * 255, "x" * 256,
           "é" * 127 + "z", "é" * 128, "🙂" * 63 + "abc", "🙂" * 64]
PLAIN = st.text(st.characters(blacklist_characters="/", blacklist_categories=("Cs",)),
                min_size=1, max_size=6)
SEGMENT = st.one_of(st.sampled_from(["a", "b", "é", "日本", *HOSTILE]), PLAIN)
KEY = st.builds(lambda segments, slash: "/".join(segments) + slash,
                st.lists(SEGMENT, min_size=1, max_size=4), st.sampled_from(["", "", "/"]))
KEYS = st.lists(KEY.filter(bool), min_size=1, max_size=12, unique=True)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Each property: a store of such keys, listed in pages of 1 to 5 entries.
STORES = given(keys=KEYS, page_size=st.integers(1, 5))


async def check_lookups(ns: Namespace, keys: list[str], tree: set[str]) -> None:
    """Every file resolves to its key; hostile lookups answer NotFound; a file is
    no directory."""
    for path in tree:
        if path.endswith("/"):
            continue
        obj = await ns.resolve(path)
        assert obj is not None and obj.key == path
        parent = ROOT_INODE
        *dirs, leaf = path.split("/")
        for segment in dirs:
            parent = (await ns.lookup(parent, segment)).inode
        node = await ns.lookup(parent, leaf)
        assert node.obj is not None and node.obj.key == path
        try:
            await ns.lookup(node.inode, "x")
            raise AssertionError(f"a file {path!r} answered a lookup as a directory")
        except NotADirectoryError:
            pass
    for name in ["", ".", "..", "\0", "\udcff", "x" * 256]:
        try:
            await ns.lookup(ROOT_INODE, name)
            raise AssertionError(f"{name!r} was found")
        except NotFound:
            pass
    for key in keys:
        if key not in tree:
            assert await ns.resolve(key) is None


@FAST
@STORES
def test_every_key_that_can_be_a_file_is_one_and_no_hostile_name_is_an_entry(
        keys: list[str], page_size: int) -> None:
    ns = namespace(FakeBackend(dict.fromkeys(keys, b"x"), page_size=page_size))

    async def main() -> None:
        tree = await walk(ns)
        assert tree == expected_tree(keys)
        await check_lookups(ns, keys, tree)

    trio.run(main)


@FAST
@STORES
def test_a_recursive_listing_shows_the_same_names_as_listing_each_directory(
        keys: list[str], page_size: int) -> None:
    ns = namespace(backend := FakeBackend(dict.fromkeys(keys, b"x"), page_size=page_size))

    async def main() -> None:
        assert await ns.load_all() == len(keys)
        calls = backend.list_calls
        tree = await walk(ns)
        assert tree == expected_tree(keys)
        assert backend.list_calls == calls  # all of it came from the recursive listing

    trio.run(main)
