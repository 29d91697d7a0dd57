"""CachedReadPath: the mount's read path through memory, local disk, then the store.

A block is looked up in the hot tier (memory), then among lookups in flight,
then in the block files kept open (read on the trio thread while their pages
are in memory: cache/openblocks.py), then on local disk (BlockStore, in a
worker thread), and only then fetched with one ranged GET of the whole block.
A file of one block is one lookup, started at open; a larger file's reads go
through its Prefetcher, which reads ahead when they are sequential.

Invariants:
- single flight: concurrent lookups of one block (from any open file, read or
  read-ahead) share one disk read or one GET;
- a block is keyed by the version the file had at open (BlockKey): bytes of two
  versions are never mixed, and a changed object never reads old bytes;
- every blocking call (GETs through the mount's Runner, disk and SQLite through
  a Runner of their own) runs in a worker thread, with one exception: reads of
  block files kept open, whose pages the kernel has in memory (openblocks.py:
  preadv with RWF_NOWAIT, never a wait for the disk). A disk hit reads the
  block's file with no SQLite (BlockStore), and the store's record of hits
  reaches its index in batches, every RECENCY_FLUSH_S;
- one thread hop per cold small block: its disk lookup and its GET run in one
  GET thread when one is free (else the disk lookup first, in a disk thread);
  the block goes to its readers as soon as it is fetched, and to the cache's
  writer thread (cache/writer.py), which writes blocks in batches;
- a block fetched from the store stays in flight (so held, and charged to the
  budget) until the writer reports it written: nobody misses on disk meanwhile
  and fetches it twice. A clean unmount finishes the writes queued, SIGKILL
  loses only them; whether it is written at all is the store's policy's
  decision (policy.py: a stable resident set when an epoch reads more than the
  cache holds);
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
from typing import Protocol

import trio

from objmount import log as logs
from objmount.backends.base import Backend, ObjectInfo
from objmount.backends.runner import Runner, local_runner
from objmount.cache.blockfile import chunk_mask
from objmount.cache.blocks import (
    RECENCY_FLUSH_S,
    BlockKey,
    BlockStore,
    OpenBlock,
    block_key,
    open_store,
)
from objmount.cache.dirahead import DirectoryReadAhead
from objmount.cache.keys import name_of
from objmount.cache.memory import AheadBuffer, HotTier, MemoryBudget
from objmount.cache.openblocks import OpenBlocks
from objmount.cache.orderahead import OrderAhead, Resolve
from objmount.cache.policy import ResidentSetPolicy
from objmount.cache.prefetch import Prefetcher, PrefetchSettings
from objmount.cache.settings import CacheOptions
from objmount.cache.writer import BlockWriter, Outcome, Write
from objmount.readpath_base import ReadBytes, ReadStats, check_exact

log = logging.getLogger(__name__)

# Threads for disk and SQLite work, apart from the GET threads: a cache hit never
# queues behind slow GETs. Four keep a local SSD busy with 1-8 MiB reads.
DISK_THREADS = 4
# A block up to this size is looked up on disk in the GET thread that fetches it if
# it is not there (one hop); a larger one is read in a disk thread (8 MiB takes
# milliseconds: GET threads are for GETs).
SMALL_BLOCK_BYTES = 1 << 20
# How long a GET waits for the writer's queue to shrink (WRITE_BACKLOG): past it, the
# cache disk is taken to be stuck, and blocks fetched are served but not written until
# the queue drains (reads go on at the store's pace; memory stays bounded).
WRITE_BACKLOG_WAIT_S = 5.0
# Block names an open file keeps (computed once, not per read): 8 GiB of 8 MiB blocks.
NAMED_PER_HANDLE = 1024


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
        self.cache_writes_pending = path.writes_pending
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
    """One block being read from disk or fetched; every lookup of it waits here.

    `data` None with no error: a read-ahead found the block on disk already (read it
    from there)."""

    done: trio.Event
    data: bytes | bytearray | None = None
    error: Exception | None = None
    writing: bool = False  # with the writer: it ends the flight
    prefetch: bool = False  # an order's prefetch (orderahead.py)
    claimed: bool = False  # a reader joined it: the buffer need not hold it
    fetched: bool = False  # a GET, not a disk read

    def claim(self, buffer: AheadBuffer, key: BlockKey) -> None:
        """A reader joins: a prefetch is then used (counted in `buffer`), not held. A
        prefetch that ended put its block in `buffer`: the reader takes it out of there
        (or it would be counted used here and unused when the order drops it)."""
        if self.prefetch and not self.claimed and buffer.claim(key) is None:
            buffer.used_files += 1
            buffer.used_bytes += key.length
        self.claimed = True

    async def result_for(self, waiter: "_GetCounter | None") -> bytes | bytearray | None:
        """The block, as `result`; counts in `waiter.gets` that it came from the store."""
        data = await self.result()
        if waiter is not None and self.fetched:
            waiter.gets += 1
        return data

    async def result(self) -> bytes | bytearray | None:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.data


@dataclass(frozen=True, slots=True)
class _Fetched:
    """What one hop to a GET thread did for a block."""

    data: bytes | bytearray | None  # None: on disk already (a read-ahead's check)
    got: bool  # a GET fetched it (else it was read from disk)
    opened: OpenBlock | None  # its file, kept open (read from disk)


def _slice(data: bytes | bytearray, start: int, end: int) -> ReadBytes:
    return data if start == 0 and end == len(data) else memoryview(data)[start:end]


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
        self.disk_runner = disk_runner or local_runner(DISK_THREADS)
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
        self.open_blocks = OpenBlocks()
        self.writer = BlockWriter(store, self._written) if store is not None else None
        self._writes_pending = 0
        self._writes_settled = trio.Event()
        self._writes_settled.set()
        # Bytes queued for the writer: past half the budget, GETs wait (_write_room), so
        # that a store faster than the cache disk cannot fill memory with blocks to write.
        self._write_bytes_pending = 0
        self._write_backlog_bytes = options.max_buffer_memory_bytes // 2
        self._write_room = trio.Event()
        self._write_room.set()
        self._writes_skipped = False  # the queue did not drain in time: not written
        self._flights: dict[BlockKey, _Flight] = {}
        self._nursery: trio.Nursery | None = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host read-ahead and cache writes until cancelled; then finish the writes and
        close the store (its hits are flushed, its writer entry removed)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.store is not None:
                    nursery.start_soon(self._maintain, self.store)
                if self.writer is not None:
                    self.writer.start()
                await nursery.start(self.orders.serve)
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    self._nursery = None
        finally:
            with trio.CancelScope(shield=True):
                if self.writer is not None:  # its last reports run before this returns
                    await self.disk_runner.call_once(self.writer.close)
                self.open_blocks.close()
                if self.store is not None:
                    await self.disk_runner.call_once(self.store.close)

    async def _maintain(self, store: BlockStore) -> None:
        """Every RECENCY_FLUSH_S: write the store's hits to its index (in a disk thread),
        so other processes evict by an order that knows them; let go of kept files that
        any process evicted, so their disk space is freed."""
        while True:
            await trio.sleep(RECENCY_FLUSH_S)
            self.open_blocks.sweep()
            try:
                await self.disk_runner.call_once(store.flush_recency)
            except (OSError, sqlite3.Error) as exc:  # the next flush (or write) retries
                log.debug("cannot write cache hits to the index: %s", exc)

    async def open(self, obj: ObjectInfo, keep_cache: bool = False
                   ) -> "OneBlockHandle | CachedHandle":
        self.orders.opened(obj)
        self.dir_ahead.opened(obj)
        if obj.size <= self.options.block_size_bytes:
            return OneBlockHandle(self, obj, fetch_now=not keep_cache)
        return CachedHandle(self, obj)

    async def fetch_ahead(self, obj: ObjectInfo) -> None:
        """Bring a one-block object into the disk cache unless it is there or on its way."""
        key = self._first_key(obj)
        name = name_of(key)
        if key in self.hot or key in self._flights or name in self.open_blocks:
            return
        flight = self._start_flight(obj, key, name, ahead=True)
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
        self._launch(key, flight, lambda: self._fly_ahead(obj, key, flight))
        await flight.done.wait()
        if flight.error is not None:
            raise flight.error
        return True

    def drop(self, obj: ObjectInfo) -> None:
        self.ahead.drop(self._first_key(obj))

    async def _fly_ahead(self, obj: ObjectInfo, key: BlockKey, flight: _Flight) -> None:
        name = name_of(key)
        data = None
        write = True
        try:
            self.stats.prefetch_gets += 1
            flight.fetched = True
            write = await self._room_to_write()
            data = (await self._fetch(obj, key, name, read_disk=False, present_ok=False,
                                      background=True)).data
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
        if data is not None and write:
            self._store_fetched(key, name, data, flight)

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run `fn` in the background (in serve's nursery)."""
        if self._nursery is None:
            raise RuntimeError("CachedReadPath.serve is not running")
        self._nursery.start_soon(fn)

    # Block lookups (the BlockSource of every open file).

    def lookup_now(self, key: BlockKey, name: str, start: int, end: int) -> ReadBytes | None:
        """Bytes [start, end) of a block from memory (the hot tier, or fetched ahead for an
        order: claimed), or from its file kept open if the kernel has its pages; None if
        none of them. On the trio thread, never waits."""
        data = self.hot.get(key) or self.ahead.claim(key)
        if data is not None:
            self._hit(memory=True)
            return _slice(data, start, end)
        found = self.open_blocks.read(name, key, start, end)
        if found is not None:
            self._hit(memory=False)
            self.stats.fast_disk_hits += 1
            if self.store is not None:
                self.store.note_hit(key, name)
        return found

    def flight_of(self, obj: ObjectInfo, key: BlockKey, name: str,
                  check_disk: bool = True) -> "_Flight":
        """The lookup of a whole block in flight, or a new one (disk unless the caller
        just looked there, then the store)."""
        return self._flights.get(key) or self._start_flight(obj, key, name, ahead=False,
                                                             check_disk=check_disk)

    async def _join(self, flight: _Flight, key: BlockKey, waiter: "_GetCounter | None"
                    ) -> bytes | bytearray | None:
        """A reader's wait for `flight`: claims it if an order fetches it ahead."""
        flight.claim(self.ahead, key)
        return await flight.result_for(waiter)

    async def fetch_block(self, obj: ObjectInfo, key: BlockKey,
                          waiter: "_GetCounter | None" = None, name: str | None = None
                          ) -> bytes | bytearray:
        """Return a whole block: from memory, a file kept open, a lookup in flight, from
        disk, or a GET (counted in `waiter.gets`). `name`: name_of(key), if known."""
        name = name or name_of(key)
        found = self.lookup_now(key, name, 0, key.length)
        if found is not None:
            return bytes(found) if isinstance(found, memoryview) else found  # whole: not one
        data = await self._join(self.flight_of(obj, key, name), key, waiter)
        if data is None:  # a read-ahead's check found it on disk
            data = await self._read_disk(key, name, 0, key.length)
        return data if data is not None else await self._get_now(obj, key, name, waiter)

    async def read_range(
        self, obj: ObjectInfo, key: BlockKey, start: int, end: int,
        waiter: "_GetCounter | None" = None, name: str | None = None,
    ) -> ReadBytes:
        """Return bytes [start, end) of a block, reading only what is needed from disk (a
        GET is counted in `waiter.gets`). `name`: name_of(key), if known."""
        name = name or name_of(key)
        data = self.lookup_now(key, name, start, end)
        if data is not None:
            return data
        flight = self._flights.get(key)
        checked = False
        if flight is None and self.store is not None:
            found = await self._read_disk(key, name, start, end)
            if found is not None:
                return found
            checked = True
            flight = self._flights.get(key)  # another lookup may have started meanwhile
        block = None
        if flight is not None:
            block = await self._join(flight, key, waiter)
        if block is None:
            block = await self._join(self.flight_of(obj, key, name, check_disk=not checked),
                                     key, waiter)
        if block is None:
            block = await self._get_now(obj, key, name, waiter)
        return _slice(block, start, end)

    def _hit(self, *, memory: bool) -> None:
        self.stats.cache_hits += 1
        if memory:
            self.stats.memory_hits += 1
        else:
            self.stats.disk_hits += 1

    def keep_in_memory(self, key: BlockKey, name: str, data: bytes | bytearray) -> None:
        """A block read to its end may be read again soon (another epoch, another reader):
        kept in the hot tier, unless its file is kept open (the page cache holds it) or
        is being written."""
        if name not in self.open_blocks and key not in self._flights:
            self.hot.put(key, data)

    async def _read_disk(self, key: BlockKey, name: str, start: int, end: int
                         ) -> bytes | bytearray | None:
        """Bytes [start, end) of a block from its file, in a disk thread (through the file
        kept open if there is one, else opening it and keeping it); None on a miss."""
        assert self.store is not None
        lent = self.open_blocks.lend(name)
        try:
            data, opened = await self.disk_runner.call_once(
                self.store.read_kept, key, start, end, lent, lent is None)
        finally:
            if lent is not None:
                self.open_blocks.give_back(name, lent)
        if data is None:
            if lent is not None:
                self.open_blocks.drop(name)  # corrupt: the store removed it
            return None
        if opened is not None:
            self.open_blocks.add(name, opened, chunk_mask(start, end))
        else:
            self.open_blocks.note_read(name, chunk_mask(start, end))
        self._hit(memory=False)
        return data

    async def _get_now(self, obj: ObjectInfo, key: BlockKey, name: str,
                       waiter: "_GetCounter | None") -> bytes | bytearray:
        """A GET of the block for a reader whose lookup found it nowhere after all (it was
        evicted between a read-ahead's check and this read)."""
        fetched = await self._fetch(obj, key, name, read_disk=False, present_ok=False)
        assert fetched.data is not None
        if waiter is not None:
            waiter.gets += 1
        return fetched.data

    def _start_flight(self, obj: ObjectInfo, key: BlockKey, name: str, *,
                      ahead: bool, check_disk: bool = True) -> _Flight:
        """Start looking up a whole block; `ahead`: for directory read-ahead, not a reader
        (it only checks the block is on disk); else on disk first if `check_disk`."""
        flight = _Flight(trio.Event())
        self._launch(key, flight, lambda: self._fly(obj, key, name, flight, ahead=ahead,
                                                    check_disk=check_disk))
        return flight

    def _launch(self, key: BlockKey, flight: _Flight, fly: Callable[[], Awaitable[None]]
                ) -> None:
        """Run `fly` in the background as the flight of `key`; the flight ends with it, or
        once written if its block went to the writer."""
        self._flights[key] = flight

        async def run() -> None:
            try:
                await fly()
            finally:
                if not flight.writing and self._flights.get(key) is flight:
                    del self._flights[key]

        self.spawn(run)

    def _get_thread_free(self) -> bool:
        threads = self.runner.priority
        return threads.borrowed_tokens < threads.total_tokens

    async def _fly(self, obj: ObjectInfo, key: BlockKey, name: str, flight: _Flight, *,
                   ahead: bool, check_disk: bool) -> None:
        store = self.store
        fetched = None
        write = True
        try:
            data = None
            read_disk = store is not None and not ahead and check_disk
            if read_disk and (key.length > SMALL_BLOCK_BYTES or not self._get_thread_free()
                              or self._write_backlogged()):
                data = await self._read_disk(key, name, 0, key.length)  # in a disk thread
                read_disk = False
            if data is None:
                write = await self._room_to_write()  # (no wait with read_disk: no backlog)
                fetched = await self._fetch(obj, key, name, read_disk=read_disk,
                                            present_ok=ahead and store is not None,
                                            background=ahead)
                data = fetched.data
                flight.fetched = fetched.got
                if fetched.got:
                    if ahead:
                        self.stats.dir_ahead_gets += 1
                    else:
                        self.stats.cache_misses += 1
                        self.dir_ahead.missed(obj)
            flight.data = data
        except Exception as exc:  # raised in every reader of the block
            flight.error = exc
        finally:
            flight.done.set()
        if fetched is not None and fetched.got and write:
            assert fetched.data is not None
            self._store_fetched(key, name, fetched.data, flight)

    def _store_fetched(self, key: BlockKey, name: str, data: bytes | bytearray,
                       flight: _Flight) -> None:
        """Queue a block just fetched for the writer (which writes it if the store's policy
        admits it); `flight` stays open, and the block charged, until it is written."""
        if self.writer is None:
            return
        self.budget.take(len(data))  # until written (self._written)
        flight.writing = True
        if not self._writes_pending:
            self._writes_settled = trio.Event()
        self._writes_pending += 1
        self._write_bytes_pending += len(data)
        if self._write_backlogged() and self._write_room.is_set():
            self._write_room = trio.Event()
        self.writer.submit(Write(key, name, data, flight))

    def _write_backlogged(self) -> bool:
        return self._write_bytes_pending > self._write_backlog_bytes

    async def _room_to_write(self) -> bool:
        """Wait while the writer's queue holds more than its share of the budget (the
        writer frees it at the cache disk's pace; hits, on disk or in memory, go on).
        False: the queue did not drain within WRITE_BACKLOG_WAIT_S (now, or before, and
        has not since): the block about to be fetched is not to be written."""
        if not self._write_backlogged():
            return True  # every GET asks: no cancel scope unless it waits
        if self._writes_skipped:
            self.stats.cache_writes_skipped += 1
            return False
        self.stats.write_backlog_waits += 1
        with trio.move_on_after(WRITE_BACKLOG_WAIT_S):
            while self._write_backlogged():
                await self._write_room.wait()
            return True
        if self._write_backlogged():
            self._writes_skipped = True
            logs.once(log, logging.WARNING, "write-backlog",
                      "the cache disk is not keeping up: %d blocks have waited over %gs "
                      "to be written; blocks are read from the store but not cached until "
                      "they are", self._writes_pending, WRITE_BACKLOG_WAIT_S)
            self.stats.cache_writes_skipped += 1
            return False
        return True

    @property
    def writes_pending(self) -> int:
        """Blocks fetched and queued for the writer, not yet written (or given up)."""
        return self._writes_pending

    async def writes_settled(self) -> None:
        """Return once every block fetched so far is written to the cache (or given up)."""
        await self._writes_settled.wait()

    def _written(self, outcomes: list[Outcome]) -> None:
        """The writer's report (on the trio thread): keep the files written open, end the
        blocks' flights, give their memory back."""
        for write, stored, opened in outcomes:
            if opened is not None:
                self.open_blocks.add(write.name, opened)
            self.stats.blocks_stored += stored
            self.budget.give(len(write.data))
            self._write_bytes_pending -= len(write.data)
            if self._flights.get(write.key) is write.token:
                del self._flights[write.key]
        self._writes_pending -= len(outcomes)
        if not self._writes_pending:
            self._writes_settled.set()
        if not self._write_backlogged():
            self._write_room.set()
            self._writes_skipped = False

    async def _fetch(self, obj: ObjectInfo, key: BlockKey, name: str, *, read_disk: bool,
                     present_ok: bool, background: bool = False) -> _Fetched:
        """One hop to a GET thread (retried by the runner; `background`: at its background
        priority, after every reader's call): the block from disk if `read_disk`, nothing
        if `present_ok` and it is on disk, else a GET. Counted here, on the trio thread
        (GETs and disk hits; misses are the caller's)."""
        runner = self.runner.background if background else self.runner
        fetched = await runner.call(self._fetch_blocking, obj, key, read_disk, present_ok)
        if fetched.opened is not None:
            self.open_blocks.add(name, fetched.opened)
        if fetched.got:
            assert fetched.data is not None
            self.stats.gets += 1
            self.stats.bytes_fetched += len(fetched.data)
        elif fetched.data is not None:
            self._hit(memory=False)
        return fetched

    def _fetch_blocking(self, obj: ObjectInfo, key: BlockKey, read_disk: bool,
                        present_ok: bool) -> _Fetched:
        """_fetch's work, in a GET thread. Raises what the backend raises, and BackendError
        for an answer of the wrong length."""
        store = self.store
        if read_disk and store is not None:
            data, opened = store.read_kept(key, 0, key.length, keep_open=True)
            if data is not None:
                return _Fetched(data, got=False, opened=opened)
        elif present_ok and store is not None and store.contains(key):
            return _Fetched(None, got=False, opened=None)
        data = self.backend.read(obj.key, key.start, key.end, obj.etag or None)
        check_exact(obj, data, key.start, key.end)
        return _Fetched(data, got=True, opened=None)


class OneBlockHandle:
    """An open file of one block: its lookup starts at open (unless the kernel may hold
    its pages: then at the first read that comes), and its bytes are held for the
    reader (charged to the budget) until a read reaches the end or the file closes."""

    def __init__(self, path: CachedReadPath, obj: ObjectInfo, fetch_now: bool) -> None:
        self.path = path
        self.obj = obj
        self.key = block_key(path.source, obj, path.options.block_size_bytes, 0)
        self.name = name_of(self.key)
        self.gets = 0  # blocks that came from the store (for the time reads wait on it)
        self._flight: _Flight | None = None
        if (fetch_now and obj.size > 0 and self.key not in path.hot
                and self.key not in path.ahead and self.name not in path.open_blocks
                and path.budget.try_take(obj.size)):
            self._flight = path.flight_of(obj, self.key, self.name)
            self._flight.claim(path.ahead, self.key)

    async def read(self, offset: int, size: int) -> ReadBytes:
        path = self.path
        path.stats.count_read(size)
        end = min(offset + size, self.obj.size)
        if end <= offset:
            return b""
        with _ReadTimer(path.stats, self):
            flight = self._flight
            if flight is not None:
                try:
                    data = await flight.result_for(self)
                except Exception:  # the lookup at open failed: a read of its own retries
                    data = None
                if data is not None:
                    if end == len(data):
                        self._let_go(data)
                    return _slice(data, offset, end)
                self._let_go(None)
            return await path.read_range(self.obj, self.key, offset, end, self, self.name)

    async def close(self) -> None:
        flight = self._flight
        if flight is not None:
            self._let_go(flight.data if flight.done.is_set() else None)
        _drop_unread(self.path, self.key)

    def _let_go(self, data: bytes | bytearray | None) -> None:
        """Drop the held lookup (its memory given back); a whole block read goes to the
        hot tier if nothing else keeps it."""
        if self._flight is None:
            return
        self._flight = None
        self.path.budget.give(self.obj.size)
        if data is not None:
            self.path.keep_in_memory(self.key, self.name, data)


def _drop_unread(path: CachedReadPath, key: BlockKey) -> None:
    """A file closes: its first block fetched ahead, if still held, was opened but never
    read (not counted as unused)."""
    if path.ahead:
        path.ahead.drop(key, unused=False)


class _GetCounter(Protocol):
    """A reader that counts the blocks it waited for that came from the store."""

    gets: int


class _ReadTimer:
    """Times one read into `stats.read_ns`, and into `stats.store_wait_ns` if a GET of the
    reader's blocks ended meanwhile (the read waited on the store)."""

    def __init__(self, stats: ReadStats, reader: _GetCounter) -> None:
        self.stats = stats
        self.reader = reader

    def __enter__(self) -> None:
        self.gets = self.reader.gets
        self.started = time.perf_counter_ns()

    def __exit__(self, *_exc: object) -> None:
        elapsed = time.perf_counter_ns() - self.started
        self.stats.read_ns += elapsed
        if self.reader.gets != self.gets:
            self.stats.store_wait_ns += elapsed


class _ObjectBlocks:
    """The BlockSource of one open object: block indices to keys, lookups to the path."""

    def __init__(self, path: CachedReadPath, obj: ObjectInfo) -> None:
        self.path = path
        self.obj = obj
        self.block_size = path.options.block_size_bytes
        self.gets = 0  # blocks that came from the store (for the time reads wait on it)
        self._named: dict[int, tuple[BlockKey, str]] = {}  # computed once per handle

    def key(self, index: int) -> BlockKey:
        return self.named(index)[0]

    def named(self, index: int) -> tuple[BlockKey, str]:
        """Block `index`'s key and file name."""
        found = self._named.get(index)
        if found is None:
            if len(self._named) >= NAMED_PER_HANDLE:
                self._named.clear()
            key = block_key(self.path.source, self.obj, self.block_size, index)
            found = self._named[index] = (key, name_of(key))
        return found

    async def fetch_block(self, index: int) -> bytes | bytearray:
        key, name = self.named(index)
        return await self.path.fetch_block(self.obj, key, self, name)

    async def read_block(self, index: int, start: int, end: int) -> ReadBytes:
        key, name = self.named(index)
        return await self.path.read_range(self.obj, key, start, end, self, name)


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
        with _ReadTimer(stats, self.blocks):
            return await self.prefetcher.read(offset, size)

    async def close(self) -> None:
        self.prefetcher.close()
        _drop_unread(self.path, self.blocks.key(0))

    def _consumed(self, index: int, data: bytes | bytearray) -> None:
        self.path.keep_in_memory(*self.blocks.named(index), data)


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
    disk_runner = local_runner(DISK_THREADS)
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
