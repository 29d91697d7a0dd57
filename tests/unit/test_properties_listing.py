"""Properties of paged listings under change: whatever the page sizes, and however
the store changes between the pages of a listing, listing never fails, never shows
a name twice in one directory, and a re-listing shows the store as it is; and
listings cut into parallel ranges show every key whichever way the store reads a
range's StartAfter.
"""

import threading

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objmount.backends.base import ListPage
from objmount.backends.runner import Runner
from objmount.namespace.tree import Namespace
from tests.unit.fake_backend import FakeBackend, TreeOrderBackend
from tests.unit.namespace_model import Clock, expected_tree, namespace, walk

# Few names at few depths: a change hits a name, or a directory, already listed.
KEY = st.lists(st.sampled_from(["a", "b", "c", "a0", "b.x", "é"]), min_size=1, max_size=3
               ).map("/".join)
CHANGE = st.tuples(st.sampled_from(["add", "remove"]), KEY)
FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Each property: a store, listed in pages of 1 to 4 entries, and up to 8 changes to it.
CHANGING = given(keys=st.lists(KEY, min_size=1, max_size=10, unique=True),
                 page_size=st.integers(1, 4), changes=st.lists(CHANGE, max_size=8))


class ChangingBackend(FakeBackend):
    """A FakeBackend that applies the next of `changes` after each listed page, as a
    store written to while it is listed would (pages are listed from several threads)."""

    def __init__(self, keys: list[str], page_size: int,
                 changes: list[tuple[str, str]]) -> None:
        super().__init__(dict.fromkeys(keys, b"x"), page_size=page_size)
        self.changes = list(changes)
        self.lock = threading.Lock()

    def list_page(self, prefix: str, delimiter: str | None, token: str | None,
                  **ranges: object) -> ListPage:
        with self.lock:
            page = super().list_page(prefix, delimiter, token, **ranges)
            if self.changes:
                self.apply(*self.changes.pop(0))
            return page

    def apply(self, change: str, key: str) -> None:
        if change == "add":
            self.objects[key] = b"new"
        else:
            self.objects.pop(key, None)

    def settle(self) -> None:
        """Apply every pending change: the store stops changing."""
        with self.lock:
            while self.changes:
                self.apply(*self.changes.pop(0))


async def relisted_until_current(ns: Namespace, backend: ChangingBackend,
                                 clock: Clock) -> set[str]:
    """Walk the namespace, its listings expired, until it shows the store (each walk
    re-lists what it finds expired in the background); give up after 20 s."""
    want = expected_tree(list(backend.objects))
    clock.now += 301
    seen: set[str] = set()
    with trio.move_on_after(20):
        while (seen := await walk(ns)) != want:
            await trio.sleep(0.01)  # polling: the re-listings run in worker threads
    return seen


@FAST
@CHANGING
def test_a_listing_changed_between_pages_never_fails_nor_repeats_a_name_and_converges(
        keys: list[str], page_size: int, changes: list[tuple[str, str]]) -> None:
    ns = namespace(backend := ChangingBackend(keys, page_size, changes), clock := Clock())

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(ns.serve)
            await walk(ns)  # no name twice in one directory, while the store changes
            backend.settle()
            assert await relisted_until_current(ns, backend, clock) == \
                expected_tree(list(backend.objects))
            nursery.cancel_scope.cancel()

    trio.run(main)


@FAST
@CHANGING
def test_a_recursive_listing_changed_between_pages_converges_when_listed_again(
        keys: list[str], page_size: int, changes: list[tuple[str, str]]) -> None:
    ns = namespace(backend := ChangingBackend(keys, page_size, changes))

    async def main() -> None:
        await ns.load_all()
        await walk(ns)
        backend.settle()
        await ns.load_all()
        assert await walk(ns) == expected_tree(list(backend.objects))

    trio.run(main)


@FAST
@given(keys=st.lists(KEY, min_size=1, max_size=30, unique=True), page_size=st.integers(1, 4),
       tree_order=st.booleans(), recursive=st.booleans())
def test_listings_cut_into_ranges_show_every_key_whichever_way_the_store_reads_start_after(
        keys: list[str], page_size: int, tree_order: bool, recursive: bool) -> None:
    store = (TreeOrderBackend if tree_order else FakeBackend)(dict.fromkeys(keys, b"x"),
                                                              page_size=page_size)
    # 16 threads: listings cut into up to 8 ranges at once.
    ns = Namespace(store, Runner(16, retries=0), "", 300, Clock())

    async def main() -> None:
        if recursive:
            await ns.load_all()
        assert await walk(ns) == expected_tree(keys)

    trio.run(main)

