"""The namespace: object listings as a tree of inodes, in a database, listed lazily.

Entries live in a SQLite database (database.py), one per mount: a working copy
of the container prefix's snapshot when the cache directory has one
(snapshot.py), else a new one. In memory there are only the directories in use
(at most DIRS_IN_MEMORY, least recently used forgotten first): the metadata
memory of a mount does not grow with the objects it has seen. A directory is
listed (with the '/' delimiter, in parallel ranges when it is large:
listing.py) the first time it is looked into; the whole prefix can be loaded
with one recursive listing (`load_all`, --fast-list). While `serve` runs,
looking into a directory also lists its subdirectories in the background
(listahead.py, which documents the bounds).

Freshness (`_expires_at`): a listing made by this mount is fresh for
--dir-cache-time; one inherited from the snapshot for --snapshot-ttl, or, where
the store has a change token (Swift), for as long as the container HEAD and
three sampled pages, checked at mount and every 0.8 TTL, show no change
(revalidate.py); with --immutable, always. An expired listing keeps answering
at once (stale-while-revalidate) while one background re-listing runs; a
failed re-listing is logged once and tried again REFRESH_RETRY_S later; only a
never-listed directory makes its caller wait.

Invariants:
- the same name keeps its inode while its kind and version stay (database.py);
  an inode is never reused, and a gone entry still answers by inode;
- a directory (common prefix or `name/` marker) wins over a file of the same
  name, and keys that cannot be POSIX names are skipped, each reported once;
- "could not check" never reads as "deleted": a failed re-listing keeps the
  previous listing;
- concurrent uses of one directory share one listing (single flight), a
  listing ahead or in the background included;
- writes to the database run in one worker thread (`writer`), point queries on
  the trio thread.

This package never imports pyfuse3: it is the FUSE-free layer under fs.py.
"""

import logging
import math
import random
import shutil
import sqlite3
import tempfile
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from objmount import log as logs
from objmount.backends.base import Backend, BackendError, ListPage, NotFound, ObjectInfo
from objmount.backends.runner import Runner, local_runner
from objmount.namespace import revalidate, snapshot
from objmount.namespace.database import ROOT_INODE, Applied, Dirent, ListingDB, Row
from objmount.namespace.listahead import QUEUE_MAX, ListAhead
from objmount.namespace.listing import (
    TooManyPages,
    entries_of_page,
    entries_of_tree,
    list_ranges,
)
from objmount.namespace.names import name_problem

log = logging.getLogger(__name__)

__all__ = ["LIST_AHEAD_MAX_PAGES", "LIST_AHEAD_WINDOW", "ROOT_INODE", "Freshness",
           "Namespace", "Node"]

# A listing ahead gives up past this many pages (10,000 objects on S3, 100,000 on
# Swift), storing nothing: it costs at most that many requests and never holds a
# huge directory nobody looked into. Its demand listing lists it whole.
LIST_AHEAD_MAX_PAGES = 10
# Directories listed ahead and not yet looked into, at most: a descent of a wide
# tree (ImageFolder: one directory per class) keeps this many ready.
LIST_AHEAD_WINDOW = 32
# Directories kept in memory (a key and a few numbers each, ~300 B); beyond, the least
# recently used one not being listed is forgotten (reloaded from the database on use).
DIRS_IN_MEMORY = 65_536
# Files a directory read-ahead is offered at most (files_in): a hint, bounded so that a
# flat directory of a million files costs the trio thread milliseconds, not seconds.
FILES_OFFERED = 4096
# After a failed background re-listing, the next one waits this long (at most the
# dir-cache time): the store is not asked again at every use while it is down.
REFRESH_RETRY_S = 10.0
# Kernel entry and attribute timeouts of entries served from a fresh snapshot: the
# listing's remaining freshness, at most this (--immutable: this).
LONG_TIMEOUT_S = 86_400.0
# Swift: the snapshot is checked again at this fraction of its TTL, before it expires.
REVALIDATE_FRACTION = 0.8


@dataclass(frozen=True)
class Freshness:
    """How long listings are trusted (see the module docstring)."""

    dir_cache_time_s: float = 300.0
    snapshot_ttl_s: float | None = None  # None: the dir-cache time
    immutable: bool = False

    @property
    def snapshot_s(self) -> float:
        return self.dir_cache_time_s if self.snapshot_ttl_s is None else self.snapshot_ttl_s


@dataclass(frozen=True, slots=True)
class Node:
    """An entry: a file (`obj` set) or a directory; `gone` if it no longer has its name.

    `timeout_s`: how long the kernel may cache it at least (0: the mount's own
    --entry-timeout and --attr-timeout apply).
    """

    inode: int
    name: str
    parent: int
    obj: ObjectInfo | None
    gone: bool = False
    timeout_s: float = 0.0

    @property
    def is_dir(self) -> bool:
        return self.obj is None


@dataclass(slots=True, eq=False)
class _Dir:
    """A directory in use: its key (prefix ending in '/'), its listing's state."""

    inode: int
    parent: int
    key: str
    listed_at: float | None  # when last listed (clock seconds); None: never
    listing: trio.Event | None = None  # set when the listing in flight ends
    ahead_for: float | None = -math.inf  # listed_at whose subdirectories were queued
    retry_at: float = -math.inf  # no background re-listing before this
    queued: bool = False  # waiting for a background re-listing


class Namespace:
    """Inodes over one container prefix; every method that may list is async."""

    def __init__(
        self,
        backend: Backend,
        runner: Runner,
        prefix: str,
        dir_cache_time_s: float = 300.0,
        clock: Callable[[], float] | None = None,
        list_ahead_parallel: int | None = None,
        *,
        freshness: Freshness | None = None,
        db: ListingDB | None = None,
        inherited: bool = False,
        cache_dir: Path | None = None,
    ) -> None:
        """`db`: this mount's database (None: a new one in a private temporary
        directory); `inherited`: it is a copy of a snapshot; `cache_dir`: where to
        publish snapshots (None: never). `list_ahead_parallel` defaults to half the
        runner's threads (--max-parallel), which is also what one listing's ranges
        take at most: demand listings and reads keep the rest. `clock`: wall-clock
        seconds (listing times are kept across mounts)."""
        self.backend = backend
        self.runner = runner
        self.prefix = prefix
        self.freshness = freshness or Freshness(dir_cache_time_s=dir_cache_time_s)
        self.clock = clock or time.time
        if db is None:
            temporary = tempfile.mkdtemp(prefix="objmount-namespace-")
            weakref.finalize(self, shutil.rmtree, temporary, True)
            db = snapshot.open_private(Path(temporary), "", prefix)
        self.db = db
        self.cache_dir = cache_dir
        self.inherited = inherited
        # One thread writes the database: listings apply in order, readers never wait.
        self.writer = local_runner(1)
        self.on_gone: Callable[[int, str], None] = lambda parent, name: None
        self.started = self.clock()
        if list_ahead_parallel is None:
            list_ahead_parallel = max(1, int(runner.limiter.total_tokens) // 2)
        self.list_parallel = max(1, list_ahead_parallel)
        if self.freshness.dir_cache_time_s <= 0 and not self.freshness.immutable:
            list_ahead_parallel = 0  # a listing would be stale before its first use
        self.list_ahead = ListAhead(
            self._list_ahead, lambda inode: self._fresh(self._dir(inode)),
            parallel=list_ahead_parallel, window=LIST_AHEAD_WINDOW,
        )
        self._dirs: OrderedDict[int, _Dir] = OrderedDict()
        self._by_key: dict[str, int] = {}
        root = db.row(ROOT_INODE)
        self._remember(_Dir(ROOT_INODE, 0, prefix, root.listed_at if root else None))
        self._refresh: deque[_Dir] = deque()
        self._refresh_wanted = trio.Event()
        # Swift's change token: listings before `stale_before` are expired; those up to
        # `vouched_at` are as good as new; `vouch` = (version, since) for publishing.
        self.stale_before = -math.inf
        self.vouched_at: float | None = None
        self.vouch: tuple[str, float | None] | None = None
        self.validating = False
        self._dirty = False
        self._publish_wanted = trio.Event()
        self._publishing = trio.Lock()

    # Serving.

    async def start(self) -> None:
        """Before serving: ask the store's change token (one HEAD on Swift) before any
        listing, so that a snapshot published later can say what it saw. Compare it
        with the inherited snapshot's; the sampled pages follow in `serve`."""
        if self.freshness.immutable:
            return
        now = self.clock()
        try:
            version = await self.runner.call(self.backend.container_version)
        except BackendError as exc:
            log.warning("cannot check the listing snapshot (%s): its listings expire after "
                        "--snapshot-ttl", exc)
            return
        if version is None:
            return  # no change token (S3): time alone decides
        if not self.inherited:
            self.vouch = (version, None)
        elif version == self.db.meta("container_version"):
            self.vouch = (version, None)
            self.validating = True  # until the sampled pages agree (serve)
        else:
            self._mismatch(version, now, "the container changed (object count, bytes or "
                           "put timestamp)")

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """List ahead, re-list expired directories, revalidate and publish snapshots in
        the background until cancelled; without it, listings happen on demand only."""
        async with trio.open_nursery() as nursery:
            if self.inherited:
                nursery.start_soon(self._materialize)
            await nursery.start(self.list_ahead.serve)
            for _ in range(self.list_parallel):
                nursery.start_soon(self._refresher)
            if self.vouch is not None:
                nursery.start_soon(self._revalidator)
            if self.cache_dir is not None:
                nursery.start_soon(self._publisher)
            task_status.started()

    async def _materialize(self) -> None:
        """Copy the inherited snapshot into the working copy now, in the writer's thread,
        rather than before the first listing applied (the mount serves it meanwhile)."""
        try:
            await self.writer.call_once(self.db.materialize)
        except (OSError, sqlite3.Error) as exc:
            log.warning("cannot copy the listing snapshot (%s): serving it, listings fail "
                        "until it can be copied", exc)

    async def close(self) -> None:
        """Publish a snapshot if anything was listed since the last one, then remove the
        working copy. Blocks on SQLite and the disk (a few seconds for 1M entries)."""
        try:
            if self._dirty and self.cache_dir is not None:
                await self._publish()
        finally:
            await self.writer.call_once(snapshot.discard, self.db)

    # Queries.

    def __len__(self) -> int:
        return self.db.inodes()

    @property
    def root(self) -> Node:
        return self.get(ROOT_INODE)

    def get(self, inode: int) -> Node:
        """Return the entry of `inode` (gone or not); raises NotFound for an inode never
        handed out."""
        row = self.db.row(inode)
        if row is None:
            raise NotFound(f"inode {inode} is unknown")
        if row.is_dir:
            return Node(inode, row.name, row.parent, None, row.gone)
        parent = self._dir(row.parent)
        return self._node(row, parent)

    def current(self, inode: int) -> ObjectInfo | None:
        """The object an open of `inode` reads now: its own version while it has its name,
        else the file now under that name (None: no file has it)."""
        row = self.db.row(inode)
        if row is None or row.is_dir:
            return None
        if row.gone:
            row = self.db.lookup(row.parent, row.name)
            if row is None or row.is_dir:
                return None
        return self._node(row, self._dir(row.parent)).obj

    def is_listed(self, inode: int) -> bool:
        """Whether the directory has a listing to serve."""
        return self._dir(inode).listed_at is not None

    async def resolve(self, path: str) -> ObjectInfo | None:
        """Return the file at `path` (relative to the root, '/'-separated), or None if there
        is none. Lists the directories on the way that were never listed (or are stale).
        Raises BackendError if a listing fails with nothing to fall back on."""
        parent, _, name = path.rpartition("/")
        inode = self._by_key.get(f"{self.prefix}{parent}/" if parent else self.prefix)
        try:
            if inode is None or (row := self.db.row(inode)) is None or row.gone:
                inode = ROOT_INODE
                for part in parent.split("/") if parent else ():
                    node = await self.lookup(inode, part)
                    if not node.is_dir:
                        return None
                    inode = node.inode
            found = await self.lookup(inode, name)
        except (NotFound, NotADirectoryError):
            return None
        return None if found.gone else found.obj

    async def lookup(self, parent: int, name: str) -> Node:
        """Return the child `name` of directory `parent`; raises NotFound (at once for a
        name no entry can have, such as invalid UTF-8 from the kernel), NotADirectoryError."""
        directory = self._named_dir(parent, name)
        await self._use(directory)
        return self._child(directory, name)

    def lookup_now(self, parent: int, name: str) -> Node | None:
        """`lookup` where it needs no wait: None if the directory was never listed (a
        listing to wait for), else the node, or the same errors."""
        directory = self._named_dir(parent, name)
        if directory.listed_at is None:
            return None
        self._used(directory)
        return self._child(directory, name)

    def _named_dir(self, parent: int, name: str) -> _Dir:
        directory = self._dir(parent)
        if name_problem(name) is not None:
            raise NotFound(f"{directory.key}{name!r}: no such file or directory")
        return directory

    def _child(self, directory: _Dir, name: str) -> Node:
        row = self.db.lookup(directory.inode, name)
        if row is None:
            raise NotFound(f"{directory.key}{name}: no such file or directory")
        return self._node(row, directory)

    async def opendir(self, inode: int) -> float:
        """Make sure the directory has a listing (a demand use); return the kernel
        timeout its entries get (0: the mount's own). Raises BackendError if there is
        no listing to serve, NotADirectoryError."""
        directory = self._dir(inode)
        await self._use(directory)
        return self._timeout(directory)

    def dirents(self, inode: int, after: str | None, limit: int, offset: int = 0
                ) -> list[Dirent]:
        """Up to `limit` (name, inode, size or None, mtime_ns) of the directory by name,
        after the name `after` (None: from position `offset`)."""
        return self.db.dirents(inode, after, limit, offset)

    async def children(self, inode: int) -> dict[str, Node]:
        """Every entry of the directory by name (a demand use; for small directories and
        tests: fs.py pages with `page`)."""
        directory = self._dir(inode)
        await self._use(directory)
        found: dict[str, Node] = {}
        after = None
        while rows := self.db.page(inode, after, 1024):
            for row in rows:
                found[row.name] = self._node(row, directory)
            after = rows[-1].name
        return found

    def files_in(self, prefix: str) -> list[ObjectInfo]:
        """The files of directory `prefix` as last listed, at most FILES_OFFERED of them
        (nothing if it is not in use)."""
        inode = self._by_key.get(prefix)
        if inode is None:
            return []
        directory = self._dirs[inode]
        return [self._obj(row, directory) for row in self.db.files(inode, FILES_OFFERED)]

    # Listing.

    async def load_all(self) -> int:
        """List the whole prefix recursively (in parallel ranges) and apply it at once.

        Returns the number of objects seen. Blocks on the backend via the runner.
        """
        listing = self.db.new_listing()
        dirs = {self.prefix}
        count = 0

        async def on_page(page: ListPage) -> None:
            nonlocal count
            count += len(page.objects)
            await self.writer.call_once(self._stage_tree, listing, page, dirs)

        try:
            await list_ranges(self.backend, self.runner, self.prefix, None, on_page,
                              parallel=self.list_parallel)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.writer.call_once(self.db.discard, listing)
            raise
        now = self.clock()
        applied = await self.writer.call_once(self.db.apply_tree, listing, dirs, now)
        for directory in self._dirs.values():
            if directory.key in dirs:
                directory.listed_at = now
        self._applied(applied)
        self._publish_wanted.set()
        return count

    async def load_all_if_expired(self) -> None:
        """--fast-list over a snapshot: list the whole prefix again in the background once
        the root's listing has expired (a failure is logged once; the snapshot serves)."""
        if self._fresh(self._dirs[ROOT_INODE]):
            return
        try:
            count = await self.load_all()
        except BackendError as exc:
            logs.once(log, logging.WARNING, "fast-list", "cannot list the prefix again, "
                      "serving the snapshot: %s", exc)
            return
        log.info("fast-list: %d objects listed again", count)

    def _stage_tree(self, listing: int, page: ListPage, dirs: set[str]) -> None:
        self.db.stage(listing, entries_of_tree(self.prefix, page, dirs))

    def _stage_dir(self, listing: int, dir_key: str, page: ListPage) -> None:
        self.db.stage(listing, entries_of_page(dir_key, page))

    async def _use(self, directory: _Dir) -> None:
        """A demand use: wait for a listing only if there has never been one; queue a
        background re-listing of an expired one; list its subdirectories ahead."""
        while directory.listed_at is None:
            if directory.listing is None:
                await self._relist(directory)
                break
            await directory.listing.wait()
            # That listing failed with nothing to fall back on, or gave up: try ourselves.
        self._used(directory)

    def _used(self, directory: _Dir) -> None:
        """The rest of a demand use of a listed directory (no wait): queue a background
        re-listing of an expired one; list its subdirectories ahead."""
        if not self._fresh(directory):
            self._refresh_later(directory)
        self.list_ahead.used(directory.inode)
        if directory.ahead_for != directory.listed_at:  # once per listing
            directory.ahead_for = directory.listed_at
            wanted = []
            for row in self.db.subdirs(directory.inode, QUEUE_MAX):
                child = self._child_dir(directory, row)
                if not self._fresh(child):
                    wanted.append(child.inode)
            self.list_ahead.want(wanted)  # in readdir's order

    async def _list_ahead(self, inode: int) -> bool:
        """List a directory in the background unless it is fresh or being listed.

        Returns False if nothing was stored (too many pages, or no need).
        """
        directory = self._dir(inode)
        if directory.listing is not None or self._fresh(directory):
            return False
        return await self._relist(directory, LIST_AHEAD_MAX_PAGES)

    def _refresh_later(self, directory: _Dir) -> None:
        if directory.listing is None and not directory.queued \
                and self.clock() >= directory.retry_at:
            directory.queued = True
            self._refresh.append(directory)
            self._refresh_wanted.set()

    async def _refresher(self) -> None:
        """Re-list expired directories queued by their use, one at a time."""
        while True:
            if not self._refresh:
                self._refresh_wanted = trio.Event()
                await self._refresh_wanted.wait()
                continue
            directory = self._refresh.popleft()
            directory.queued = False
            if directory.listing is None and not self._fresh(directory):
                try:
                    await self._relist(directory)
                except Exception as exc:  # a bug: logged, but never ends the mount
                    logs.once(log, logging.ERROR, f"refresh:{type(exc).__name__}",
                              "re-listing failed: %r", exc, exc_info=True)

    async def _relist(self, directory: _Dir, max_pages: int | None = None) -> bool:
        """List `directory` (single flight); False if it gave up past `max_pages` pages.

        Raises BackendError only if it has no listing to fall back on.
        """
        directory.listing = trio.Event()
        listing = self.db.new_listing()
        try:
            await list_ranges(
                self.backend, self.runner, directory.key, "/",
                lambda page: self.writer.call_once(self._stage_dir, listing, directory.key,
                                                   page),
                parallel=self.list_parallel, max_pages=max_pages)
            now = self.clock()
            applied = await self.writer.call_once(self.db.apply_dir, listing, directory.inode,
                                                  directory.key, now)
        except (BackendError, TooManyPages) as exc:
            await self.writer.call_once(self.db.discard, listing)
            if isinstance(exc, TooManyPages):
                return False
            if directory.listed_at is None:
                raise
            retry_s = max(1.0, min(REFRESH_RETRY_S, self.freshness.dir_cache_time_s))
            directory.retry_at = self.clock() + retry_s
            logs.once(log, logging.WARNING, f"relist:{directory.key}",
                      "cannot refresh the listing of %r, serving the previous one (retried "
                      "later): %s", directory.key, exc)
            return True
        finally:
            directory.listing.set()
            directory.listing = None
        directory.listed_at = now
        directory.retry_at = -math.inf
        self._applied(applied)
        return True

    def _applied(self, applied: Applied) -> None:
        """After a listing was applied: tell the kernel which names went, note the change,
        publish once the namespace is complete."""
        for parent, name in applied.gone:
            self.on_gone(parent, name)
        for inode in applied.more:
            directory = self._dirs.get(inode)
            if directory is not None and inode != ROOT_INODE:
                self.on_gone(directory.parent, directory.key[:-1].rpartition("/")[2])
        self._dirty = True
        if self.cache_dir is not None and not self.db.unlisted():
            self._publish_wanted.set()

    # Freshness.

    def _expires_at(self, directory: _Dir) -> float:
        listed_at = directory.listed_at
        if listed_at is None:
            return -math.inf
        if self.freshness.immutable:
            return math.inf
        if listed_at <= self.stale_before:
            return -math.inf
        if self.vouched_at is not None and listed_at <= self.vouched_at:
            return self.vouched_at + self.freshness.dir_cache_time_s
        if listed_at < self.started:  # inherited from the snapshot
            return math.inf if self.validating else listed_at + self.freshness.snapshot_s
        return listed_at + self.freshness.dir_cache_time_s

    def _fresh(self, directory: _Dir) -> bool:
        return self.clock() < self._expires_at(directory)

    def _timeout(self, directory: _Dir) -> float:
        """The kernel timeout of a directory's entries: long for a fresh snapshot's."""
        if directory.listed_at is None or not (
                self.freshness.immutable or directory.listed_at < self.started
                or self.vouched_at is not None):
            return 0.0
        return max(0.0, min(LONG_TIMEOUT_S, self._expires_at(directory) - self.clock()))

    def _mismatch(self, version: str, when: float, why: str) -> None:
        """The store changed: every listing made before `when` expires (one log line)."""
        if self.inherited or self.vouch is not None:
            log.info("the listing snapshot is out of date (%s): re-listing directories as "
                     "they are used", why)
        self.stale_before = when
        self.vouched_at = None
        self.vouch = (version, when)

    async def _revalidator(self) -> None:
        """Swift: check the sampled pages of the first validation, then the container
        HEAD and the pages every 0.8 TTL."""
        period = max(1.0, REVALIDATE_FRACTION * min(self.freshness.snapshot_s,
                                                    self.freshness.dir_cache_time_s))
        rng = random.Random()
        while True:
            if not self.validating:  # the first check of an inherited snapshot: at once
                await trio.sleep(period)
            now = self.clock()
            try:
                version = await self.runner.call(self.backend.container_version)
                if self.vouch is not None and version != self.vouch[0]:
                    self._mismatch(version or "", now, "the container changed")
                else:
                    after = revalidate.random_file_key(self.db, self.prefix, rng)
                    pages = await revalidate.sample_pages(self.backend, self.runner,
                                                          self.prefix, after)
                    differs = await revalidate.sample_differs(self.db, self.prefix, pages)
                    if differs is not None:
                        self._mismatch(version or "", now, differs)
                    elif self.vouch is not None and self.vouch[1] is None:
                        self.vouched_at = now
            except BackendError as exc:
                logs.once(log, logging.WARNING, "revalidate",
                          "cannot check whether the listings are still current (%s): "
                          "serving them, checked again later", exc)
            finally:
                self.validating = False

    # Snapshots.

    async def _publisher(self) -> None:
        while True:
            await self._publish_wanted.wait()
            self._publish_wanted = trio.Event()
            await self._publish()

    async def _publish(self) -> None:
        """Publish the database as the prefix's snapshot (in the writer thread)."""
        assert self.cache_dir is not None
        async with self._publishing:
            self._dirty = False
            version = None
            if self.vouch is not None:
                value, since = self.vouch
                version = value if since is None or not self.db.listed_before(since) else None
            try:
                await self.writer.call_once(self.db.set_meta, "container_version", version)
                path = await self.writer.call_once(snapshot.publish, self.db, self.cache_dir)
            except Exception as exc:  # OSError, sqlite3.Error: never fatal to the mount
                self._dirty = True
                logs.once(log, logging.WARNING, f"publish:{type(exc).__name__}",
                          "cannot write the listing snapshot (%s): the next mount lists "
                          "again", exc)
                return
            except BaseException:  # cancelled (the mount ends): close() publishes instead
                self._dirty = True
                raise
            log.info("listing snapshot written: %s", path)

    # Nodes and directories in memory.

    def _obj(self, row: Row, directory: _Dir) -> ObjectInfo:
        assert row.size is not None
        return ObjectInfo(directory.key + row.name, row.size, row.etag, row.mtime_ns)

    def _node(self, row: Row, directory: _Dir) -> Node:
        obj = None if row.is_dir else self._obj(row, directory)
        return Node(row.ino, row.name, row.parent, obj, row.gone, self._timeout(directory))

    def _dir(self, inode: int) -> _Dir:
        """The directory of `inode`, from memory or the database; raises NotFound,
        NotADirectoryError."""
        directory = self._dirs.get(inode)
        if directory is not None:
            self._dirs.move_to_end(inode)
            return directory
        row = self.db.row(inode)
        if row is None:
            raise NotFound(f"inode {inode} is unknown")
        if not row.is_dir:
            raise NotADirectoryError(row.name)
        return self._child_dir(self._dir(row.parent), row)

    def _child_dir(self, parent: _Dir, row: Row) -> _Dir:
        directory = self._dirs.get(row.ino)
        if directory is None:
            directory = _Dir(row.ino, parent.inode, f"{parent.key}{row.name}/", row.listed_at)
            self._remember(directory)
        return directory

    def _remember(self, directory: _Dir) -> None:
        self._dirs[directory.inode] = directory
        self._by_key[directory.key] = directory.inode
        if len(self._dirs) <= DIRS_IN_MEMORY:
            return
        for inode in list(self._dirs)[: len(self._dirs) - DIRS_IN_MEMORY + 16]:
            old = self._dirs[inode]
            if inode != ROOT_INODE and old.listing is None and not old.queued:
                del self._dirs[inode]
                if self._by_key.get(old.key) == inode:
                    del self._by_key[old.key]
