"""The namespace: object listings turned into a tree of inodes, listed lazily.

A directory is listed (with the '/' delimiter, all pages) the first time it is
looked into, and again once its listing is older than the dir-cache time; or
the whole tree is loaded by one recursive listing (`load_all`, for --fast-list).
While `serve` runs, looking into a directory also lists its subdirectories in
the background (listahead.py, which documents the bounds), up to
LIST_AHEAD_MAX_PAGES pages each.

Invariants:
- the same key always has the same inode for the life of the namespace;
- a directory (common prefix or `name/` marker) wins over a file of the same
  name, and keys that cannot be POSIX names are skipped, each reported once;
- a failed re-listing keeps serving the previous listing: "could not check"
  never reads as "deleted";
- concurrent lookups into one directory share one listing (single flight),
  a listing ahead included.

This module never imports pyfuse3: it is the FUSE-free layer under fs.py.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from objmount import log as logs
from objmount.backends.base import Backend, BackendError, NotFound, ObjectInfo
from objmount.backends.runner import Runner
from objmount.listahead import ListAhead
from objmount.names import name_problem

log = logging.getLogger(__name__)

ROOT_INODE = 1  # FUSE's root inode number (pyfuse3.ROOT_INODE)
# A listing ahead gives up past this many pages (10,000 objects on S3, 100,000 on
# Swift), storing nothing: it costs at most that many requests and never holds a
# huge directory nobody looked into. Its demand listing lists it whole.
LIST_AHEAD_MAX_PAGES = 10
# Directories listed ahead and not yet looked into, at most: a descent of a wide
# tree (ImageFolder: one directory per class) keeps this many ready.
LIST_AHEAD_WINDOW = 32


@dataclass(slots=True, eq=False)
class Node:
    """A file (`obj` set) or a directory (`obj` None, `key` its prefix ending in '/')."""

    inode: int
    name: str
    parent: int
    key: str
    obj: ObjectInfo | None = None
    children: dict[str, "Node"] | None = None  # None until the directory is listed
    listed_at: float = float("-inf")
    listing: trio.Event | None = field(default=None, repr=False)
    ahead_for: float = float("-inf")  # listed_at of the listing whose subdirectories were queued

    @property
    def is_dir(self) -> bool:
        return self.obj is None


@dataclass(slots=True)
class _Listing:
    """One directory's content as read from the store, before it is applied."""

    files: dict[str, ObjectInfo] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)


class Namespace:
    """Inodes over one container prefix; every method that may list is async."""

    def __init__(
        self,
        backend: Backend,
        runner: Runner,
        prefix: str,
        dir_cache_time_s: float,
        clock: Callable[[], float] = trio.current_time,
        list_ahead_parallel: int | None = None,
    ) -> None:
        """`list_ahead_parallel` defaults to half the runner's threads (--max-parallel):
        demand listings and reads keep the rest (directory read-ahead takes the same)."""
        self.backend = backend
        self.runner = runner
        self.dir_cache_time_s = dir_cache_time_s
        self.clock = clock
        root = Node(inode=ROOT_INODE, name="", parent=ROOT_INODE, key=prefix)
        self._nodes: dict[int, Node] = {ROOT_INODE: root}
        self._inode_of_key: dict[str, int] = {prefix: ROOT_INODE}
        if list_ahead_parallel is None:
            list_ahead_parallel = max(1, int(runner.limiter.total_tokens) // 2)
        if dir_cache_time_s <= 0:  # a listing would be stale before its first use
            list_ahead_parallel = 0
        self.list_ahead = ListAhead(
            self._list_ahead, lambda inode: self._fresh(self._nodes[inode]),
            parallel=list_ahead_parallel, window=LIST_AHEAD_WINDOW,
        )

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """List ahead (in the background) until cancelled; without it, only on demand."""
        await self.list_ahead.serve(task_status=task_status)

    @property
    def root(self) -> Node:
        return self._nodes[ROOT_INODE]

    def __len__(self) -> int:
        return len(self._nodes)

    def get(self, inode: int) -> Node:
        """Return the node of `inode`; raises NotFound for an inode never handed out."""
        try:
            return self._nodes[inode]
        except KeyError:
            raise NotFound(f"inode {inode} is unknown") from None

    def files_in(self, prefix: str) -> list[ObjectInfo]:
        """Return the files of directory `prefix` as last listed (nothing if never listed)."""
        inode = self._inode_of_key.get(prefix)
        node = self._nodes.get(inode) if inode is not None else None
        if node is None or node.children is None:
            return []
        return [child.obj for child in node.children.values() if child.obj is not None]

    async def resolve(self, path: str) -> ObjectInfo | None:
        """Return the file at `path` (relative to the root, '/'-separated), or None if there
        is none. Lists the directories on the way that were never listed (or are stale).
        Raises BackendError if a listing fails with nothing to fall back on."""
        parent, _, name = path.rpartition("/")
        inode = self._inode_of_key.get(f"{self.root.key}{parent}/" if parent else self.root.key)
        try:
            if inode is None or not self._nodes[inode].is_dir:
                inode = ROOT_INODE
                for part in parent.split("/") if parent else ():
                    node = await self.lookup(inode, part)
                    if not node.is_dir:
                        return None
                    inode = node.inode
            return (await self.lookup(inode, name)).obj
        except (NotFound, NotADirectoryError):
            return None

    async def lookup(self, parent: int, name: str) -> Node:
        """Return the child `name` of directory `parent`; raises NotFound."""
        children = await self.children(parent)
        try:
            return children[name]
        except KeyError:
            raise NotFound(f"{self.get(parent).key}{name}: no such file or directory") from None

    async def children(self, inode: int) -> dict[str, Node]:
        """Return the directory's entries by name, listing it first if stale.

        A demand use: its subdirectories are then listed ahead. Blocks on the
        listing (its own, or one in flight); raises BackendError if there is no
        listing to serve.
        """
        node = self.get(inode)
        if not node.is_dir:
            raise NotADirectoryError(node.key)
        while not self._fresh(node):
            if node.listing is None:
                await self._relist(node)
                break
            listed_at = node.listed_at
            await node.listing.wait()
            if node.listed_at != listed_at:
                break
            # That listing failed with nothing to fall back on, or gave up: try ourselves.
        assert node.children is not None
        self.list_ahead.used(inode)
        if node.ahead_for != node.listed_at:  # once per listing: lookups come by the thousand
            node.ahead_for = node.listed_at
            subdirs = sorted((name, child.inode) for name, child in node.children.items()
                             if child.is_dir and not self._fresh(child))
            self.list_ahead.want([inode for _, inode in subdirs])  # in readdir's order
        return node.children

    async def load_all(self) -> int:
        """List the whole prefix recursively (one paged listing) and fill every directory.

        Returns the number of objects seen. Blocks on the backend via the runner.
        """
        prefix = self.root.key
        listings: dict[str, _Listing] = {prefix: _Listing()}
        count, token = 0, None
        while True:
            page = await self.runner.call(self.backend.list_page, prefix, None, token)
            for obj in page.objects:
                count += 1
                self._place(obj.key, obj, prefix, listings)
            for sub in page.prefixes:  # directories the store declares (Swift folder objects)
                self._place(sub, None, prefix, listings)
            if page.next_token is None:
                break
            token = page.next_token
        now = self.clock()
        for dir_key in sorted(listings, key=len):  # parents before children
            node = self._nodes[self._inode_of_key[dir_key]]  # made by its parent's _apply
            self._apply(node, listings[dir_key], now)
        return count

    def _fresh(self, node: Node) -> bool:
        return node.children is not None and self.clock() - node.listed_at < self.dir_cache_time_s

    async def _list_ahead(self, inode: int) -> bool:
        """List a directory in the background unless it is fresh or being listed.

        Returns False if nothing was stored (too many pages, or no need).
        """
        node = self._nodes[inode]
        if node.listing is not None or self._fresh(node):
            return False
        return await self._relist(node, LIST_AHEAD_MAX_PAGES)

    async def _relist(self, node: Node, max_pages: int | None = None) -> bool:
        """List `node` (single flight); False if it gave up past `max_pages` pages."""
        node.listing = trio.Event()
        try:
            listing = await self._list_dir(node.key, max_pages)
        except BackendError as exc:
            if node.children is None:
                raise
            logs.once(log, logging.WARNING, f"relist:{node.key}",
                      "cannot refresh listing of %r, serving the previous one: %s", node.key, exc)
            node.listed_at = self.clock()
        else:
            if listing is None:
                return False
            self._apply(node, listing, self.clock())
        finally:
            node.listing.set()
            node.listing = None
        return True

    async def _list_dir(self, dir_key: str, max_pages: int | None) -> _Listing | None:
        """Return a directory's listing; None past `max_pages` pages."""
        listing = _Listing()
        token = None
        pages = 0
        while max_pages is None or pages < max_pages:
            pages += 1
            page = await self.runner.call(self.backend.list_page, dir_key, "/", token)
            for obj in page.objects:
                name = obj.key[len(dir_key) :]
                # '' is the directory's own marker object
                if name and _usable(name, "object", obj.key):
                    listing.files[name] = obj
            for sub in page.prefixes:
                name = sub[len(dir_key) : -1]
                if _usable(name, "objects under", sub):
                    listing.dirs.add(name)
            if page.next_token is None:
                return listing
            token = page.next_token
        return None

    def _place(
        self, key: str, obj: ObjectInfo | None, prefix: str, listings: dict[str, _Listing]
    ) -> None:
        """Add one key of a recursive listing (an object, or a directory ending in '/')
        to the listings of its directories.

        Directories up to the first unusable segment are kept, as a delimiter
        listing would show them.
        """
        *dirs, leaf = key[len(prefix) :].split("/")  # leaf '' marks a directory marker
        dir_key = prefix
        for segment in dirs:
            if not _usable(segment, "object", key):
                return
            listings.setdefault(dir_key, _Listing()).dirs.add(segment)
            dir_key += segment + "/"
            listings.setdefault(dir_key, _Listing())
        if leaf and obj is not None and _usable(leaf, "object", key):
            listings[dir_key].files[leaf] = obj

    def _apply(self, node: Node, listing: _Listing, now: float) -> None:
        """Replace a directory's children with `listing`, keeping inodes of known keys."""
        children: dict[str, Node] = {}
        for name in listing.dirs:
            children[name] = self._child(node, name, f"{node.key}{name}/", None)
        for name, obj in listing.files.items():
            if name in children:
                logs.once(log, logging.WARNING, f"hidden:{obj.key}",
                          "object %r is hidden: a directory of the same name exists", obj.key)
                continue
            children[name] = self._child(node, name, obj.key, obj)
        node.children = children
        node.listed_at = now

    def _child(self, parent: Node, name: str, key: str, obj: ObjectInfo | None) -> Node:
        inode = self._inode_of_key.get(key)
        if inode is None:
            inode = len(self._inode_of_key) + ROOT_INODE
            self._inode_of_key[key] = inode
            self._nodes[inode] = Node(inode=inode, name=name, parent=parent.inode, key=key)
        child = self._nodes[inode]
        child.obj = obj
        return child


def _usable(name: str, what: str, key: str) -> bool:
    """Return True if `name` is a valid file name; else report `what key` once.

    Called for every listed object: the report is formatted only for a bad name.
    """
    problem = name_problem(name)
    if problem:
        logs.once(log, logging.WARNING, f"badname:{what} {key!r}", "skipping %s %r: %s",
                  what, key, problem)
        return False
    return True
