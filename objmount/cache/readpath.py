"""CachedReadPath: the mount's read path through memory, local disk, then the store.

A block is looked up in the hot tier (memory), then among fetches in flight,
then on local disk (BlockStore), and only then fetched with one ranged GET of
the whole block. Per open file, a Prefetcher turns reads into block lookups and
reads ahead when reads are sequential.

Invariants:
- single flight: concurrent lookups of one block (from any open file, read or
  read-ahead) share one disk read or one GET;
- a block is keyed by the ETag the file had at open (BlockKey): bytes of two
  versions are never mixed, and a changed object never reads old bytes;
- every blocking call (GETs through the mount's Runner, disk and SQLite through
  a Runner of their own) runs in a worker thread, never on the trio thread; a
  disk hit reads the block's file with no SQLite (BlockStore), and the store's
  record of hits reaches its index in batches, every RECENCY_FLUSH_S;
- a block fetched from the store is written to disk in the background, shielded
  from cancellation: a clean unmount finishes its writes, SIGKILL loses only them;
- `stats.gets` counts real GETs to the store.
"""

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import trio

from objmount import log as logs
from objmount.backends.base import Backend, ObjectInfo
from objmount.backends.runner import Runner
from objmount.cache.blocks import (
    RECENCY_FLUSH_S,
    BlockKey,
    BlockStore,
    block_key,
    open_store,
)
from objmount.cache.dirahead import DirectoryReadAhead
from objmount.cache.memory import HotTier, MemoryBudget
from objmount.cache.prefetch import Prefetcher, PrefetchSettings
from objmount.cache.settings import CacheOptions
from objmount.readpath import ReadBytes, ReadStats, fetch_exact

log = logging.getLogger(__name__)

# Threads for disk and SQLite work, apart from the GET threads: a cache hit never
# queues behind slow GETs. Four keep a local SSD busy with 1-8 MiB reads.
DISK_THREADS = 4


class CacheStats(ReadStats):
    """ReadStats whose buffer and store counters are read live when exported."""

    def __init__(self, path: "CachedReadPath") -> None:
        super().__init__()
        self._path = path

    def as_dict(self) -> dict[str, int]:
        path = self._path
        self.buffer_bytes = path.budget.used_bytes
        self.buffer_peak_bytes = path.budget.peak_bytes
        if path.store is not None:
            counters = path.store.counters
            self.corrupt_blocks = counters.corrupt
            self.cache_write_errors = counters.write_errors
        return super().as_dict()


@dataclass(eq=False)
class _Flight:
    """One block being read from disk or fetched; every lookup of it waits here."""

    done: trio.Event
    data: bytes | None = None
    error: Exception | None = None

    async def result(self) -> bytes:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.data is not None
        return self.data


class CachedReadPath:
    """A readpath.ReadPath with a persistent block cache, a hot tier and read-ahead."""

    def __init__(
        self,
        backend: Backend,
        runner: Runner,
        store: BlockStore | None,
        source: str,
        options: CacheOptions,
        disk_runner: Runner | None = None,
        files_in: Callable[[str], Iterable[ObjectInfo]] | None = None,
    ) -> None:
        """`files_in(prefix)` returns the listed files of a directory (for directory
        read-ahead; without it, there is none)."""
        self.backend = backend
        self.runner = runner
        self.store = store
        self.source = source
        self.options = options
        self.disk_runner = disk_runner or Runner(DISK_THREADS, retries=0, abandon=False)
        self.budget = MemoryBudget(options.max_buffer_memory_bytes)
        self.hot = HotTier(self.budget, min(options.cache_mem_bytes,
                                            options.max_buffer_memory_bytes))
        self.prefetch_settings = PrefetchSettings(
            block_size_bytes=options.block_size_bytes,
            max_window_bytes=options.read_ahead_bytes,
        )
        self.stats = CacheStats(self)
        self.dir_ahead = DirectoryReadAhead(
            self.fetch_ahead, files_in or (lambda prefix: ()), self.spawn,
            small_bytes=options.block_size_bytes,
            ahead_bytes=options.dir_read_ahead_bytes if files_in else 0,
            # Half the GET threads: demand reads always have the other half.
            parallel=runner.limiter.total_tokens // 2,
        )
        self._flights: dict[BlockKey, _Flight] = {}
        self._nursery: trio.Nursery | None = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host read-ahead and cache writes until cancelled; then finish the writes and
        close the store (its hits are flushed, its writer entry removed)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.store is not None:
                    nursery.start_soon(self._flush_recency, self.store)
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    self._nursery = None
        finally:
            if self.store is not None:
                with trio.CancelScope(shield=True):
                    await self.disk_runner.call_once(self.store.close)

    async def _flush_recency(self, store: BlockStore) -> None:
        """Write the store's hits to its index every RECENCY_FLUSH_S (in a disk thread),
        so other processes evict by an order that knows them."""
        while True:
            await trio.sleep(RECENCY_FLUSH_S)
            try:
                await self.disk_runner.call_once(store.flush_recency)
            except (OSError, sqlite3.Error) as exc:  # the next flush (or write) retries
                log.debug("cannot write cache hits to the index: %s", exc)

    async def open(self, obj: ObjectInfo) -> "CachedHandle":
        self.dir_ahead.opened(obj)
        handle = CachedHandle(self, obj)
        handle.prefetcher.start_whole()  # a one-block object: its GET starts now
        return handle

    async def fetch_ahead(self, obj: ObjectInfo) -> None:
        """Bring a one-block object into the disk cache unless it is there or on its way."""
        key = block_key(self.source, obj, self.options.block_size_bytes, 0)
        if key in self.hot or key in self._flights:
            return
        if self.store is not None and await self.disk_runner.call_once(self.store.contains, key):
            return
        flight = self._flights.get(key) or self._start_flight(
            obj, key, check_disk=False, keep_hot=False, ahead=True)
        await flight.done.wait()
        if flight.error is not None:
            raise flight.error

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run `fn` in the background (in serve's nursery)."""
        if self._nursery is None:
            raise RuntimeError("CachedReadPath.serve is not running")
        self._nursery.start_soon(fn)

    # Block lookups (the BlockSource of every open file).

    async def fetch_block(self, obj: ObjectInfo, key: BlockKey) -> bytes:
        """Return a whole block: from memory, from a lookup in flight, from disk, or a GET."""
        data = self.hot.get(key)
        if data is not None:
            self._hit(memory=True)
            return data
        flight = self._flights.get(key)
        if flight is None:
            flight = self._start_flight(obj, key, check_disk=True, keep_hot=False, ahead=False)
        return await flight.result()

    async def read_range(
        self, obj: ObjectInfo, key: BlockKey, start: int, end: int
    ) -> ReadBytes:
        """Return bytes [start, end) of a block, reading only what is needed from disk."""
        data = self.hot.get(key)
        if data is not None:
            self._hit(memory=True)
            return memoryview(data)[start:end]
        flight = self._flights.get(key)
        if flight is None and self.store is not None:
            data = await self.disk_runner.call_once(self.store.read_range, key, start, end)
            if data is not None:
                self._hit(memory=False)
                return data
            flight = self._flights.get(key)  # another lookup may have started meanwhile
        if flight is None:
            flight = self._start_flight(obj, key, check_disk=False, keep_hot=True, ahead=False)
        return memoryview(await flight.result())[start:end]

    def _hit(self, *, memory: bool) -> None:
        self.stats.cache_hits += 1
        if memory:
            self.stats.memory_hits += 1
        else:
            self.stats.disk_hits += 1

    def _start_flight(
        self, obj: ObjectInfo, key: BlockKey, *, check_disk: bool, keep_hot: bool, ahead: bool
    ) -> _Flight:
        """Start looking up a block; `ahead`: for directory read-ahead, not for a reader."""
        flight = _Flight(trio.Event())
        self._flights[key] = flight

        async def run() -> None:
            try:
                await self._fly(obj, key, flight, check_disk=check_disk, keep_hot=keep_hot,
                                ahead=ahead)
            finally:
                if self._flights.get(key) is flight:
                    del self._flights[key]

        self.spawn(run)
        return flight

    async def _fly(
        self, obj: ObjectInfo, key: BlockKey, flight: _Flight, *, check_disk: bool,
        keep_hot: bool, ahead: bool,
    ) -> None:
        store = self.store
        data = None
        try:
            if check_disk and store is not None:
                data = await self.disk_runner.call_once(store.read_block, key)
                if data is not None:
                    self._hit(memory=False)
            fetched = data is None
            if fetched:
                if ahead:
                    self.stats.dir_ahead_gets += 1
                else:
                    self.stats.cache_misses += 1
                    self.dir_ahead.missed(obj)
                data = await self._get(obj, key)
            flight.data = data
        except Exception as exc:  # raised in every reader of the block
            flight.error = exc
        finally:
            flight.done.set()
        if data is None:
            return
        if keep_hot:
            self.hot.put(key, data)
        if fetched and store is not None:
            # Held (and charged) until it is on disk; the flight stays open meanwhile,
            # so nobody misses on disk and fetches the block a second time.
            self.budget.take(len(data))
            try:
                with trio.CancelScope(shield=True):
                    if await self.disk_runner.call_once(store.put, key, data):
                        self.stats.blocks_stored += 1
            except Exception as exc:  # a background task: it must not end the mount
                logs.once(log, logging.ERROR, f"cache-put:{type(exc).__name__}",
                          "internal error writing the block cache (block not cached): %r", exc)
            finally:
                self.budget.give(len(data))

    async def _get(self, obj: ObjectInfo, key: BlockKey) -> bytes:
        """One ranged GET of the whole block, exactly (readpath.fetch_exact)."""
        return await fetch_exact(self.backend, self.runner, self.stats, obj, key.start, key.end)


class _ObjectBlocks:
    """The BlockSource of one open object: block indices to keys, lookups to the path."""

    def __init__(self, path: CachedReadPath, obj: ObjectInfo) -> None:
        self.path = path
        self.obj = obj
        self.block_size = path.options.block_size_bytes

    def key(self, index: int) -> BlockKey:
        return block_key(self.path.source, self.obj, self.block_size, index)

    async def fetch_block(self, index: int) -> bytes:
        return await self.path.fetch_block(self.obj, self.key(index))

    async def read_block(self, index: int, start: int, end: int) -> ReadBytes:
        return await self.path.read_range(self.obj, self.key(index), start, end)


class CachedHandle:
    """A ReadHandle over the cache: reads go through the file's Prefetcher."""

    def __init__(self, path: CachedReadPath, obj: ObjectInfo) -> None:
        self.path = path
        self.blocks = _ObjectBlocks(path, obj)
        self.prefetcher = Prefetcher(
            obj.size, self.blocks, path.budget, path.spawn, path.prefetch_settings,
            on_consumed=self._consumed,
        )

    async def read(self, offset: int, size: int) -> ReadBytes:
        self.path.stats.count_read(size)
        return await self.prefetcher.read(offset, size)

    async def close(self) -> None:
        self.prefetcher.close()

    def _consumed(self, index: int, data: bytes) -> None:
        # A block read to its end may be read again soon (another epoch, another reader).
        self.path.hot.put(self.blocks.key(index), data)


async def open_cached_read_path(
    backend: Backend, runner: Runner, source: str, options: CacheOptions,
    files_in: Callable[[str], Iterable[ObjectInfo]] | None = None,
) -> CachedReadPath:
    """Open the block store (in a worker thread) and build the read path over it.

    Raises ConfigError if the cache directory cannot be used; a full disk only
    warns, and the mount reads uncached.
    """
    disk_runner = Runner(DISK_THREADS, retries=0, abandon=False)
    store = await disk_runner.call_once(open_store, options.cache_dir, options.max_size_bytes)
    return CachedReadPath(backend, runner, store, source, options, disk_runner, files_in)
