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
  whether it is written at all is the store's policy's decision (policy.py: a
  stable resident set when an epoch reads more than the cache holds);
- prefetch (an order's, orderahead.py; directory read-ahead) runs at the
  runner's background priority: a reader's miss always goes first. A block an
  order fetched ahead is held in the AheadBuffer (memory) until a read claims it
  or the order drops it, as well as written to disk if the policy admits it;
  directory read-ahead stays off while an order is active or the cache holds
  its resident set (what it fetched would not be written);
- `stats.gets` counts real GETs to the store.
"""

import logging
import sqlite3
import time
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
from objmount.cache.memory import AheadBuffer, HotTier, MemoryBudget
from objmount.cache.orderahead import OrderAhead, Resolve
from objmount.cache.policy import ResidentSetPolicy
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
        ahead = path.ahead
        self.prefetch_used_files = ahead.used_files
        self.prefetch_unused_files = ahead.unused_files
        self.prefetch_unused_bytes = ahead.unused_bytes
        self.prefetch_buffer_bytes = ahead.held_bytes
        self.prefetch_ahead_files = path.orders.ahead_files()
        self.orders = len(path.orders)
        self.order_missing_files = path.orders.files_missing
        if path.policy is not None:
            self.cache_holding = int(path.policy.holding)
            self.cache_not_admitted = path.policy.refused
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
    prefetch: bool = False  # an order's prefetch (orderahead.py)
    claimed: bool = False  # a reader joined it: the buffer need not hold it
    fetched: bool = False  # a GET, not a disk read

    def claim(self, buffer: AheadBuffer, nbytes: int) -> None:
        """A reader joins: a prefetch is then used (counted in `buffer`), not held."""
        if self.prefetch and not self.claimed:
            buffer.used_files += 1
            buffer.used_bytes += nbytes
        self.claimed = True

    async def result_for(self, waiter: "_ObjectBlocks | None") -> bytes:
        """The block, as `result`; counts in `waiter.gets` that it came from the store."""
        data = await self.result()
        if waiter is not None and self.fetched:
            waiter.gets += 1
        return data

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
        resolve: Resolve | None = None,
        key_prefix: str = "",
    ) -> None:
        """`files_in(prefix)` returns the listed files of a directory (for directory
        read-ahead; without it, there is none). `resolve(path)` returns the object at a
        path relative to the mount's root, whose key is `key_prefix` + path (for orders;
        without it, orders find nothing)."""
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
        policy = store.policy if store is not None else None
        self.policy = policy if isinstance(policy, ResidentSetPolicy) else None
        # Half the memory budget at most: read-ahead and the hot tier keep the rest.
        self.ahead = AheadBuffer(self.budget, options.max_buffer_memory_bytes // 2)
        self.orders = OrderAhead(
            self, resolve or _resolve_nothing, key_prefix, parallel=options.order_ahead,
            on_epoch_bytes=self.policy.expect_reads if self.policy is not None else None,
        )
        self.stats = CacheStats(self)
        self.dir_ahead = DirectoryReadAhead(
            self.fetch_ahead, files_in or (lambda prefix: ()), self.spawn,
            small_bytes=options.block_size_bytes,
            ahead_bytes=options.dir_read_ahead_bytes if files_in else 0,
            # Half the GET threads: demand reads always have the other half.
            parallel=runner.limiter.total_tokens // 2,
            paused=self._dir_ahead_paused,
            cache_bytes=(self.policy.capacity_bytes if self.policy is not None
                         else options.max_size_bytes),
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
                await nursery.start(self.orders.serve)
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
        self.orders.opened(obj)
        self.dir_ahead.opened(obj)
        handle = CachedHandle(self, obj)
        handle.prefetcher.start_whole()  # a one-block object: its GET starts now
        return handle

    async def fetch_ahead(self, obj: ObjectInfo) -> None:
        """Bring a one-block object into the disk cache unless it is there or on its way."""
        key = self._first_key(obj)
        if key in self.hot or key in self._flights:
            return
        if self.store is not None and await self.disk_runner.call_once(self.store.contains, key):
            return
        flight = self._flights.get(key) or self._start_flight(
            obj, key, check_disk=False, keep_hot=False, ahead=True)
        await flight.done.wait()
        if flight.error is not None:
            raise flight.error

    def _dir_ahead_paused(self) -> bool:
        return self.orders.active or (self.policy is not None and self.policy.holding)

    def _first_key(self, obj: ObjectInfo) -> BlockKey:
        return block_key(self.source, obj, self.options.block_size_bytes, 0)

    # The AheadTarget of the orders (orderahead.py): an object's first block.

    async def needs_get(self, objects: list[ObjectInfo]) -> list[bool]:
        """Which objects' first blocks are neither in memory, nor on their way, nor on disk
        (nor larger than the whole buffer). One disk thread call for all of them."""
        keys = [self._first_key(obj) for obj in objects]
        needs = [key.length <= self.ahead.max_bytes and key not in self.hot
                 and key not in self.ahead and key not in self._flights for key in keys]
        store = self.store
        if store is not None and any(needs):
            unknown = [i for i, need in enumerate(needs) if need]
            stored = await self.disk_runner.call_once(
                lambda: [store.contains(keys[i]) for i in unknown])
            for i, present in zip(unknown, stored, strict=True):
                needs[i] = not present
        return needs

    def reserve(self, obj: ObjectInfo) -> bool:
        return self.ahead.reserve(self._first_key(obj).length)

    async def fetch(self, obj: ObjectInfo) -> bool:
        """GET the first block (background priority) into the AheadBuffer, under the
        reservation made for it. Raises what the GET raises."""
        key = self._first_key(obj)
        if key in self.hot or key in self.ahead or key in self._flights:
            self.ahead.unreserve(key.length)  # there already, or on its way
            return True
        flight = _Flight(trio.Event(), prefetch=True)
        self._flights[key] = flight

        async def run() -> None:
            try:
                await self._fly_ahead(obj, key, flight)
            finally:
                if self._flights.get(key) is flight:
                    del self._flights[key]

        self.spawn(run)
        await flight.done.wait()
        if flight.error is not None:
            raise flight.error
        return True

    def drop(self, obj: ObjectInfo) -> None:
        self.ahead.drop(self._first_key(obj))

    async def _fly_ahead(self, obj: ObjectInfo, key: BlockKey, flight: _Flight) -> None:
        data = None
        try:
            self.stats.prefetch_gets += 1
            flight.fetched = True
            data = await self._get(obj, key, background=True)
            flight.data = data
        except Exception as exc:  # raised in every reader that joined
            flight.error = exc
        finally:
            # Before the event (and with no await between): a reader looking now finds
            # the block in the buffer, or joins this flight and claims it.
            if data is not None and not flight.claimed:
                self.ahead.fill(key, data)
            else:
                self.ahead.unreserve(key.length)
            flight.done.set()
        if data is not None:
            await self._store_fetched(key, data)

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run `fn` in the background (in serve's nursery)."""
        if self._nursery is None:
            raise RuntimeError("CachedReadPath.serve is not running")
        self._nursery.start_soon(fn)

    # Block lookups (the BlockSource of every open file).

    async def fetch_block(self, obj: ObjectInfo, key: BlockKey,
                          waiter: "_ObjectBlocks | None" = None) -> bytes:
        """Return a whole block: from memory, from a lookup in flight, from disk, or a GET
        (counted in `waiter.gets`)."""
        data = self.hot.get(key) or self.ahead.claim(key)
        if data is not None:
            self._hit(memory=True)
            return data
        flight = self._flights.get(key)
        if flight is None:
            flight = self._start_flight(obj, key, check_disk=True, keep_hot=False, ahead=False)
        flight.claim(self.ahead, key.length)
        return await flight.result_for(waiter)

    async def read_range(
        self, obj: ObjectInfo, key: BlockKey, start: int, end: int,
        waiter: "_ObjectBlocks | None" = None,
    ) -> ReadBytes:
        """Return bytes [start, end) of a block, reading only what is needed from disk (a
        GET is counted in `waiter.gets`)."""
        data = self.hot.get(key) or self.ahead.claim(key)
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
        flight.claim(self.ahead, key.length)
        return memoryview(await flight.result_for(waiter))[start:end]

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
                flight.fetched = True
                data = await self._get(obj, key, background=ahead)
            flight.data = data
        except Exception as exc:  # raised in every reader of the block
            flight.error = exc
        finally:
            flight.done.set()
        if data is None:
            return
        if keep_hot:
            self.hot.put(key, data)
        if fetched:
            await self._store_fetched(key, data)

    async def _store_fetched(self, key: BlockKey, data: bytes) -> None:
        """Write a block just fetched to the store (if the policy admits it), shielded."""
        store = self.store
        if store is None:
            return
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

    async def _get(self, obj: ObjectInfo, key: BlockKey, background: bool = False) -> bytes:
        """One ranged GET of the whole block, exactly (readpath.fetch_exact); `background`:
        for prefetch, after every reader's GET."""
        runner = self.runner.background if background else self.runner
        return await fetch_exact(self.backend, runner, self.stats, obj, key.start, key.end)


class _ObjectBlocks:
    """The BlockSource of one open object: block indices to keys, lookups to the path."""

    def __init__(self, path: CachedReadPath, obj: ObjectInfo) -> None:
        self.path = path
        self.obj = obj
        self.block_size = path.options.block_size_bytes
        self.gets = 0  # blocks that came from the store (for the time reads wait on it)

    def key(self, index: int) -> BlockKey:
        return block_key(self.path.source, self.obj, self.block_size, index)

    async def fetch_block(self, index: int) -> bytes:
        return await self.path.fetch_block(self.obj, self.key(index), self)

    async def read_block(self, index: int, start: int, end: int) -> ReadBytes:
        return await self.path.read_range(self.obj, self.key(index), start, end, self)


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
        stats = self.path.stats
        stats.count_read(size)
        gets, started = self.blocks.gets, time.perf_counter_ns()
        data = await self.prefetcher.read(offset, size)
        elapsed = time.perf_counter_ns() - started
        stats.read_ns += elapsed
        if self.blocks.gets != gets:  # a GET of this file ended meanwhile: waiting on the store
            stats.store_wait_ns += elapsed
        return data

    async def close(self) -> None:
        self.prefetcher.close()
        if self.path.ahead:  # a block fetched ahead for this file, opened but never read
            self.path.ahead.drop(self.blocks.key(0), unused=False)

    def _consumed(self, index: int, data: bytes) -> None:
        # A block read to its end may be read again soon (another epoch, another reader).
        self.path.hot.put(self.blocks.key(index), data)


async def open_cached_read_path(
    backend: Backend, runner: Runner, source: str, options: CacheOptions,
    files_in: Callable[[str], Iterable[ObjectInfo]] | None = None,
    resolve: Resolve | None = None, key_prefix: str = "",
) -> CachedReadPath:
    """Open the block store (in a worker thread, with the ResidentSetPolicy) and build the
    read path over it.

    Raises ConfigError if the cache directory cannot be used; a full disk only
    warns, and the mount reads uncached.
    """
    disk_runner = Runner(DISK_THREADS, retries=0, abandon=False)
    policy = ResidentSetPolicy(options.max_size_bytes, on_change=_log_policy_change)
    store = await disk_runner.call_once(open_store, options.cache_dir, options.max_size_bytes,
                                        policy)
    if store is not None:  # what blocks may take: the cap counts the index too
        policy.capacity_bytes = max(0, options.max_size_bytes
                                    - await disk_runner.call_once(store.overhead_bytes))
    return CachedReadPath(backend, runner, store, source, options, disk_runner, files_in,
                          resolve, key_prefix)


def _log_policy_change(mode: str, why: str) -> None:
    log.info("block cache: %s (%s)", "keeping its resident set" if mode == "holding"
             else "least recently used blocks evicted first", why)


async def _resolve_nothing(path: str) -> ObjectInfo | None:
    return None
