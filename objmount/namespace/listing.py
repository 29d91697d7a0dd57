"""Listings from the store: one directory, or a whole prefix, split into ranges listed at once.

A listing asks for its first page. If the store has more, the rest of the key
space is cut at guessed keys (`split_points`) into ranges (after, upto], each
listed page by page at the same time; a range whose own first page is full is
cut again while there is room for more requests in flight. So a flat prefix of
a million keys lists in parallel, sized by what its pages show, not by a
directory count (a range cut again when a page of it comes back full while
requests are free). Every page goes to `on_page` as it arrives, in any order:
nothing of a listing is held here, however large.

Invariants:
- exact: the ranges partition the keys after the first page, (last, s1],
  (s1, s2], ..., (sn, end], so every key is listed once; a prefix (a
  subdirectory) can be reported by two adjacent ranges: the receiver dedupes;
- a cut never names a directory (CUT_MARK): a store whose StartAfter skips the
  subtree of a directory it names (SeaweedFS) lists the same keys as S3;
- at most `parallel` requests of one listing in flight (they also share the
  runner's limiter with every other request of the mount);
- at most `max_pages` pages (None: no bound): past it the listing raises
  TooManyPages, its other requests cancelled.

Which keys become names is decided here too (`entries_of_page`, `entries_of_tree`):
a directory wins over a file of the same name (the receiver knows both), a key
segment that cannot be a file name skips its key, reported once.

FUSE-free; the store is reached only through the runner.
"""

import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from objmount import log as logs
from objmount.backends.base import Backend, ListPage, ObjectInfo
from objmount.backends.runner import Runner
from objmount.namespace.names import name_problem

log = logging.getLogger(__name__)

# Ranges a full page is cut into at most: enough to fill --max-parallel's share of
# requests at once, few enough that guessed ranges that hold nothing cost little.
SPLIT_WAYS = 16

# Ends every guessed cut, so that a range's StartAfter never names a directory.
# SeaweedFS, whose listings walk a tree of directories, skips the whole subtree of
# a StartAfter that names one ("a/b" skips every "a/b/..." key) where S3 compares
# keys as strings (and lists them). "a/b" + CUT_MARK sorts after every "a/b/..."
# key, so both kinds of store leave them to the range before the cut.
CUT_MARK = "\ufffd"

FILE, DIRECTORY = 0, 1


class TooManyPages(Exception):
    """A listing passed its `max_pages`: nothing it listed is complete."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One name of a listing: in directory `dir` (a key prefix ending in '/', or the
    listed prefix itself), a file (its object) or a directory (obj None)."""

    dir: str
    name: str
    obj: ObjectInfo | None

    @property
    def kind(self) -> int:
        return FILE if self.obj is not None else DIRECTORY


def usable(name: str, what: str, key: str) -> bool:
    """Return True if `name` can be a file name; else report `what key` once.

    Called for every listed object: the report is formatted only for a bad name.
    """
    problem = name_problem(name)
    if problem:
        logs.once(log, logging.WARNING, f"badname:{what} {key!r}", "skipping %s %r: %s",
                  what, key, problem)
        return False
    return True


def entries_of_page(dir_key: str, page: ListPage) -> list[Entry]:
    """The names of a delimiter listing page of directory `dir_key`."""
    entries = []
    for obj in page.objects:
        name = obj.key[len(dir_key):]
        if name and usable(name, "object", obj.key):  # '' is the directory's own marker
            entries.append(Entry(dir_key, name, obj))
    for sub in page.prefixes:
        name = sub[len(dir_key): -1]
        if usable(name, "objects under", sub):
            entries.append(Entry(dir_key, name, None))
    return entries


def entries_of_tree(prefix: str, page: ListPage, dirs: set[str]) -> list[Entry]:
    """The names of a recursive listing page under `prefix`: each key placed in its
    directory, the directories on its way too (each once: `dirs` holds the directories
    seen so far, the listed prefix among them, and gains those of this page; a
    directory marker makes one, even empty).

    Directories up to the first unusable segment of a key are kept, as a delimiter
    listing would show them.
    """
    entries = []
    start = len(prefix)
    for key, obj in [(o.key, o) for o in page.objects] + [(p, None) for p in page.prefixes]:
        cut = key.rfind("/") + 1
        dir_key, leaf = key[:cut], key[cut:]  # leaf '' marks a directory
        if cut <= start:
            dir_key, leaf = prefix, key[start:]
        elif dir_key not in dirs and not _place_dirs(prefix, key, dirs, entries):
            continue
        if leaf and obj is not None and usable(leaf, "object", key):
            entries.append(Entry(dir_key, leaf, obj))
    return entries


def _place_dirs(prefix: str, key: str, dirs: set[str], entries: list[Entry]) -> bool:
    """Add the directories on the way to `key` not yet in `dirs`; False if a segment on
    the way is unusable (the directories above it are kept)."""
    dir_key = prefix
    for segment in key[len(prefix): key.rfind("/")].split("/"):
        if not usable(segment, "object", key):
            return False
        child = f"{dir_key}{segment}/"
        if child not in dirs:
            entries.append(Entry(dir_key, segment, None))
            dirs.add(child)
        dir_key = child
    return True


def split_points(floor: str, keys: list[str], upto: str | None, ways: int) -> list[str]:
    """Return up to `ways - 1` keys that cut (keys[-1], upto] into ranges, in order.

    Guessed from one page's sorted `keys`, all starting with `floor` (the listed
    prefix): the characters seen in them form the alphabet, and the cuts go at
    the positions above where the page's keys vary, shallowest first (the
    largest ranges), each to a larger character of that alphabet, then CUT_MARK.
    For names f00000..f00999 that is f01..f09, then f1..f9 (each + CUT_MARK):
    ranges of about 1,000 and 10,000 keys, each cut again once its own first
    page is full.
    """
    first, last = keys[0], keys[-1]
    alphabet = sorted({c for key in keys for c in key[len(floor):]})
    varies = len(floor)
    while varies < min(len(first), len(last)) and first[varies] == last[varies]:
        varies += 1
    points: list[str] = []
    for position in range(len(floor), min(varies + 1, len(last))):
        for char in alphabet:
            if char > last[position]:
                point = last[:position] + char + CUT_MARK
                if upto is None or point < upto:
                    points.append(point)
        if len(points) >= ways - 1:
            break
    return sorted(set(points[: ways - 1]))


@dataclass(slots=True)
class _Range:
    after: str | None
    upto: str | None
    token: str | None = None


async def list_ranges(
    backend: Backend,
    runner: Runner,
    prefix: str,
    delimiter: str | None,
    on_page: Callable[[ListPage], Awaitable[None]],
    *,
    parallel: int,
    max_pages: int | None = None,
) -> int:
    """List every key under `prefix` (with `delimiter`), in ranges split as the pages
    show the listing is large; call `on_page` with each page. Return the pages read.

    Blocks on the store via the runner; raises BackendError (its other requests
    cancelled), TooManyPages past `max_pages`.
    """
    pages = 0
    limiter = trio.CapacityLimiter(max(1, parallel))
    active = 0

    async def run(span: _Range, nursery: trio.Nursery) -> None:
        nonlocal pages, active
        try:
            while True:
                if max_pages is not None and pages >= max_pages:
                    raise TooManyPages(prefix)
                pages += 1
                async with limiter:
                    page = await runner.call(
                        backend.list_page, prefix, delimiter, span.token,
                        after=None if span.token else span.after, upto=span.upto)
                await on_page(page)
                if page.next_token is None:
                    return
                span.token = page.next_token
                keys = sorted([o.key for o in page.objects] + page.prefixes)
                room = parallel - active
                if room > 0 and keys:
                    points = split_points(prefix, keys, span.upto, min(SPLIT_WAYS, room + 1))
                    if points:
                        # This range keeps (its last key, points[0]]; the rest go to new ones.
                        bounds = [*points, span.upto]
                        span.upto = points[0]
                        for after, upto in itertools.pairwise(bounds):
                            active += 1
                            nursery.start_soon(run, _Range(after, upto), nursery)
        finally:
            active -= 1

    try:
        async with trio.open_nursery() as nursery:
            active += 1
            nursery.start_soon(run, _Range(None, None), nursery)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    return pages


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The first error of a nursery's group that is not a cancellation (the one that
    cancelled the others), or the group itself if all are."""
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending[:0] = exc.exceptions
        elif not isinstance(exc, trio.Cancelled):
            return exc
    return group
