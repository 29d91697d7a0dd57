"""The fast path: block files kept open, read on the trio thread only while their pages are
in memory, and never served once changed, corrupt, replaced or removed."""

import ctypes
import mmap
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import pytest

from objmount.cache import blockfile, blocks, openblocks
from objmount.cache.blockfile import header
from objmount.cache.blocks import OpenBlock
from objmount.cache.cached_readpath import CachedReadPath
from objmount.cache.keys import BlockKey, block_key, key_digest, name_of
from objmount.cache.openblocks import OpenBlocks
from tests.unit.test_cache_cached_readpath import (
    OBJECTS,
    CountingBackend,
    cached_path,
    content,
    read_all,
)
from tests.unit.trio_test import trio_test

SMALL = "small.jpg"


@pytest.fixture(autouse=True)
def _fresh_log_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blocks.logs, "_logged_once", set())


def small_key(path: CachedReadPath, backend: CountingBackend) -> BlockKey:
    return block_key(path.source, backend.info(SMALL), path.options.block_size_bytes, 0)


def block_file(path: CachedReadPath, key: BlockKey) -> Path:
    assert path.store is not None
    return Path(path.store.path_of(key))


async def read_small(path: CachedReadPath, backend: CountingBackend) -> bytes:
    """A read that reaches the read path (as after the kernel dropped its pages)."""
    obj = backend.info(SMALL)
    handle = await path.open(obj, keep_cache=True)
    try:
        return bytes(await handle.read(0, obj.size))
    finally:
        await handle.close()


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_MAP_FAILED = ctypes.c_void_p(-1).value


def page_residency(fd: int, offset: int = 0, size: int | None = None) -> list[bool]:
    """Whether each page of the file's range (all of it by default) is in the page cache:
    mincore over a mapping that is never touched, so asking faults nothing in."""
    page = mmap.PAGESIZE
    start = offset // page * page
    length = (os.fstat(fd).st_size if size is None else offset + size) - start
    if length <= 0:
        return []
    addr = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, start)
    if addr == _MAP_FAILED:
        raise OSError(ctypes.get_errno(), "mmap")
    try:
        vec = ctypes.create_string_buffer(-(-length // page))
        if _libc.mincore(addr, length, vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore")
        return [bool(byte & 1) for byte in vec.raw]
    finally:
        _libc.munmap(addr, length)


def drop_pages(file: Path, tries: int = 100) -> None:
    """Evict a block file's pages from the page cache (written back first).

    DONTNEED skips pages locked at that instant, which a loaded machine makes likely, so
    it is repeated until mincore shows none resident."""
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
        for _ in range(tries):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            if not any(page_residency(fd)):
                return
        raise AssertionError(f"{file}: pages still resident after {tries} DONTNEEDs")
    finally:
        os.close(fd)


@pytest.fixture
def strict_nowait(monkeypatch: pytest.MonkeyPatch) -> None:
    """RWF_NOWAIT as the fast path assumes it at worst: a range not wholly in the page
    cache is EAGAIN. The kernel's own answers to a miss after a drop (read-ahead started
    by the attempt, served by it if that I/O ends first, which a fast disk under load
    makes happen) would make which path a read takes a race."""
    real = openblocks.pread_nowait

    def strict(fd: int, size: int, offset: int) -> bytearray:
        if not all(page_residency(fd, offset, size)):
            raise BlockingIOError("not all in the page cache")
        return real(fd, size, offset)

    monkeypatch.setattr(openblocks, "pread_nowait", strict)


def rename_over(file: Path, contents: bytes) -> None:
    """Put `contents` at `file` as a new inode renamed over it (as another process would)."""
    new = file.with_name(".new")
    new.write_bytes(contents)
    os.rename(new, file)


@asynccontextmanager
async def warmed(tmp_path: Path) -> AsyncIterator[tuple[CachedReadPath, CountingBackend]]:
    """A read path whose cache holds the small file, its block file kept open."""
    backend = CountingBackend(OBJECTS)
    async with cached_path(backend, tmp_path, cache_mem_bytes=0) as path:
        assert await read_small(path, backend) == OBJECTS[SMALL]
        await path.writes_settled()
        assert name_of(small_key(path, backend)) in path.open_blocks
        yield path, backend


@trio_test
async def test_a_block_just_written_is_read_again_on_the_trio_thread(tmp_path: Path) -> None:
    async with warmed(tmp_path) as (path, backend):
        assert await read_small(path, backend) == OBJECTS[SMALL]
        stats = path.stats.as_dict()
        assert stats["fast_disk_hits"] == 1
        assert backend.gets == [(SMALL, 0, len(OBJECTS[SMALL]))]


@trio_test
async def test_pages_not_in_memory_are_read_in_a_thread_instead(
    tmp_path: Path, strict_nowait: None,
) -> None:
    async with warmed(tmp_path) as (path, backend):
        drop_pages(block_file(path, small_key(path, backend)))
        assert await read_small(path, backend) == OBJECTS[SMALL]
        stats = path.stats.as_dict()
        assert stats["fast_disk_hits"] == 0 and stats["disk_hits"] == 1
        assert path.open_blocks.not_cached == 1
        assert len(backend.gets) == 1


def test_a_nowait_read_of_dropped_pages_is_eagain_or_the_right_bytes(tmp_path: Path) -> None:
    """On the real kernel: never a wait and never other bytes (whether the read-ahead it
    starts is done in time is the kernel's race)."""
    file = tmp_path / "f"
    contents = os.urandom(256 << 10)
    file.write_bytes(contents)
    drop_pages(file)
    fd = os.open(file, os.O_RDONLY)
    try:
        with suppress(BlockingIOError):
            assert blockfile.pread_nowait(fd, 64 << 10, 100 << 10) == contents[100 << 10:164 << 10]
    finally:
        os.close(fd)


@trio_test
async def test_after_the_kernel_dropped_a_files_pages_only_chunks_read_since_are_tried(
    tmp_path: Path, strict_nowait: None,
) -> None:
    """One failed RWF_NOWAIT per file, not one per read: random 64 KiB reads of a block
    whose pages were dropped go to a thread, except of the chunks read there since."""
    backend = CountingBackend(OBJECTS)
    big = backend.info("big.bin")
    async with cached_path(backend, tmp_path, cache_mem_bytes=0, read_ahead_bytes=0) as path:
        assert await read_all(path, big) == OBJECTS["big.bin"]
        await path.writes_settled()
        key = block_key(path.source, big, path.options.block_size_bytes, 0)
        drop_pages(block_file(path, key))
        chunk = 64 << 10
        for index in (2, 5, 2, 5, 9):
            offset = index * chunk + 100
            handle = await path.open(big)  # each read its own: none from the last one's
            assert await handle.read(offset, chunk) == OBJECTS["big.bin"][offset:offset + chunk]
            await handle.close()
        blocks_open = path.open_blocks
        assert blocks_open.not_cached == 1  # chunks 2-3: the kernel had none of them
        assert blocks_open.not_tried == 2  # chunks 5-6 and 9-10 the first time
        assert path.stats.fast_disk_hits == 2  # chunks 2-3 and 5-6 again, read since
        assert len(backend.gets) == 21


@trio_test
async def test_a_block_file_corrupted_in_place_is_never_served(tmp_path: Path) -> None:
    async with warmed(tmp_path) as (path, backend):
        file = block_file(path, small_key(path, backend))
        with open(file, "r+b") as f:  # the same inode the read path holds open
            f.seek(-1000, os.SEEK_END)
            byte = f.read(1)
            f.seek(-1000, os.SEEK_END)
            f.write(bytes([byte[0] ^ 0x01]))
        assert await read_small(path, backend) == OBJECTS[SMALL]
        stats = path.stats.as_dict()
        assert stats["corrupt_blocks"] == 1 and stats["fast_disk_hits"] == 0
        assert len(backend.gets) == 2  # fetched again, and stored again
        await path.writes_settled()
        assert await read_small(path, backend) == OBJECTS[SMALL]
        assert len(backend.gets) == 2


@trio_test
async def test_a_block_file_replaced_by_another_blocks_is_never_served(tmp_path: Path) -> None:
    async with warmed(tmp_path) as (path, backend):
        key = small_key(path, backend)
        file = block_file(path, key)
        other_key = key._replace(key="other.jpg")
        other = content("other", key.length)
        # Valid, for another block; the kept descriptor's file has no link left.
        rename_over(file, header(key_digest(other_key), other) + other)
        assert await read_small(path, backend) == OBJECTS[SMALL]
        stats = path.stats.as_dict()
        assert stats["corrupt_blocks"] == 1 and stats["fast_disk_hits"] == 0
        assert len(backend.gets) == 2


@trio_test
async def test_a_block_file_rewritten_whole_by_another_process_is_read(tmp_path: Path) -> None:
    async with warmed(tmp_path) as (path, backend):
        key = small_key(path, backend)
        file = block_file(path, key)
        rename_over(file, file.read_bytes())  # the same block's bytes, a new inode
        assert await read_small(path, backend) == OBJECTS[SMALL]
        stats = path.stats.as_dict()
        assert stats["corrupt_blocks"] == 0 and stats["disk_hits"] == 1
        assert len(backend.gets) == 1


@trio_test
async def test_a_block_file_removed_is_fetched_again(tmp_path: Path) -> None:
    async with warmed(tmp_path) as (path, backend):
        block_file(path, small_key(path, backend)).unlink()  # evicted by another process
        assert await read_small(path, backend) == OBJECTS[SMALL]
        assert len(backend.gets) == 2


@trio_test
async def test_an_open_with_the_kernels_pages_kept_fetches_nothing(tmp_path: Path) -> None:
    backend = CountingBackend(OBJECTS)
    async with cached_path(backend, tmp_path) as path:
        handle = await path.open(backend.info(SMALL), keep_cache=True)
        await handle.close()
        handle = await path.open(backend.info(SMALL), keep_cache=False)
        assert await handle.read(0, 10) == OBJECTS[SMALL][:10]
        await handle.close()
    assert len(backend.gets) == 1


def test_a_descriptor_lent_to_a_thread_is_closed_only_when_given_back(tmp_path: Path) -> None:
    cache = OpenBlocks(max_files=1)
    fd = os.open(tmp_path, os.O_RDONLY)
    cache.add("a", OpenBlock(fd, b""))
    lent = cache.lend("a")
    assert lent is not None
    cache.add("b", OpenBlock(os.open(tmp_path, os.O_RDONLY), b""))  # evicts "a": lent
    os.fstat(fd)  # still open
    cache.give_back("a", lent)
    with pytest.raises(OSError):
        os.fstat(fd)
    cache.close()


def test_at_most_max_files_stay_open_least_recently_used_closed_first(tmp_path: Path) -> None:
    cache = OpenBlocks(max_files=2)
    fds = {name: os.open(tmp_path, os.O_RDONLY) for name in "abc"}
    cache.add("a", OpenBlock(fds["a"], b""))
    cache.add("b", OpenBlock(fds["b"], b""))
    cache.give_back("a", cache.lend("a"))  # a used: b is now the oldest
    cache.add("c", OpenBlock(fds["c"], b""))
    assert ("a" in cache, "b" in cache, "c" in cache) == (True, False, True)
    with pytest.raises(OSError):
        os.fstat(fds["b"])
    cache.close()


def test_a_sweep_lets_go_of_files_no_longer_linked(tmp_path: Path) -> None:
    cache = OpenBlocks()
    files = [tmp_path / "kept", tmp_path / "evicted"]
    for file in files:
        file.write_bytes(b"x")
        cache.add(file.name, OpenBlock(os.open(file, os.O_RDONLY), b""))
    files[1].unlink()
    assert cache.sweep() == 1
    assert "kept" in cache and "evicted" not in cache
    cache.close()


@trio_test
async def test_the_fast_path_is_off_where_preadv_cannot_skip_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(*_args: object) -> int:
        raise OSError(95, "Operation not supported")

    async with warmed(tmp_path) as (path, backend):
        monkeypatch.setattr(os, "preadv", unsupported)
        assert await read_small(path, backend) == OBJECTS[SMALL]
        assert not path.open_blocks.nowait
        assert path.stats.as_dict()["disk_hits"] == 1

