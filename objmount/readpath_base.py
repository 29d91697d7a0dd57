"""The read path: how bytes of an open object reach a FUSE read.

fs.py opens a ReadHandle per open file and reads through it; what sits behind
the handle (direct ranged GETs here, a block cache with prefetch later) is
invisible to the filesystem layer. Every handle is pinned to the ETag the
object had at open: bytes of two versions are never mixed. Every GET goes
through `fetch_exact`, which fails rather than return more or fewer bytes than
asked for.
"""

from dataclasses import asdict, dataclass
from typing import Protocol, TypeAlias

import trio

from objmount.backends.base import Backend, BackendError, ObjectInfo
from objmount.backends.runner import Runner

# What a read returns: pyfuse3 replies from any contiguous buffer, so a slice of a
# held block is handed over as a memoryview, without copying up to 1 MiB per read,
# and a block file's chunks as the bytearray they were read into.
ReadBytes: TypeAlias = bytes | bytearray | memoryview


@dataclass
class ReadStats:
    """Counters of one mount, exposed as JSON in the root's `user.objmount.stats` xattr."""

    reads: int = 0
    bytes_read: int = 0
    gets: int = 0
    bytes_fetched: int = 0
    largest_read_bytes: int = 0
    # The block cache (objmount.cache): block lookups served from memory or local
    # disk, or needing a GET; blocks written to disk; corrupt blocks dropped; failed
    # cache writes; bytes held in memory for reads (read-ahead + hot tier) now and at peak;
    # GETs of files fetched ahead by directory read-ahead (also counted in `gets`); disk
    # hits read on the trio thread from a file kept open, its pages in memory (also in
    # `disk_hits`: the rest went through a worker thread).
    cache_hits: int = 0
    cache_misses: int = 0
    memory_hits: int = 0
    disk_hits: int = 0
    blocks_stored: int = 0
    corrupt_blocks: int = 0
    cache_write_errors: int = 0
    buffer_bytes: int = 0
    buffer_peak_bytes: int = 0
    dir_ahead_gets: int = 0
    fast_disk_hits: int = 0
    # Order-driven prefetch (cache/orderahead.py): GETs of files fetched ahead of an
    # order's readers (also in `gets`); files whose block fetched ahead a read claimed;
    # files fetched ahead and dropped unread, and their bytes (wasted prefetch); memory
    # held ahead now; files fetched or being fetched ahead; published orders; files of
    # orders not in the mount.
    prefetch_gets: int = 0
    prefetch_used_files: int = 0
    prefetch_unused_files: int = 0
    prefetch_unused_bytes: int = 0
    prefetch_buffer_bytes: int = 0
    prefetch_ahead_files: int = 0
    orders: int = 0
    order_missing_files: int = 0
    # The cache policy (cache/policy.py): 1 while the resident set is kept (misses are not
    # written), and the blocks not written for it.
    cache_holding: int = 0
    cache_not_admitted: int = 0
    # Blocks fetched and not yet written to the cache (the writer's queue); GETs that
    # waited for that queue to shrink below half the memory budget; blocks fetched and
    # not written because it did not shrink in time (a stuck cache disk).
    cache_writes_pending: int = 0
    write_backlog_waits: int = 0
    cache_writes_skipped: int = 0
    # Time in reads, and in reads during which a GET of the file's blocks ended (waiting
    # on the store), in nanoseconds.
    read_ns: int = 0
    store_wait_ns: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def count_read(self, size: int) -> None:
        self.reads += 1
        self.bytes_read += size
        self.largest_read_bytes = max(self.largest_read_bytes, size)


class GetCounters(Protocol):
    """What fetch_exact counts (ReadStats, a warm-up's progress)."""

    gets: int
    bytes_fetched: int


async def fetch_exact(
    backend: Backend, runner: Runner, stats: GetCounters, obj: ObjectInfo, start: int, end: int
) -> bytes | bytearray:
    """One ranged GET of bytes [start, end) of `obj`, conditional on its ETag, retried by
    the runner and counted in `stats`; `end` is within the size seen at open.

    Raises BackendError if the store returned another number of bytes: a read is
    never answered short or long (a shorter object has another version).
    """
    data = await runner.call(backend.read, obj.key, start, end, obj.etag or None)
    stats.gets += 1
    stats.bytes_fetched += len(data)
    check_exact(obj, data, start, end)
    return data


def check_exact(obj: ObjectInfo, data: bytes | bytearray, start: int, end: int) -> None:
    """Raise BackendError unless `data` is exactly bytes [start, end) long (fetch_exact's rule
    for callers that GET in a thread of their own)."""
    if len(data) != end - start:
        raise BackendError(
            f"{obj.key}: the store returned {len(data)} bytes for a range of {end - start}"
        )


class ReadHandle(Protocol):
    """Reads of one open file."""

    async def read(self, offset: int, size: int) -> ReadBytes:
        """Return up to `size` bytes at `offset` (fewer only at end of object)."""
        ...

    async def close(self) -> None:
        """Release whatever the handle holds (buffers, prefetches in flight)."""
        ...


class ReadPath(Protocol):
    """Opens objects for reading."""

    stats: ReadStats

    async def open(self, obj: ObjectInfo, keep_cache: bool = False) -> ReadHandle:
        """Start reading `obj` (the version with `obj.etag`). `keep_cache`: the kernel keeps
        the pages it cached of this version, so reads may never come (fetch nothing yet)."""
        ...

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run background work (read-ahead, cache writes) until cancelled; mount.py starts it
        before serving FUSE requests."""
        ...


class DirectReadPath:
    """Each read is one ranged GET, conditional on the ETag seen at open."""

    def __init__(self, backend: Backend, runner: Runner) -> None:
        self.backend = backend
        self.runner = runner
        self.stats = ReadStats()

    async def open(self, obj: ObjectInfo, keep_cache: bool = False) -> "DirectHandle":
        return DirectHandle(self, obj)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


class DirectHandle:
    """A ReadHandle that fetches exactly what is asked, clamped to the object's size."""

    def __init__(self, path: DirectReadPath, obj: ObjectInfo) -> None:
        self.path = path
        self.obj = obj

    async def read(self, offset: int, size: int) -> bytes:
        end = min(offset + size, self.obj.size)
        stats = self.path.stats
        stats.count_read(size)
        if end <= offset:
            return b""
        return await fetch_exact(self.path.backend, self.path.runner, stats, self.obj, offset,
                                 end)

    async def close(self) -> None:
        return None
