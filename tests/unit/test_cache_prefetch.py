"""Read-ahead with a fake block source: window growth, random reads, the global budget."""

import random

import pytest
import trio

from objmount.backends.base import BackendError
from objmount.backends.deadline import DeadlineExceeded
from objmount.cache.memory import HotTier, MemoryBudget
from objmount.cache.prefetch import Prefetcher, PrefetchSettings
from tests.unit.trio_test import trio_test

MiB = 1 << 20
BLOCK = MiB


def content(size: int) -> bytes:
    """`size` bytes in which no two blocks are equal (a pattern of prime length)."""
    pattern = random.Random(size).randbytes(65521)
    return (pattern * (size // len(pattern) + 1))[:size]


class FakeSource:
    """Blocks of one object from memory; records every call; `gate` holds fetches back."""

    def __init__(self, data: bytes, block_size: int = BLOCK) -> None:
        self.data = data
        self.block_size = block_size
        self.fetched: list[int] = []
        self.ranges: list[tuple[int, int, int]] = []
        self.gate: trio.Event | None = None
        self.fail_fetch: Exception | None = None

    async def fetch_block(self, index: int) -> bytes:
        self.fetched.append(index)
        if self.gate is not None:
            await self.gate.wait()
        await trio.sleep(0)
        if self.fail_fetch is not None:
            raise self.fail_fetch
        return self.data[index * self.block_size : (index + 1) * self.block_size]

    async def read_block(self, index: int, start: int, end: int) -> bytes:
        self.ranges.append((index, start, end))
        await trio.sleep(0)
        base = index * self.block_size
        return self.data[base + start : base + end]


def make(
    nursery: trio.Nursery, size: int, budget: MemoryBudget | None = None,
    max_window: int = 64 * MiB,
) -> tuple[Prefetcher, FakeSource]:
    source = FakeSource(content(size))
    prefetcher = Prefetcher(
        size, source, budget or MemoryBudget(1 << 40), nursery.start_soon,
        PrefetchSettings(block_size_bytes=BLOCK, max_window_bytes=max_window),
    )
    return prefetcher, source


@trio_test
async def test_sequential_reads_grow_the_window_up_to_the_cap() -> None:
    async with trio.open_nursery() as nursery:
        prefetcher, source = make(nursery, 200 * MiB, max_window=16 * MiB)
        windows = []
        for offset in range(0, 40 * MiB, 128 * 1024):
            assert await prefetcher.read(offset, 128 * 1024) == \
                source.data[offset : offset + 128 * 1024]
            windows.append(prefetcher.window_bytes)
        assert windows[:7] == [0, 1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB, 16 * MiB, 16 * MiB]
        assert max(windows) == 16 * MiB
        # Blocks ahead were requested whole, once each, up to one window past the last read.
        assert sorted(source.fetched) == sorted(set(source.fetched))
        assert max(source.fetched) == (40 * MiB + 16 * MiB) // BLOCK - 1
        assert source.ranges == [(0, 0, 128 * 1024)]  # the first read: no streak yet
        prefetcher.close()


@trio_test
async def test_random_reads_trigger_no_read_ahead() -> None:
    async with trio.open_nursery() as nursery:
        prefetcher, source = make(nursery, 256 * MiB)
        rng = random.Random(1)
        for _ in range(200):
            offset = rng.randrange(8 * MiB, 256 * MiB - 65536)
            assert await prefetcher.read(offset, 65536) == source.data[offset : offset + 65536]
        # Only the ranges asked for: no whole block, no window.
        assert source.fetched == []
        assert len(source.ranges) >= 200
        assert prefetcher.window_bytes == 0
        prefetcher.close()


@trio_test
async def test_a_random_read_closes_the_window_and_drops_what_was_held() -> None:
    budget = MemoryBudget(1 << 40)
    async with trio.open_nursery() as nursery:
        prefetcher, _ = make(nursery, 100 * MiB, budget=budget)
        for offset in range(0, 8 * MiB, MiB):
            await prefetcher.read(offset, MiB)
        assert prefetcher.held_blocks()
        await prefetcher.read(90 * MiB, 4096)
        assert prefetcher.window_bytes == 0
        await trio.sleep(0.01)  # let read-ahead in flight land and give back its memory
        assert prefetcher.held_blocks() == []
        assert budget.used_bytes == 0


@trio_test
async def test_reads_across_block_boundaries_and_past_the_end() -> None:
    async with trio.open_nursery() as nursery:
        size = 5 * MiB + 123
        prefetcher, source = make(nursery, size)
        assert await prefetcher.read(MiB - 10, 20) == source.data[MiB - 10 : MiB + 10]
        assert await prefetcher.read(0, 10 * MiB) == source.data
        assert await prefetcher.read(size - 5, 100) == source.data[-5:]
        assert await prefetcher.read(size, 100) == b""
        prefetcher.close()


@trio_test
async def test_a_small_object_is_fetched_whole_at_open_and_read_from_that_fetch() -> None:
    async with trio.open_nursery() as nursery:
        prefetcher, source = make(nursery, 150_000)
        prefetcher.start_whole()
        await trio.sleep(0.01)
        assert source.fetched == [0]
        assert await prefetcher.read(0, 128 * 1024) == source.data[: 128 * 1024]
        assert await prefetcher.read(128 * 1024, 128 * 1024) == source.data[128 * 1024 :]
        assert source.fetched == [0]
        assert source.ranges == []


@trio_test
async def test_a_failed_read_ahead_falls_back_to_a_ranged_read() -> None:
    async with trio.open_nursery() as nursery:
        prefetcher, source = make(nursery, 10 * MiB)
        source.fail_fetch = OSError("read-ahead failed")
        assert await prefetcher.read(0, MiB) == source.data[:MiB]
        assert await prefetcher.read(MiB, MiB) == source.data[MiB : 2 * MiB]
        assert source.ranges  # served by ranged reads
        prefetcher.close()


@trio_test
async def test_a_read_ahead_the_store_failed_is_not_fetched_a_second_time() -> None:
    """The runner retried it within its deadline already: a lasting outage is one retry
    cycle per read, not two. A deadline, though, may be another read's: tried again."""
    async with trio.open_nursery() as nursery:
        prefetcher, source = make(nursery, MiB)  # one block: fetched whole at open
        source.fail_fetch = BackendError("store down", transient=True)
        prefetcher.start_whole()
        with pytest.raises(BackendError, match="store down"):
            await prefetcher.read(0, MiB)
        assert source.ranges == []
        prefetcher2, source2 = make(nursery, MiB)
        source2.fail_fetch = DeadlineExceeded("the read that started it ran out of time")
        prefetcher2.start_whole()
        assert await prefetcher2.read(0, MiB) == source2.data
        assert source2.ranges == [(0, 0, MiB)]
        prefetcher.close()
        prefetcher2.close()


@trio_test
async def test_under_memory_pressure_windows_shrink_and_reads_still_succeed() -> None:
    budget = MemoryBudget(3 * BLOCK)
    async with trio.open_nursery() as nursery:
        prefetcher, source = make(nursery, 64 * MiB, budget=budget)
        windows = []
        for offset in range(0, 64 * MiB, MiB):
            assert await prefetcher.read(offset, MiB) == source.data[offset : offset + MiB]
            assert budget.used_bytes <= 3 * BLOCK
            windows.append(prefetcher.window_bytes)
        assert budget.peak_bytes <= 3 * BLOCK
        # Far from the end, the window is what the budget holds, not the 64 MiB cap.
        assert max(windows[:48]) <= 3 * BLOCK
        prefetcher.close()


@trio_test
async def test_with_no_budget_at_all_reads_still_succeed_with_ranged_reads() -> None:
    budget = MemoryBudget(0)
    async with trio.open_nursery() as nursery:
        prefetcher, source = make(nursery, 8 * MiB, budget=budget)
        assert await prefetcher.read(0, 8 * MiB) == source.data
        assert source.fetched == []
        assert budget.peak_bytes == 0


@trio_test
async def test_a_thousand_open_files_share_one_memory_budget() -> None:
    """1,000 files read sequentially at once: memory stays under the one global cap."""
    cap = 32 * MiB
    budget = MemoryBudget(cap)
    HotTier(budget, 8 * MiB)
    size = 16 * MiB
    async with trio.open_nursery() as nursery:
        source_data = content(size)
        files = []
        for _ in range(1000):
            source = FakeSource(source_data)
            files.append(Prefetcher(size, source, budget, nursery.start_soon,
                                    PrefetchSettings(BLOCK, 64 * MiB)))

        async def read_all(prefetcher: Prefetcher) -> None:
            for offset in range(0, 4 * MiB, 256 * 1024):
                data = await prefetcher.read(offset, 256 * 1024)
                assert data == source_data[offset : offset + 256 * 1024]

        async with trio.open_nursery() as readers:
            for prefetcher in files:
                readers.start_soon(read_all, prefetcher)
        assert budget.peak_bytes <= cap
        for prefetcher in files:
            prefetcher.close()
    # Without the global budget each file would have held its 64 MiB window.
    assert budget.used_bytes == 0


@trio_test
async def test_closing_while_read_ahead_is_in_flight_gives_all_memory_back() -> None:
    budget = MemoryBudget(1 << 40)
    async with trio.open_nursery() as nursery:
        prefetcher, source = make(nursery, 100 * MiB, budget=budget)
        await prefetcher.read(0, MiB)
        source.gate = trio.Event()
        nursery.start_soon(prefetcher.read, MiB, MiB)
        await trio.sleep(0.01)
        assert budget.used_bytes > 0
        prefetcher.close()
        source.gate.set()
    assert budget.used_bytes == 0


def test_hot_tier_gives_memory_back_to_read_ahead() -> None:
    budget = MemoryBudget(4 * MiB)
    hot = HotTier(budget, 3 * MiB)
    for i in range(3):
        assert hot.put(i, bytes(MiB))
    assert hot.put(3, bytes(MiB))  # over its own cap: the oldest goes
    assert hot.get(0) is None and hot.get(3) is not None
    assert budget.used_bytes == 3 * MiB
    assert budget.try_take(3 * MiB)  # read-ahead wins over the hot tier
    assert hot.used_bytes <= MiB
    assert budget.used_bytes <= 4 * MiB
    assert not budget.try_take(2 * MiB)
    budget.take(2 * MiB)  # a read in flight may overdraw
    assert budget.used_bytes > budget.max_bytes
