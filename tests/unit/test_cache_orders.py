"""Orders through CachedReadPath, over an in-process backend: GETs ahead in the order, the
buffer of blocks fetched ahead, demand before prefetch, the cache policy. No FUSE."""

import random
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from objmount.backends.base import ObjectInfo
from objmount.backends.runner import Runner
from objmount.cache.blocks import BlockStore
from objmount.cache.cached_readpath import CachedReadPath
from objmount.cache.policy import ResidentSetPolicy
from objmount.cache.settings import CacheOptions
from tests.unit.test_cache_cached_readpath import CountingBackend, held_writes, read_all
from tests.unit.trio_test import trio_test

MiB = 1 << 20
FILES = {f"train/class_{i % 4}/img_{i:04d}.jpg": random.Random(i).randbytes(5000 + i)
         for i in range(60)}


@asynccontextmanager
async def orders_path(backend: CountingBackend, cache_dir: Path, *, threads: int = 8,
                      max_size: int = 1 << 30, **options: int) -> AsyncIterator[CachedReadPath]:
    async def resolve(path: str) -> ObjectInfo | None:
        return backend.info(path) if path in backend.objects else None

    def files_in(prefix: str) -> list[ObjectInfo]:
        return [backend.info(k) for k in backend.objects
                if k.startswith(prefix) and "/" not in k[len(prefix):]]

    policy = ResidentSetPolicy(max_size)
    store = BlockStore(cache_dir, max_size, policy)
    opts = CacheOptions(cache_dir=cache_dir, max_size_bytes=max_size, block_size_bytes=MiB,
                        read_ahead_bytes=4 * MiB, max_buffer_memory_bytes=64 * MiB,
                        cache_mem_bytes=0, **options)
    path = CachedReadPath(backend, Runner(threads, retries=0), store, "fake:mem/c", opts,
                          files_in=files_in, resolve=resolve)
    async with trio.open_nursery() as nursery:
        await nursery.start(path.serve)
        yield path
        nursery.cancel_scope.cancel()
    store.close()


def order_of(keys: list[str]) -> bytes:
    return "\n".join(keys).encode()


async def until(condition: Callable[[], bool], timeout_s: float = 30) -> None:
    """Wait until `condition()` holds (GETs run in threads, which trio cannot wait for)."""
    with trio.fail_after(timeout_s):
        while not condition():
            await trio.sleep(0.005)


async def wait_for_prefetch(path: CachedReadPath, files: int) -> None:
    """Until `files` files were fetched ahead and no GET ahead is in flight."""
    await until(lambda: path.orders.gets_started >= files and path.orders.in_flight == 0)
    await trio.testing.wait_all_tasks_blocked()


@trio_test
async def test_an_order_is_fetched_ahead_in_order_and_its_opens_need_no_get(
    tmp_path: Path,
) -> None:
    backend = CountingBackend(FILES)
    order = random.Random(1).sample(sorted(FILES), len(FILES))
    async with orders_path(backend, tmp_path, order_ahead=1) as path:
        path.orders.publish("rank0", order_of(order))
        await wait_for_prefetch(path, len(order))
        assert [key for key, _, _ in backend.gets] == order
        assert path.stats.prefetch_gets == len(order)
        for key in order:
            assert await read_all(path, backend.info(key)) == FILES[key]
        stats = path.stats.as_dict()
    assert len(backend.gets) == len(order)
    assert stats["prefetch_used_files"] == len(order)
    assert stats["prefetch_unused_files"] == stats["prefetch_unused_bytes"] == 0
    assert stats["prefetch_buffer_bytes"] == 0 and stats["orders"] == 0


@trio_test
async def test_files_fetched_ahead_and_never_opened_are_counted_unused(tmp_path: Path) -> None:
    backend = CountingBackend(FILES)
    order = sorted(FILES)
    async with orders_path(backend, tmp_path) as path:
        path.orders.publish("rank0", order_of(order[:10]))
        await wait_for_prefetch(path, 10)
        for key in order[:4]:
            assert await read_all(path, backend.info(key)) == FILES[key]
        path.orders.publish("rank0", order_of(order[20:30]))  # the next epoch, say
        await wait_for_prefetch(path, 20)
        stats = path.stats.as_dict()
    assert stats["prefetch_used_files"] == 4
    assert stats["prefetch_unused_files"] == 6
    assert stats["prefetch_unused_bytes"] == sum(len(FILES[k]) for k in order[4:10])
    # bench.train reads the first counter with "unused" in its name that ends in "bytes".
    assert next(k for k in stats if "unused" in k and k.endswith("bytes")) == (
        "prefetch_unused_bytes")


@trio_test
async def test_a_file_closed_unread_while_its_prefetch_runs_leaves_nothing_in_the_buffer(
    tmp_path: Path,
) -> None:
    backend = CountingBackend(FILES)
    backend.gate = threading.Event()
    key = sorted(FILES)[0]
    async with orders_path(backend, tmp_path) as path:
        path.orders.publish("rank0", order_of([key]))
        await until(lambda: len(backend.gets) == 1)
        handle = await path.open(backend.info(key))  # served by the page cache: no read
        await handle.close()
        backend.gate.set()
        await wait_for_prefetch(path, 1)
        stats = path.stats.as_dict()
    assert stats["prefetch_buffer_bytes"] == 0
    assert stats["prefetch_unused_files"] == 0


@trio_test
async def test_a_readers_miss_goes_before_the_prefetches_waiting_for_a_thread(
    tmp_path: Path,
) -> None:
    backend = CountingBackend(FILES | {"other.bin": b"x" * 1000})
    backend.gate = threading.Event()
    order = sorted(FILES)
    async with orders_path(backend, tmp_path, threads=4, order_ahead=12) as path:
        path.orders.publish("rank0", order_of(order))
        await until(lambda: len(backend.gets) == 3)  # three threads of four: the background's
        await trio.testing.wait_all_tasks_blocked()
        handle = await path.open(backend.info("other.bin"))
        await until(lambda: len(backend.gets) == 4)
        assert backend.gets[3][0] == "other.bin"
        backend.gate.set()
        assert await handle.read(0, 4096) == b"x" * 1000
        await handle.close()


@trio_test
async def test_directory_read_ahead_is_off_while_an_order_is_active(tmp_path: Path) -> None:
    backend = CountingBackend(FILES)
    order = sorted(FILES)
    async with orders_path(backend, tmp_path) as path:
        path.orders.publish("rank0", order_of(order[:2]))
        await wait_for_prefetch(path, 2)
        for key in order[30:34]:  # cold opens in one directory would start it
            assert await read_all(path, backend.info(key)) == FILES[key]
        await trio.testing.wait_all_tasks_blocked()
        assert path.dir_ahead.fetches_started == 0
        assert path.stats.dir_ahead_gets == 0


@trio_test
async def test_an_epoch_larger_than_the_cache_keeps_the_resident_set_and_reads_from_memory(
    tmp_path: Path,
) -> None:
    """The order's estimated bytes exceed the cache: the first files fill it, the rest are
    served from the buffer without being written."""
    backend = CountingBackend(FILES)
    order = sorted(FILES)
    async with orders_path(backend, tmp_path) as path:
        room = sum(len(v) for v in FILES.values()) // 4
        path.policy.capacity_bytes = room
        path.store.max_size_bytes = path.store.overhead_bytes() + room
        path.orders.publish("rank0", order_of(order))
        await until(lambda: path.policy.mode == "holding")
        for key in order:
            assert await read_all(path, backend.info(key)) == FILES[key]
        await path.writes_settled()  # writes go on behind the reads
        stats = path.stats.as_dict()
    # Each file fetched once: ahead (most), or by its reader if it came first.
    assert len(backend.gets) == len(order)
    assert stats["prefetch_used_files"] + stats["cache_misses"] == len(order)
    assert stats["prefetch_used_files"] > len(order) // 2
    assert stats["blocks_stored"] < len(order) and stats["cache_not_admitted"] > 0


@trio_test
async def test_a_reader_joining_a_prefetch_whose_block_is_being_written_uses_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The prefetch's block is in the buffer while its flight stays open for the disk
    write; a reader that opens then joins the flight: the file counts as used, never
    also as unused when its order ends."""
    backend = CountingBackend(FILES)
    key = sorted(FILES)[0]
    written = held_writes(monkeypatch, 30)
    async with orders_path(backend, tmp_path) as path:
        path.orders.publish("rank0", order_of([key]))
        await until(lambda: len(path.ahead) == 1)  # fetched, in the buffer, not on disk
        assert await read_all(path, backend.info(key)) == FILES[key]
        written.set()
        await until(lambda: path.stats.as_dict()["orders"] == 0)
        stats = path.stats.as_dict()
    assert len(backend.gets) == 1
    assert (stats["prefetch_used_files"], stats["prefetch_unused_files"]) == (1, 0)
