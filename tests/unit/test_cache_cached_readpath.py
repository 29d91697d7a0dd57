"""CachedReadPath over an in-process backend: GETs counted, no FUSE."""

import logging
import random
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from objmount.backends.base import ETagMismatch, ObjectInfo
from objmount.backends.runner import Runner
from objmount.cache import blocks, cached_readpath
from objmount.cache.blocks import BlockStore
from objmount.cache.cached_readpath import CachedReadPath
from objmount.cache.settings import CacheOptions
from tests.unit.fake_backend import FakeBackend
from tests.unit.trio_test import trio_test

MiB = 1 << 20
BLOCK = MiB


def content(seed: str, size: int) -> bytes:
    pattern = random.Random(seed).randbytes(65521)
    return (pattern * (size // len(pattern) + 1))[:size]


class CountingBackend(FakeBackend):
    """Counts GETs (ranges); `gate` (a threading.Event) holds every GET until set."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        super().__init__(objects)
        self.gets: list[tuple[str, int, int]] = []
        self.gate: threading.Event | None = None
        self._lock = threading.Lock()

    def read(self, key: str, start: int, end: int, etag: str | None) -> bytes:
        with self._lock:
            self.gets.append((key, start, end))
        if self.gate is not None:
            assert self.gate.wait(10)
        return super().read(key, start, end, etag)


OBJECTS = {
    "big.bin": content("big", 20 * MiB + 5),
    "small.jpg": content("small", 150_000),
    "empty": b"",
}


@pytest.fixture(autouse=True)
def _fresh_log_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blocks.logs, "_logged_once", set())


def options(cache_dir: Path, **overrides: int) -> CacheOptions:
    values = {"block_size_bytes": BLOCK, "read_ahead_bytes": 8 * MiB,
              "max_buffer_memory_bytes": 64 * MiB, "cache_mem_bytes": 16 * MiB,
              "max_size_bytes": 1 << 30} | overrides
    return CacheOptions(cache_dir=cache_dir, **values)


def held_writes(monkeypatch: pytest.MonkeyPatch, timeout_s: float) -> threading.Event:
    """Hold every cache write (BlockStore.put_many, in the writer thread) until the
    returned event is set: a slow or hung cache disk."""
    released = threading.Event()
    put_many = BlockStore.put_many

    def held(store: BlockStore, *args: object, **kwargs: object) -> object:
        assert released.wait(timeout_s)
        return put_many(store, *args, **kwargs)

    monkeypatch.setattr(BlockStore, "put_many", held)
    return released


@asynccontextmanager
async def cached_path(
    backend: CountingBackend, cache_dir: Path | None, **overrides: int
) -> AsyncIterator[CachedReadPath]:
    store = BlockStore(cache_dir, 1 << 30) if cache_dir is not None else None
    opts = options(cache_dir or Path("/nonexistent"), **overrides)
    path = CachedReadPath(backend, Runner(8, retries=0), store, "fake:mem/c", opts)
    async with trio.open_nursery() as nursery:
        await nursery.start(path.serve)
        yield path
        nursery.cancel_scope.cancel()
    if store is not None:
        store.close()


async def read_all(path: CachedReadPath, info: ObjectInfo, chunk: int = 128 * 1024) -> bytes:
    handle = await path.open(info)
    parts = []
    offset = 0
    while data := await handle.read(offset, chunk):
        parts.append(data)
        offset += len(data)
    await handle.close()
    return b"".join(parts)


@trio_test
async def test_a_second_mount_of_the_same_cache_reads_with_zero_gets(tmp_path: Path) -> None:
    backend = CountingBackend(OBJECTS)
    async with cached_path(backend, tmp_path) as path:
        for name in ("big.bin", "small.jpg"):
            assert await read_all(path, backend.info(name)) == OBJECTS[name]
        first_gets = len(backend.gets)
        assert path.stats.gets == first_gets
    # Whole blocks, each fetched once: 21 blocks of big.bin, one of small.jpg.
    assert first_gets == 22
    assert sorted(set(backend.gets)) == sorted(backend.gets)
    backend.gets.clear()
    async with cached_path(backend, tmp_path) as path:
        for name in ("big.bin", "small.jpg"):
            assert await read_all(path, backend.info(name)) == OBJECTS[name]
        assert path.stats.gets == 0
        assert path.stats.cache_misses == 0
        assert path.stats.cache_hits > 0
    assert backend.gets == []


@trio_test
async def test_a_new_etag_never_reads_the_old_bytes(tmp_path: Path) -> None:
    backend = CountingBackend({"obj": content("v1", 3 * MiB)})
    async with cached_path(backend, tmp_path) as path:
        old = backend.info("obj")
        assert await read_all(path, old) == content("v1", 3 * MiB)
        backend.objects["obj"] = content("v2", 3 * MiB)
        new = backend.info("obj")
        assert new.etag != old.etag
        backend.gets.clear()
        assert await read_all(path, new) == content("v2", 3 * MiB)
        assert len(backend.gets) == 3
        # A file still open on the old version fails rather than mix versions.
        with pytest.raises(ETagMismatch):
            await read_all(path, ObjectInfo("obj", 3 * MiB, "some-old-etag", 1))


@trio_test
async def test_concurrent_readers_of_one_block_share_one_get(tmp_path: Path) -> None:
    backend = CountingBackend(OBJECTS)
    backend.gate = threading.Event()
    info = backend.info("big.bin")
    results: list[bytes] = []
    async with cached_path(backend, tmp_path) as path:

        async def reader(offset: int) -> None:
            handle = await path.open(info)
            results.append(bytes(await handle.read(offset, 4096)))
            await handle.close()

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(reader, 5 * MiB + i * 4096)
            await trio.sleep(0.2)
            backend.gate.set()
        assert sorted(results) == sorted(
            OBJECTS["big.bin"][5 * MiB + i * 4096 : 5 * MiB + (i + 1) * 4096] for i in range(20)
        )
        assert backend.gets == [("big.bin", 5 * MiB, 6 * MiB)]


@trio_test
async def test_a_small_file_is_fetched_at_open_with_one_get(tmp_path: Path) -> None:
    backend = CountingBackend(OBJECTS)
    backend.gate = threading.Event()
    async with cached_path(backend, tmp_path) as path:
        handle = await path.open(backend.info("small.jpg"))
        await trio.sleep(0.1)
        assert backend.gets == [("small.jpg", 0, 150_000)]  # before any read
        backend.gate.set()
        assert await handle.read(0, 1 << 20) == OBJECTS["small.jpg"]
        await handle.close()
        assert len(backend.gets) == 1
        assert await read_all(path, backend.info("empty")) == b""


@trio_test
async def test_random_reads_fetch_only_the_blocks_they_touch(tmp_path: Path) -> None:
    backend = CountingBackend(OBJECTS)
    info = backend.info("big.bin")
    rng = random.Random(3)
    async with cached_path(backend, tmp_path) as path:
        handle = await path.open(info)
        touched = set()
        for _ in range(30):
            offset = rng.randrange(info.size - 65536)
            assert await handle.read(offset, 65536) == OBJECTS["big.bin"][offset : offset + 65536]
            touched |= {offset // BLOCK, (offset + 65535) // BLOCK}
        await handle.close()
        assert {start // BLOCK for _, start, _ in backend.gets} == touched


@trio_test
async def test_a_corrupt_block_on_disk_is_refetched(tmp_path: Path) -> None:
    backend = CountingBackend(OBJECTS)
    info = backend.info("small.jpg")
    async with cached_path(backend, tmp_path) as path:
        assert await read_all(path, info) == OBJECTS["small.jpg"]
    (block_file,) = tmp_path.rglob("*.blk")
    raw = bytearray(block_file.read_bytes())
    raw[5000] ^= 0x01
    block_file.write_bytes(bytes(raw))
    backend.gets.clear()
    async with cached_path(backend, tmp_path) as path:
        assert await read_all(path, info) == OBJECTS["small.jpg"]
        assert path.stats.as_dict()["corrupt_blocks"] == 1
        assert len(backend.gets) == 1
    backend.gets.clear()
    async with cached_path(backend, tmp_path) as path:  # stored again, intact
        assert await read_all(path, info) == OBJECTS["small.jpg"]
    assert backend.gets == []


@trio_test
async def test_a_full_cache_disk_degrades_to_uncached_reads_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    backend = CountingBackend(OBJECTS)
    attempts: list[str] = []
    paused = threading.Event()

    def disk_full(*_args: object, **_kwargs: object) -> None:
        attempts.append("write")
        raise OSError(28, "No space left on device")

    original_failed = BlockStore._write_failed

    def write_failed(store: BlockStore, exc: BaseException) -> None:
        original_failed(store, exc)
        paused.set()

    monkeypatch.setattr(blocks, "write_block", disk_full)
    monkeypatch.setattr(BlockStore, "_write_failed", write_failed)
    with caplog.at_level(logging.WARNING):
        async with cached_path(backend, tmp_path) as path:
            assert await read_all(path, backend.info("big.bin")) == OBJECTS["big.bin"]
            # Writes run behind the reads; those already under way may fail too.
            assert await trio.to_thread.run_sync(paused.wait, 10)
            tried = len(attempts)
            for name in ("small.jpg", "big.bin"):
                assert await read_all(path, backend.info(name)) == OBJECTS[name]
            assert len(attempts) == tried  # paused: no write is tried
        assert path.stats.as_dict()["cache_write_errors"] == tried >= 1
    assert caplog.text.count("disk is full") == 1


@trio_test
async def test_without_a_store_reads_still_work(tmp_path: Path) -> None:
    backend = CountingBackend(OBJECTS)
    async with cached_path(backend, None) as path:
        assert await read_all(path, backend.info("big.bin")) == OBJECTS["big.bin"]
        assert await read_all(path, backend.info("small.jpg")) == OBJECTS["small.jpg"]


@trio_test
async def test_sequential_reads_are_served_by_parallel_read_ahead(tmp_path: Path) -> None:
    backend = CountingBackend(OBJECTS)
    in_flight = []
    active = 0
    lock = threading.Lock()
    original: Callable[..., bytes] = backend.read

    def slow_read(key: str, start: int, end: int, etag: str | None) -> bytes:
        nonlocal active
        with lock:
            active += 1
            in_flight.append(active)
        try:
            threading.Event().wait(0.02)
            return original(key, start, end, etag)
        finally:
            with lock:
                active -= 1

    backend.read = slow_read  # type: ignore[method-assign]
    async with cached_path(backend, tmp_path) as path:
        assert await read_all(path, backend.info("big.bin"), chunk=MiB) == OBJECTS["big.bin"]
        assert max(in_flight) > 2  # blocks ahead were fetched in parallel
        assert path.budget.used_bytes <= path.budget.max_bytes
    assert len(backend.gets) == 21


@trio_test
async def test_gets_wait_while_blocks_to_write_hold_half_the_memory_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store faster than the cache disk: blocks fetched wait in memory to be written,
    and past half the budget (4 of 8 MiB) new GETs wait for the writer. Nothing is lost:
    once the disk catches up, the read completes, exact, and every block is stored."""
    backend = CountingBackend(OBJECTS)
    disk_stuck = held_writes(monkeypatch, 10)
    monkeypatch.setattr(cached_readpath, "WRITE_BACKLOG_WAIT_S", 60.0)  # slow, not stuck
    async with cached_path(backend, tmp_path, max_buffer_memory_bytes=8 * MiB,
                           read_ahead_bytes=2 * BLOCK, cache_mem_bytes=0) as path:
        result: list[bytes] = []

        async def reader() -> None:
            result.append(await read_all(path, backend.info("big.bin")))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            with trio.fail_after(10):
                while not path.stats.write_backlog_waits:
                    await trio.testing.wait_all_tasks_blocked()
            # 4 MiB queued, and at most the GETs in flight when it got there (the
            # block read and the 2 MiB read-ahead window) over it.
            assert 4 < path.writes_pending <= 4 + 3
            assert len(backend.gets) == path.writes_pending
            disk_stuck.set()
        assert result == [OBJECTS["big.bin"]]
        await path.writes_settled()
        assert path.stats.blocks_stored == 21


@trio_test
async def test_a_stuck_cache_disk_makes_reads_go_on_uncached_after_a_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer's queue does not drain (a hung cache disk): GETs wait for it up to
    WRITE_BACKLOG_WAIT_S once, then reads go on at the store's pace, their blocks not
    written (memory bounded), with one warning. Once the disk drains, blocks are
    written again."""
    backend = CountingBackend(OBJECTS)
    disk_stuck = held_writes(monkeypatch, 30)
    monkeypatch.setattr(cached_readpath, "WRITE_BACKLOG_WAIT_S", 0.2)
    with caplog.at_level(logging.WARNING):
        async with cached_path(backend, tmp_path, max_buffer_memory_bytes=8 * MiB,
                               read_ahead_bytes=2 * BLOCK, cache_mem_bytes=0) as path:
            with trio.fail_after(20):
                assert await read_all(path, backend.info("big.bin")) == OBJECTS["big.bin"]
            assert path.writes_pending <= 4 + 3  # as without the deadline
            skipped = path.stats.cache_writes_skipped
            assert skipped >= 21 - 7
            disk_stuck.set()
            await path.writes_settled()
            assert await read_all(path, backend.info("small.jpg")) == OBJECTS["small.jpg"]
            await path.writes_settled()
            assert path.stats.cache_writes_skipped == skipped
            assert path.stats.blocks_stored == 21 - skipped + 1
    assert caplog.text.count("the cache disk is not keeping up") == 1
