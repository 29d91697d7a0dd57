"""pyfuse3 operations of a read-only mount: inode and handle glue, errno mapping.

Only this module and mount.py import pyfuse3. Names come from namespace.tree.Namespace,
bytes from a readpath_base.ReadPath. Every exception becomes an errno in `_fuse_error`:
NotFound -> ENOENT (but EIO for a read: an object deleted under an open handle),
anything that would write -> EROFS, all else -> EIO (logged once), because any
other exception escaping a handler would end the mount.

Handlers that may wait on the store (opendir, read, and a lookup in a directory
never listed) run through inflight.InFlight (for a read, as the pid that opened the
handle: pyfuse3 gives read no context): a deadline per request (EIO once it
passes, whatever the retries), and EINTR at once when the caller has a signal
pending (pyfuse3 never delivers FUSE_INTERRUPT: see inflight.py). open never
waits: the GET of a small file it starts runs in the background, bounded by the
runner's own deadline.

Inodes are rows of the namespace's database, never reused and answering by
number for the life of the mount, so lookup counts need no bookkeeping (forget
is the base class's no-op: nothing per inode is held in memory). readdir pages
the directory by name (keyset): an offset is a position in the handle's order,
mapped to the name it ended at, so a listing that changes meanwhile is
continued after that name, never repeated or skipped around it. Entries served
from a fresh snapshot get the kernel timeouts the namespace gives them (long),
and a re-listing that finds a name gone or changed has the kernel forget that
entry.

The kernel's page cache is per inode, while handles are pinned to a version:
pagecache.PageCacheVersions decides keep_cache and direct_io per open, and
which releases must drop the inode's pages. Those invalidations run in a worker
thread (`serve`), never in a handler on the trio thread: the kernel locks each
page it drops, and a page whose READ is in flight stays locked until this loop
answers it, so an invalidation on the loop would wait for itself (seen on
Linux 6.18: the mount hung in D state).
"""

import errno
import functools
import json
import logging
import math
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Concatenate, ParamSpec, TypeVar

import pyfuse3
import trio

from objmount import log as logs
from objmount.backends.base import BackendError, NotFound
from objmount.backends.runner import local_runner
from objmount.inflight import InFlight, Interrupted
from objmount.namespace.database import Dirent
from objmount.namespace.tree import ROOT_INODE, Namespace, Node
from objmount.pagecache import OpenMode, PageCacheVersions
from objmount.readpath_base import ReadBytes, ReadHandle, ReadPath

log = logging.getLogger(__name__)

assert ROOT_INODE == pyfuse3.ROOT_INODE

ETAG_XATTR = b"user.objmount.etag"
STATS_XATTR = b"user.objmount.stats"
# At the root: where this mount caches, as JSON (for `objmount warm PATH`).
MOUNT_XATTR = b"user.objmount.mount"
# The only xattr namespace served. For the others (security.selinux and
# system.posix_acl_access, which `ls -l` asks of every entry) getxattr answers
# ENOTSUP, not ENODATA: ls and libselinux then stop asking for the whole mount
# (coreutils caches "unsupported" per st_dev), which saves two FUSE requests per
# entry. Never ENOSYS: the kernel would then refuse every getxattr, ours too.
SERVED_XATTR_PREFIX = b"user."
# Programs size their buffers from st_blksize (Python's io, cp): invite large reads.
BLKSIZE = 1 << 20
# Entries read from the database per readdir query: more than a kernel buffer holds
# (~194 entries on kernels >= 6.16), so one query usually answers one request.
READDIR_ROWS = 256
# A read that failed (EIO) fails the same way, at once, on its handle for this long:
# when read-ahead fails, the kernel reads the same pages again at once, and that
# second request would otherwise wait out the whole deadline (retries) a second time.
FAILED_READ_S = 1.0

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class AttrSettings:
    """What getattr reports beyond the object itself, and for how long the kernel caches it."""

    uid: int
    gid: int
    umask: int
    attr_timeout_s: float
    entry_timeout_s: float
    mount_time_ns: int


@dataclass(slots=True)
class _OpenDir:
    """One open directory: the names of its last readdir answer, by offset, and the rows
    read for it that did not fit (`rest`, from offset `rest_at`: the next answer's start
    when the reader goes on)."""

    inode: int
    timeout_s: float
    names: dict[int, str]
    rest: list[Dirent] = field(default_factory=list)
    rest_at: int = -1


@dataclass(slots=True)
class _OpenFile:
    """One open file: its reads, and what the page cache bookkeeping needs at release."""

    handle: ReadHandle
    inode: int
    version: str
    mode: OpenMode
    pid: int  # who opened it: whose signals abandon its reads (inflight.py)
    failure: BackendError | None = None  # the last read's error, until failure_until
    failure_until: float = 0.0


def _fuse_error(exc: Exception) -> pyfuse3.FUSEError:
    """Map any exception from a handler to the errno the caller sees (logged once)."""
    if isinstance(exc, pyfuse3.FUSEError):
        return exc
    if isinstance(exc, NotFound):
        log.debug("%s", exc)
        return pyfuse3.FUSEError(errno.ENOENT)
    if isinstance(exc, NotADirectoryError):
        return pyfuse3.FUSEError(errno.ENOTDIR)
    if isinstance(exc, Interrupted):
        log.debug("request abandoned: %s", exc)
        return pyfuse3.FUSEError(errno.EINTR)
    if isinstance(exc, BackendError):
        logs.once(log, logging.ERROR, f"eio:{exc}", "I/O error: %s", exc)
    else:
        logs.once(log, logging.ERROR, f"bug:{type(exc).__name__}:{exc}",
                  "internal error (answered EIO): %r", exc, exc_info=True)
    return pyfuse3.FUSEError(errno.EIO)


def _errno(
    method: Callable[Concatenate["ReadOnlyOperations", P], Awaitable[T]],
) -> Callable[Concatenate["ReadOnlyOperations", P], Awaitable[T]]:
    @functools.wraps(method)
    async def wrapper(self: "ReadOnlyOperations", *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(self, *args, **kwargs)
        except Exception as exc:
            raise _fuse_error(exc) from None

    return wrapper


def _store_request(
    pid_of: Callable[["ReadOnlyOperations", tuple], int],
) -> Callable[[Callable[Concatenate["ReadOnlyOperations", P], Awaitable[T]]],
              Callable[Concatenate["ReadOnlyOperations", P], Awaitable[T]]]:
    """For a handler that may wait on the store: run it under the mount's InFlight, for
    the caller `pid_of(self, args)` (a deadline; abandoned when the caller is signalled)."""

    def decorate(
        method: Callable[Concatenate["ReadOnlyOperations", P], Awaitable[T]],
    ) -> Callable[Concatenate["ReadOnlyOperations", P], Awaitable[T]]:
        @functools.wraps(method)
        async def wrapper(self: "ReadOnlyOperations", *args: P.args, **kwargs: P.kwargs) -> T:
            return await self.in_flight.run(pid_of(self, args), method, self, *args)

        return wrapper

    return decorate


def _caller(_self: "ReadOnlyOperations", args: tuple) -> int:
    """The pid of a request whose last argument is its RequestContext (0: none given)."""
    return _pid(args[-1])


def _pid(ctx: pyfuse3.RequestContext | None) -> int:
    return ctx.pid if ctx is not None else 0


async def _read_only(*_args: object) -> None:
    raise pyfuse3.FUSEError(errno.EROFS)


class ReadOnlyOperations(pyfuse3.Operations):
    """The FUSE face of a Namespace and a ReadPath; every write answers EROFS."""

    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        namespace: Namespace, read_path: ReadPath, attrs: AttrSettings,
        description: bytes | None = None,
        invalidate_inode: Callable[[int], None] = pyfuse3.invalidate_inode,
        invalidate_entry: Callable[[int, bytes], None] = pyfuse3.invalidate_entry,
        in_flight: InFlight | None = None,
    ) -> None:
        """`description`: the root's MOUNT_XATTR (None: not served). `invalidate_inode`
        drops an inode's pages and attributes in the kernel, `invalidate_entry` a name of
        a directory (both blocking; run by `serve`). `in_flight`: the deadline and watch
        of store requests (its `serve` runs beside; default: a 60 s deadline, no watch)."""
        super().__init__()
        self.namespace = namespace
        self.read_path = read_path
        self.attrs = attrs
        self.description = description
        self.invalidate_inode = invalidate_inode
        self.invalidate_entry = invalidate_entry
        self.in_flight = in_flight if in_flight is not None else InFlight(60.0)
        self.page_cache = PageCacheVersions()
        self._next_fh = 1
        self._files: dict[int, _OpenFile] = {}
        self._dirs: dict[int, _OpenDir] = {}
        # What the kernel must forget: (inode, None) its pages, (parent, name) an entry.
        # Unbounded, a release never waits (a release adds one; a re-listing at most
        # database.CHANGES_REPORTED per directory).
        self._stale, self._stale_inodes = trio.open_memory_channel[tuple[int, bytes | None]](
            math.inf)
        namespace.on_gone = lambda parent, name: self._stale.send_nowait(
            (parent, os.fsencode(name)))
        # One thread: invalidations are rare, and a blocked one must not hold more.
        self._notifier = local_runner(1)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send the kernel the invalidations releases asked for, one at a time, until
        cancelled (mount.py runs it beside pyfuse3.main). Each may block until READs of
        that inode in flight are answered, so it runs in a worker thread."""
        task_status.started()
        async for inode, name in self._stale_inodes:
            try:
                if name is None:
                    await self._notifier.call_once(self.invalidate_inode, inode)
                else:
                    await self._notifier.call_once(self.invalidate_entry, inode, name)
            except Exception as exc:  # a background task: it must not end the mount
                if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
                    continue  # the kernel forgot the inode already: nothing cached
                what = "pages of a replaced file" if name is None else "entry of a changed name"
                logs.once(log, logging.WARNING, f"invalidate:{exc!r}",
                          "cannot drop the kernel's cached %s (%r): it goes at its timeout",
                          what, exc)

    setattr = mknod = mkdir = unlink = rmdir = symlink = rename = link = _read_only
    create = write = setxattr = removexattr = _read_only

    def _attributes(self, node: Node) -> pyfuse3.EntryAttributes:
        obj = node.obj
        return self._entry(node.inode, obj.size if obj else None, obj.mtime_ns if obj else 0,
                           node.timeout_s)

    def _entry(self, inode: int, size: int | None, mtime_ns: int,
               timeout_s: float) -> pyfuse3.EntryAttributes:
        """The attributes of a file of `size` bytes (None: a directory)."""
        a = self.attrs
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode
        entry.generation = 0
        entry.entry_timeout = max(a.entry_timeout_s, timeout_s)
        entry.attr_timeout = max(a.attr_timeout_s, timeout_s)
        entry.st_uid = a.uid
        entry.st_gid = a.gid
        entry.st_blksize = BLKSIZE
        if size is None:
            entry.st_mode = stat.S_IFDIR | (0o555 & ~a.umask)
            entry.st_nlink = 2
            entry.st_size = 0
            mtime_ns = a.mount_time_ns
        else:
            entry.st_mode = stat.S_IFREG | (0o444 & ~a.umask)
            entry.st_nlink = 1
            entry.st_size = size
        entry.st_blocks = (entry.st_size + 511) // 512
        entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = mtime_ns
        return entry

    @_errno
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        text = os.fsdecode(name)
        # A listed directory answers at once: the deadline and watch (~15 us) only for
        # a lookup that waits for a listing.
        node = self.namespace.lookup_now(parent_inode, text)
        if node is None:
            node = await self.in_flight.run(_pid(ctx), self.namespace.lookup, parent_inode, text)
        return self._attributes(node)

    @_errno
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attributes(self.namespace.get(inode))

    @_errno
    @_store_request(_caller)
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        timeout_s = await self.namespace.opendir(inode)
        fh = self._new_fh()
        self._dirs[fh] = _OpenDir(inode, timeout_s, {0: ""})
        return fh

    @_errno
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self._dirs[fh]
        after = handle.names.get(start_id)
        if handle.rest and handle.rest_at == start_id:  # a reader going on: ~1/4 of a query
            entries = handle.rest
        else:
            entries = self.namespace.dirents(handle.inode, after, READDIR_ROWS, start_id)
        handle.rest = []
        names = {start_id: after} if after is not None else {}
        offset = start_id
        # One attributes object per kind, changed per entry: readdir_reply copies it into
        # the reply at once (~1 us saved per entry of a million-file walk).
        attributes = {kind: self._entry(0, size, 0, handle.timeout_s)
                      for kind, size in (("dir", None), ("file", 0))}
        directory, file = attributes["dir"], attributes["file"]
        reply = pyfuse3.readdir_reply
        fsencode = os.fsencode
        while entries:
            for sent, (name, inode, size, mtime_ns) in enumerate(entries):
                if size is None:
                    attrs = directory
                    attrs.st_ino = inode
                else:
                    attrs = file
                    attrs.st_ino = inode
                    attrs.st_size = size
                    attrs.st_blocks = (size + 511) // 512
                    attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = mtime_ns
                if not reply(token, fsencode(name), attrs, offset + 1):
                    handle.names = names
                    handle.rest, handle.rest_at = entries[sent:], offset
                    return
                offset += 1
                names[offset] = name
            entries = self.namespace.dirents(handle.inode, entries[-1][0], READDIR_ROWS)
        handle.names = names

    @_errno
    async def releasedir(self, fh: int) -> None:
        del self._dirs[fh]

    @_errno
    async def open(
        self, inode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise pyfuse3.FUSEError(errno.EROFS)
        node = self.namespace.get(inode)
        if node.obj is None:
            raise pyfuse3.FUSEError(errno.EISDIR)
        # A replaced file's old inode (a dentry the kernel still holds) opens what has
        # its name now; a vanished one's does not open.
        obj = node.obj if not node.gone else self.namespace.current(inode)
        if obj is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        version = obj.version
        mode = self.page_cache.opened(inode, version)
        try:
            # keep_cache: the kernel may hold every page already; fetch only what it asks.
            handle = await self.read_path.open(obj, mode.keep_cache)
        except BaseException:
            self.page_cache.released(inode, version, mode, version)
            raise
        fh = self._new_fh()
        self._files[fh] = _OpenFile(handle, inode, version, mode, _pid(ctx))
        return pyfuse3.FileInfo(fh=fh, keep_cache=mode.keep_cache, direct_io=mode.direct_io)

    @_errno
    async def read(self, fh: int, off: int, size: int) -> ReadBytes:
        file = self._files[fh]
        if file.failure is not None:  # see FAILED_READ_S
            if trio.current_time() < file.failure_until:
                raise file.failure
            file.failure = None
        try:
            return await self.in_flight.run(file.pid, file.handle.read, off, size)
        except BackendError as exc:
            if isinstance(exc, NotFound):  # deleted since it was opened: read(2) is EIO,
                exc = BackendError(f"{exc} (deleted since it was opened)")  # not ENOENT
            file.failure, file.failure_until = exc, trio.current_time() + FAILED_READ_S
            raise exc from None

    @_errno
    async def release(self, fh: int) -> None:
        file = self._files.pop(fh)
        # Before any await: an open served meanwhile must see this handle gone.
        current = self.namespace.current(file.inode)
        if self.page_cache.released(file.inode, file.version, file.mode,
                                    current.version if current is not None else None):
            self._stale.send_nowait((file.inode, None))
        await file.handle.close()

    @_errno
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = BLKSIZE
        data.f_blocks = data.f_bfree = data.f_bavail = 0
        data.f_files = len(self.namespace)
        data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data

    @_errno
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if not name.startswith(SERVED_XATTR_PREFIX):
            raise pyfuse3.FUSEError(errno.ENOTSUP)
        node = self.namespace.get(inode)
        if name == ETAG_XATTR and node.obj is not None:
            return node.obj.etag.encode()
        if name == STATS_XATTR and inode == ROOT_INODE:
            return json.dumps({**self.read_path.stats.as_dict(),
                               "interrupted_requests": self.in_flight.interrupted}).encode()
        if name == MOUNT_XATTR and inode == ROOT_INODE and self.description is not None:
            return self.description
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    @_errno
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        node = self.namespace.get(inode)
        if node.obj is not None:
            return [ETAG_XATTR]
        if inode != ROOT_INODE:
            return []
        return [STATS_XATTR] + ([MOUNT_XATTR] if self.description is not None else [])

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh
