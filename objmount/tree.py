"""The namespace: object listings turned into a tree of inodes, listed lazily.

A directory is listed (with the '/' delimiter, all pages) the first time it is
looked into, and again once its listing is older than the dir-cache time; or
the whole tree is loaded by one recursive listing (`load_all`, for --fast-list).

Invariants:
- the same key always has the same inode for the life of the namespace;
- a directory (common prefix or `name/` marker) wins over a file of the same
  name, and keys that cannot be POSIX names are skipped, each reported once;
- a failed re-listing keeps serving the previous listing: "could not check"
  never reads as "deleted";
- concurrent lookups into one directory share one listing (single flight).

This module never imports pyfuse3: it is the FUSE-free layer under fs.py.
"""

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

from objmount import log as logs
from objmount.backends.base import Backend, BackendError, NotFound, ObjectInfo
from objmount.backends.runner import Runner
from objmount.names import name_problem

log = logging.getLogger(__name__)

ROOT_INODE = 1  # FUSE's root inode number (pyfuse3.ROOT_INODE)


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
    ) -> None:
        self.backend = backend
        self.runner = runner
        self.dir_cache_time_s = dir_cache_time_s
        self.clock = clock
        root = Node(inode=ROOT_INODE, name="", parent=ROOT_INODE, key=prefix)
        self._nodes: dict[int, Node] = {ROOT_INODE: root}
        self._inode_of_key: dict[str, int] = {prefix: ROOT_INODE}

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

    async def lookup(self, parent: int, name: str) -> Node:
        """Return the child `name` of directory `parent`; raises NotFound."""
        children = await self.children(parent)
        try:
            return children[name]
        except KeyError:
            raise NotFound(f"{self.get(parent).key}{name}: no such file or directory") from None

    async def children(self, inode: int) -> dict[str, Node]:
        """Return the directory's entries by name, listing it first if stale."""
        node = self.get(inode)
        if not node.is_dir:
            raise NotADirectoryError(node.key)
        while not self._fresh(node):
            if node.listing is not None:
                await node.listing.wait()
                if node.children is not None:
                    break
                continue  # that listing failed with nothing to fall back on: try ourselves
            await self._relist(node)
        assert node.children is not None
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

    async def _relist(self, node: Node) -> None:
        node.listing = trio.Event()
        try:
            listing = await self._list_dir(node.key)
        except BackendError as exc:
            if node.children is None:
                raise
            logs.once(log, logging.WARNING, f"relist:{node.key}",
                      "cannot refresh listing of %r, serving the previous one: %s", node.key, exc)
            node.listed_at = self.clock()
        else:
            self._apply(node, listing, self.clock())
        finally:
            node.listing.set()
            node.listing = None

    async def _list_dir(self, dir_key: str) -> _Listing:
        listing = _Listing()
        token = None
        while True:
            page = await self.runner.call(self.backend.list_page, dir_key, "/", token)
            for obj in page.objects:
                name = obj.key[len(dir_key) :]
                # '' is the directory's own marker object
                if name and _usable(f"object {obj.key!r}", [name]):
                    listing.files[name] = obj
            for sub in page.prefixes:
                name = sub[len(dir_key) : -1]
                if _usable(f"objects under {sub!r}", [name]):
                    listing.dirs.add(name)
            if page.next_token is None:
                return listing
            token = page.next_token

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
            if not _usable(f"object {key!r}", [segment]):
                return
            listings.setdefault(dir_key, _Listing()).dirs.add(segment)
            dir_key += segment + "/"
            listings.setdefault(dir_key, _Listing())
        if leaf and obj is not None and _usable(f"object {key!r}", [leaf]):
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


def _usable(what: str, segments: Iterable[str]) -> bool:
    """Return True if every segment is a valid name; report `what` once otherwise."""
    for segment in segments:
        problem = name_problem(segment)
        if problem:
            logs.once(log, logging.WARNING, f"badname:{what}", "skipping %s: %s", what, problem)
            return False
    return True
