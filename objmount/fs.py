"""pyfuse3 operations of a read-only mount: inode and handle glue, errno mapping.

Only this module and mount.py import pyfuse3. Names come from tree.Namespace,
bytes from a readpath.ReadPath. Every exception becomes an errno in `_fuse_error`:
NotFound -> ENOENT, anything that would write -> EROFS, all else -> EIO (logged
once), because any other exception escaping a handler would end the mount.

Handlers that may wait on the store (lookup, opendir, read) run through
inflight.InFlight (for a read, as the pid that opened the handle: pyfuse3 gives
read no context): a deadline per request (EIO once it passes, whatever the
retries), and EINTR at once when the caller has a signal pending (pyfuse3 never
delivers FUSE_INTERRUPT: see inflight.py). open never waits: the GET of a small
file it starts runs in the background, bounded by the runner's own deadline.

Inodes are never reused, so lookup counts need no bookkeeping (forget is the
base class's no-op); directory handles keep the listing they were opened with,
so readdir offsets stay valid however the listing changes meanwhile.

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
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, TypeVar

import pyfuse3
import trio

from objmount import log as logs
from objmount.backends.base import BackendError, NotFound
from objmount.backends.runner import Runner
from objmount.inflight import InFlight, Interrupted
from objmount.pagecache import OpenMode, PageCacheVersions
from objmount.readpath import ReadBytes, ReadHandle, ReadPath
from objmount.tree import ROOT_INODE, Namespace, Node

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
        in_flight: InFlight | None = None,
    ) -> None:
        """`description`: the root's MOUNT_XATTR (None: not served). `invalidate_inode`
        drops an inode's pages and attributes in the kernel (blocking; run by `serve`).
        `in_flight`: the deadline and watch of store requests (its `serve` runs beside;
        default: a 60 s deadline, no watch)."""
        super().__init__()
        self.namespace = namespace
        self.read_path = read_path
        self.attrs = attrs
        self.description = description
        self.invalidate_inode = invalidate_inode
        self.in_flight = in_flight if in_flight is not None else InFlight(60.0)
        self.page_cache = PageCacheVersions()
        self._next_fh = 1
        self._files: dict[int, _OpenFile] = {}
        self._dirs: dict[int, list[Node]] = {}
        # Inodes whose pages must go: unbounded, a release never waits (ints, one per release).
        self._stale, self._stale_inodes = trio.open_memory_channel[int](math.inf)
        # One thread: invalidations are rare, and a blocked one must not hold more.
        self._notifier = Runner(1, retries=0, abandon=False)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send the kernel the invalidations releases asked for, one at a time, until
        cancelled (mount.py runs it beside pyfuse3.main). Each may block until READs of
        that inode in flight are answered, so it runs in a worker thread."""
        task_status.started()
        async for inode in self._stale_inodes:
            try:
                await self._notifier.call_once(self.invalidate_inode, inode)
            except Exception as exc:  # a background task: it must not end the mount
                if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
                    continue  # the kernel forgot the inode already: nothing cached
                logs.once(log, logging.WARNING, f"invalidate:{exc!r}",
                          "cannot drop the kernel's cached pages of a replaced file (%r): "
                          "they go at its next open", exc)

    setattr = mknod = mkdir = unlink = rmdir = symlink = rename = link = _read_only
    create = write = setxattr = removexattr = _read_only

    def _attributes(self, node: Node) -> pyfuse3.EntryAttributes:
        a = self.attrs
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = node.inode
        entry.generation = 0
        entry.entry_timeout = a.entry_timeout_s
        entry.attr_timeout = a.attr_timeout_s
        entry.st_uid = a.uid
        entry.st_gid = a.gid
        entry.st_blksize = BLKSIZE
        if node.obj is None:
            entry.st_mode = stat.S_IFDIR | (0o555 & ~a.umask)
            entry.st_nlink = 2
            entry.st_size = 0
            mtime_ns = a.mount_time_ns
        else:
            entry.st_mode = stat.S_IFREG | (0o444 & ~a.umask)
            entry.st_nlink = 1
            entry.st_size = node.obj.size
            mtime_ns = node.obj.mtime_ns
        entry.st_blocks = (entry.st_size + 511) // 512
        entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = mtime_ns
        return entry

    @_errno
    @_store_request(_caller)
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = await self.namespace.lookup(parent_inode, os.fsdecode(name))
        return self._attributes(node)

    @_errno
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attributes(self.namespace.get(inode))

    @_errno
    @_store_request(_caller)
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        children = await self.namespace.children(inode)
        fh = self._new_fh()
        self._dirs[fh] = [children[name] for name in sorted(children)]
        return fh

    @_errno
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = self._dirs[fh]
        for index in range(start_id, len(entries)):
            node = entries[index]
            if not pyfuse3.readdir_reply(
                token, os.fsencode(node.name), self._attributes(node), index + 1
            ):
                return

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
        handle = await self.read_path.open(node.obj)
        fh = self._new_fh()
        version = node.obj.version
        mode = self.page_cache.opened(inode, version)
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
            file.failure, file.failure_until = exc, trio.current_time() + FAILED_READ_S
            raise

    @_errno
    async def release(self, fh: int) -> None:
        file = self._files.pop(fh)
        # Before any await: an open served meanwhile must see this handle gone.
        current = self.namespace.get(file.inode).obj
        if self.page_cache.released(file.inode, file.version, file.mode,
                                    current.version if current is not None else None):
            self._stale.send_nowait(file.inode)
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
