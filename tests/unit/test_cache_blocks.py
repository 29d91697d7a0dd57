"""The block store (v3): checks, keys, eviction by the index, a private directory, failed
writes, hostile contents, crash recovery."""

import errno
import itertools
import logging
import os
import random
import shutil
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from objmount.cache import blocks, tools
from objmount.cache.blockfile import (
    CHUNK_BYTES,
    ONE_READ_BYTES,
    CorruptBlock,
    stored_bytes,
    verify_read,
)
from objmount.cache.blocks import BlockKey, BlockStore, LruPolicy, open_store
from objmount.cache.index import FILE_NAME, process_start
from objmount.cache.keys import key_bytes, name_of
from objmount.errors import ConfigError
from tests.crafted_cache import NOBODY, old_layout_sql, write_database

KiB = 1 << 10
MiB = 1 << 20
SIZE = stored_bytes(100 * KiB)


def key(name: str, etag: str = "e1", start: int = 0, length: int = 100 * KiB) -> BlockKey:
    return BlockKey("s3:http://x/c", name, etag, start, start + length)


def payload(seed: int, length: int) -> bytes:
    return random.Random(seed).randbytes(length)


@pytest.fixture(autouse=True)
def _fresh_log_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees its own warnings, however often another test logged the same one."""
    monkeypatch.setattr(blocks.logs, "_logged_once", set())


@pytest.fixture
def ticking_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write and hit gets its own `used` time, in order (wall-clock milliseconds
    would tie)."""
    ticks = itertools.count(1)
    monkeypatch.setattr(blocks, "now_ms", lambda: next(ticks))


@pytest.fixture
def store(tmp_path: Path) -> BlockStore:
    s = BlockStore(tmp_path / "cache", max_size_bytes=64 * MiB)
    yield s
    s.close()


def sized(directory: Path, blocks_room: int, **kwargs: object) -> BlockStore:
    """A store with room for `blocks_room` blocks of 100 KiB beside its index (and half a
    block to spare, for the index's own growth)."""
    s = BlockStore(directory, max_size_bytes=1 << 40, **kwargs)
    s.max_size_bytes = s.overhead_bytes() + blocks_room * SIZE + SIZE // 2
    return s


def block_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.blk"))


def row_names(directory: Path) -> set[object]:
    with sqlite3.connect(directory / FILE_NAME) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM blocks")}


def assert_rows_and_files_agree(directory: Path) -> None:
    """Every row has its file, every file its row, no temporary file is left."""
    assert {p.name.removesuffix(".blk") for p in block_files(directory)} == row_names(directory)
    assert list(directory.rglob(".tmp-*")) == []


# A block read with its header in one pread, and one read in two (header, then data).
SIZES = [3 * CHUNK_BYTES + 5, ONE_READ_BYTES + CHUNK_BYTES + 5]


@pytest.mark.parametrize("length", SIZES)
def test_a_stored_block_reads_back_whole_and_by_range(store: BlockStore, length: int) -> None:
    k = key("a", length=length)
    data = os.urandom(k.length)
    assert store.put(k, data)
    assert store.read_block(k) == data
    assert store.read_range(k, 10, 20) == data[10:20]
    assert store.read_range(k, CHUNK_BYTES - 3, 2 * CHUNK_BYTES + 9) == \
        data[CHUNK_BYTES - 3 : 2 * CHUNK_BYTES + 9]
    assert store.read_range(k, k.length - 1, k.length) == data[-1:]
    assert store.counters.hits == 4


def test_another_etag_or_range_is_another_block(store: BlockStore) -> None:
    store.put(key("a", "old"), payload(1, 100 * KiB))
    assert store.read_block(key("a", "new")) is None
    assert store.read_block(key("a", "old", start=100 * KiB)) is None
    assert store.read_block(key("b", "old")) is None
    assert store.read_block(key("a", "old")) == payload(1, 100 * KiB)


def test_key_bytes_are_unambiguous() -> None:
    """Fields that a separator would run together stay apart."""
    assert key_bytes(BlockKey("s", "a\0b", "c", 0, 1)) != \
        key_bytes(BlockKey("s", "a", "b\0c", 0, 1))
    assert name_of(BlockKey("s", "ab", "c", 0, 1)) != name_of(BlockKey("s", "a", "bc", 0, 1))
    assert name_of(BlockKey("s", "\udcff", "e", 0, 1)) != name_of(BlockKey("s", "\xff", "e", 0, 1))


def test_blocks_persist_across_reopening(tmp_path: Path) -> None:
    first = BlockStore(tmp_path, max_size_bytes=64 * MiB)
    first.put(key("a"), payload(3, 100 * KiB))
    first.close()
    second = BlockStore(tmp_path, max_size_bytes=64 * MiB)
    assert second.read_block(key("a")) == payload(3, 100 * KiB)
    assert list(second.stored_keys()) == [key("a")]
    second.close()


def test_block_files_are_named_by_their_keys_in_256_directories_that_stay(
    store: BlockStore, tmp_path: Path
) -> None:
    for name in "abcdefgh":
        store.put(key(name, length=10 * KiB), payload(1, 10 * KiB))
    files = block_files(tmp_path / "cache")
    assert {p.name for p in files} == {f"{name_of(key(n, length=10 * KiB))}.blk"
                                       for n in "abcdefgh"}
    for path in files:
        assert path.parent.parent == tmp_path / "cache" / "blocks-v3"
        assert path.parent.name == path.name[:2]
    assert store.path_of(key("a", length=10 * KiB)) in {str(p) for p in files}
    assert len(list((tmp_path / "cache" / "blocks-v3").iterdir())) == 256
    assert store.clear() == 8
    assert block_files(tmp_path / "cache") == []
    assert all(path.parent.is_dir() for path in files)


def test_a_hit_makes_no_sqlite_call(store: BlockStore) -> None:
    for i in range(20):
        store.put(key(f"k{i}"), payload(i, 100 * KiB))
    statements: list[str] = []
    store._index._conn.set_trace_callback(statements.append)
    for _ in range(3):
        for i in range(20):
            assert store.read_range(key(f"k{i}"), 5, 5000) == payload(i, 100 * KiB)[5:5000]
            assert store.contains(key(f"k{i}"))
        assert store.read_block(key("missing")) is None
    assert statements == []
    store.flush_recency()  # the hits reach the index afterwards, in one transaction
    assert [s for s in statements if s.startswith("UPDATE")] != []
    assert statements.count("BEGIN IMMEDIATE") == 1


def test_hits_reach_the_index_in_batches(
    store: BlockStore, tmp_path: Path, ticking_clock: None
) -> None:
    store.put(key("a"), payload(1, 100 * KiB))
    with sqlite3.connect(tmp_path / "cache" / FILE_NAME) as conn:
        (before,) = conn.execute("SELECT used FROM blocks").fetchone()
    for _ in range(50):
        store.read_block(key("a"))
    with sqlite3.connect(tmp_path / "cache" / FILE_NAME) as conn:
        assert conn.execute("SELECT used FROM blocks").fetchone() == (before,)
    store.flush_recency()
    with sqlite3.connect(tmp_path / "cache" / FILE_NAME) as conn:
        (after,) = conn.execute("SELECT used FROM blocks").fetchone()
    assert after > before


@pytest.mark.parametrize("length", SIZES)
@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "extend"])
def test_a_corrupt_block_file_is_dropped_and_reads_as_a_miss(
    store: BlockStore, tmp_path: Path, damage: str, length: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    k = key("a", length=length)
    store.put(k, payload(5, k.length))
    (path,) = block_files(tmp_path / "cache")
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[-10] ^= 0xFF
    elif damage == "truncate":
        raw = raw[: len(raw) - 1000]
    elif damage == "empty":
        raw = bytearray()
    else:
        raw += b"\0"
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        assert store.read_block(k) is None
    assert store.counters.corrupt == 1
    assert not store.contains(k)
    assert block_files(tmp_path / "cache") == []
    assert row_names(tmp_path / "cache") == set()
    assert "corrupt" in caplog.text
    # Refetched and stored again, it reads fine.
    assert store.put(k, payload(5, k.length))
    assert store.read_block(k) == payload(5, k.length)


def test_a_file_of_another_block_at_a_blocks_path_is_never_served(
    store: BlockStore, tmp_path: Path
) -> None:
    """Files do record which block they hold: one moved under another's name is a miss."""
    store.put(key("a"), payload(1, 100 * KiB))
    store.put(key("b"), payload(2, 100 * KiB))
    shutil.copyfile(store.path_of(key("a")), store.path_of(key("b")))
    assert store.read_block(key("b")) is None
    assert store.counters.corrupt == 1
    assert not os.path.exists(store.path_of(key("b")))
    assert store.read_block(key("a")) == payload(1, 100 * KiB)


@pytest.mark.parametrize("plant", ["symlink", "fifo", "directory", "foreign"])
def test_what_is_not_a_regular_file_of_ours_at_a_blocks_path_is_a_miss(
    store: BlockStore, tmp_path: Path, plant: str
) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    store.put(key("a"), payload(1, 100 * KiB))
    path = store.path_of(key("a"))
    real = Path(path).read_bytes()
    os.unlink(path)
    if plant == "symlink":
        os.symlink(outside, path)
    elif plant == "fifo":
        os.mkfifo(path)  # an open for reading would block without O_NONBLOCK
    elif plant == "directory":
        os.mkdir(path)
    else:  # a good copy, but another user's
        Path(path).write_bytes(real)
        os.chown(path, NOBODY, NOBODY)
    assert store.read_block(key("a")) is None
    assert outside.read_bytes() == b"precious"
    if plant != "directory":  # a directory cannot be unlinked: it stays a miss
        assert not os.path.lexists(path)


def test_a_block_stored_by_another_process_is_found(tmp_path: Path) -> None:
    ours = BlockStore(tmp_path, max_size_bytes=64 * MiB)
    other = BlockStore(tmp_path, max_size_bytes=64 * MiB)
    assert ours.read_block(key("a")) is None
    other.put(key("a"), payload(1, 100 * KiB))
    assert ours.read_block(key("a")) == payload(1, 100 * KiB)


def test_a_block_another_process_evicted_reads_as_a_miss_and_can_be_stored_again(
    tmp_path: Path,
) -> None:
    ours = BlockStore(tmp_path, max_size_bytes=64 * MiB)
    other = BlockStore(tmp_path, max_size_bytes=64 * MiB)
    ours.put(key("a"), payload(1, 100 * KiB))
    assert ours.read_block(key("a")) is not None
    assert other.discard(key("a"))
    assert ours.read_block(key("a")) is None
    assert ours.counters.misses == 1 and ours.counters.corrupt == 0
    assert ours.put(key("a"), payload(1, 100 * KiB))
    assert other.read_block(key("a")) == payload(1, 100 * KiB)


def test_a_range_read_verifies_only_the_chunks_it_touches(
    store: BlockStore, tmp_path: Path
) -> None:
    k = key("a", length=2 * CHUNK_BYTES)
    store.put(k, payload(5, k.length))
    (path,) = block_files(tmp_path / "cache")
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # the last chunk is bad
    path.write_bytes(bytes(raw))
    assert store.read_range(k, 0, 100) == payload(5, k.length)[:100]
    assert store.read_range(k, CHUNK_BYTES, CHUNK_BYTES + 1) is None
    assert not store.contains(k)


def test_verify_drops_only_the_bad_blocks(store: BlockStore, tmp_path: Path) -> None:
    for name in "abc":
        store.put(key(name), payload(ord(name), 100 * KiB))
    bad = block_files(tmp_path / "cache")[0]
    bad.write_bytes(bad.read_bytes()[:-1] + b"\0")
    seen: list[bool] = []
    assert store.verify(lambda _key, good: seen.append(good)) == (3, 1)
    assert sorted(seen) == [False, True, True]
    assert len(list(store.stored_keys())) == 2
    assert_rows_and_files_agree(tmp_path / "cache")


def test_eviction_keeps_the_store_under_its_size_least_recently_used_first(
    tmp_path: Path, ticking_clock: None,
) -> None:
    store = sized(tmp_path, 3)
    for name in "abc":
        assert store.put(key(name), payload(1, 100 * KiB))
    assert store.read_block(key("a")) is not None  # a is now more recent than b
    assert store.put(key("d"), payload(1, 100 * KiB))
    assert store.disk_bytes() <= store.max_size_bytes
    assert {k.key for k in store.stored_keys()} == {"a", "c", "d"}
    assert store.counters.evicted == 1
    assert_rows_and_files_agree(tmp_path)


def test_blocks_are_evicted_by_their_last_use_in_any_process(
    tmp_path: Path, ticking_clock: None
) -> None:
    """The index's recency is every process's: a block another process reads stays."""
    ours = sized(tmp_path, 3)
    other = BlockStore(tmp_path, max_size_bytes=1 << 40)
    ours.put(key("mine1"), payload(1, 100 * KiB))
    other.put(key("theirs1"), payload(1, 100 * KiB))
    other.put(key("theirs2"), payload(1, 100 * KiB))
    assert other.read_block(key("mine1")) is not None  # read by the other process
    other.flush_recency()
    ours.put(key("mine2"), payload(1, 100 * KiB))
    assert ours.disk_bytes() <= ours.max_size_bytes
    assert {k.key for k in ours.stored_keys()} == {"mine1", "theirs2", "mine2"}


def test_a_reader_that_opened_a_block_keeps_reading_it_after_eviction(tmp_path: Path) -> None:
    store = sized(tmp_path, 1)
    store.put(key("a"), payload(1, 100 * KiB))
    fd = store.open_block(key("a"))
    assert fd is not None
    try:
        assert store.put(key("b"), payload(2, 100 * KiB))
        assert not store.contains(key("a"))
        assert verify_read(fd, key("a"), 0, 100 * KiB) == payload(1, 100 * KiB)
    finally:
        os.close(fd)


def test_a_reader_of_its_own_descriptor_verifies_without_the_store_and_reports_damage(
    store: BlockStore,
) -> None:
    """What a fast path (preadv on an open descriptor) does: open_block, verify_read with
    its own pread, note_hit; a bad file is reported with drop_corrupt."""
    store.put(key("a"), payload(1, 100 * KiB))
    fd = store.open_block(key("a"))
    assert fd is not None
    try:
        calls = []

        def pread(fd: int, size: int, offset: int) -> bytes:
            calls.append((size, offset))
            return os.pread(fd, size, offset)

        assert verify_read(fd, key("a"), 10, 20, pread=pread) == payload(1, 100 * KiB)[10:20]
        assert len(calls) == 1  # header and the first chunk, at once
        store.note_hit(key("a"))
    finally:
        os.close(fd)
    assert store.counters.hits == 1
    with open(store.path_of(key("a")), "r+b") as file:
        file.seek(-1, os.SEEK_END)
        file.write(b"\x00" if payload(1, 100 * KiB)[-1] else b"\x01")
    fd = store.open_block(key("a"))
    assert fd is not None
    try:
        with pytest.raises(CorruptBlock):
            verify_read(fd, key("a"), 0, 100 * KiB)
    finally:
        os.close(fd)
    store.drop_corrupt(key("a"), None, CorruptBlock("checksum mismatch"))
    assert not store.contains(key("a")) and store.block_count() == 0
    assert store.counters.corrupt == 1


def test_a_block_larger_than_the_whole_cache_is_not_stored(tmp_path: Path) -> None:
    store = sized(tmp_path, 0)
    assert not store.put(key("a"), payload(1, 100 * KiB))
    assert list(store.stored_keys()) == []
    assert store.counters.no_room == 1 and store.counters.write_errors == 0


def test_a_block_the_policy_does_not_admit_is_not_written(tmp_path: Path) -> None:
    class Refuses(LruPolicy):
        def admit(self, key: BlockKey, size: int) -> bool:
            return key.key != "scan"

    store = BlockStore(tmp_path, max_size_bytes=64 * MiB, policy=Refuses())
    assert not store.put(key("scan"), payload(1, 100 * KiB))
    assert store.put(key("kept"), payload(1, 100 * KiB))
    assert [k.key for k in store.stored_keys()] == ["kept"]
    assert store.counters.not_admitted == 1


def test_the_policy_chooses_victims_before_the_index(tmp_path: Path) -> None:
    class EvictsNewest(LruPolicy):
        def __init__(self) -> None:
            self.order: list[BlockKey] = []

        def inserted(self, key: BlockKey) -> None:
            self.order.append(key)

        def removed(self, key: BlockKey) -> None:
            if key in self.order:
                self.order.remove(key)

        def victim(self, skip):  # type: ignore[no-untyped-def]
            return next((k for k in reversed(self.order) if not skip(k)), None)

    store = sized(tmp_path, 2, policy=EvictsNewest())
    for name in "abc":
        assert store.put(key(name), payload(1, 100 * KiB))
    assert {k.key for k in store.stored_keys()} == {"a", "c"}


def test_an_eviction_error_during_a_write_keeps_the_previous_block_readable_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 11 item 3: a failure while making room changes nothing."""
    store = sized(tmp_path, 1)
    assert store.put(key("a"), payload(1, 100 * KiB))

    def fail(*_args: object) -> None:
        raise OSError(errno.EIO, "injected eviction error")

    monkeypatch.setattr(store.policy, "victim", fail)
    with caplog.at_level(logging.WARNING):
        assert not store.put(key("b"), payload(2, 100 * KiB))
    assert "injected eviction error" in caplog.text
    assert store.read_block(key("a")) == payload(1, 100 * KiB)
    assert store.block_count() == 1 and [k.key for k in store.stored_keys()] == ["a"]
    assert store.contains(key("a"))
    assert_rows_and_files_agree(tmp_path)


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EROFS, "Read-only file system"),
])
def test_a_failed_file_write_deletes_its_own_row_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError,
) -> None:
    store = sized(tmp_path, 1)
    assert store.put(key("a"), payload(1, 100 * KiB))

    def fail(*_args: object) -> None:
        raise error

    monkeypatch.setattr(blocks, "write_block", fail)
    assert not store.put(key("b"), payload(2, 100 * KiB))  # its room was made: a went
    assert store.counters.write_errors == 1
    assert store.read_block(key("b")) is None
    assert store.block_count() == 0
    assert_rows_and_files_agree(tmp_path)


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    sqlite3.OperationalError("database or disk is full"),
    sqlite3.OperationalError("database is locked"),
])
def test_a_failed_write_warns_once_pauses_writes_and_leaves_no_file(
    store: BlockStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, error: Exception,
) -> None:
    original = store._reserve

    def fail(*args: object) -> None:
        raise error

    monkeypatch.setattr(store, "_reserve", fail)
    with caplog.at_level(logging.WARNING):
        assert not store.put(key("a"), payload(1, 100 * KiB))
        assert not store.put(key("b"), payload(1, 100 * KiB))
    assert caplog.text.count("uncached") == 1
    assert store.counters.write_errors == 1  # the second write was not even tried
    assert block_files(tmp_path / "cache") == []
    monkeypatch.setattr(store, "_reserve", original)
    store._writes_paused_until = 0.0  # the pause is over
    assert store.put(key("a"), payload(1, 100 * KiB))


def test_a_really_full_filesystem_degrades_to_uncached(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    if os.system(f"mount -t tmpfs -o size=600k tmpfs {tiny} 2>/dev/null") != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        store = BlockStore(tiny / "cache", max_size_bytes=100 * MiB)
        stored = [store.put(key(f"k{i}"), payload(i, 100 * KiB)) for i in range(10)]
        assert stored[0] and not all(stored)
        assert store.counters.write_errors == 1
        # What is stored still reads back, and nothing half-written stays.
        assert store.read_block(key("k0")) == payload(0, 100 * KiB)
        assert_rows_and_files_agree(tiny / "cache")
        store.close()
    finally:
        os.system(f"umount -l {tiny}")


# The cache directory is private (issue 11 item 5).


def modes(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): stat.S_IMODE(p.lstat().st_mode)
            for p in [directory, *directory.rglob("*")]}


def test_what_the_store_writes_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = BlockStore(tmp_path / "a" / "cache", max_size_bytes=64 * MiB)
        for i in range(5):
            store.put(key(f"k{i}"), payload(i, 100 * KiB))
        during = modes(tmp_path / "a")
        store.close()
    finally:
        os.umask(old)
    assert any(name.endswith("-wal") for name in during)
    for name, mode in during.items():
        is_dir = (tmp_path / "a" / name).is_dir()
        assert mode == (0o700 if is_dir else 0o600), name


def test_a_cache_dir_of_another_user_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir(mode=0o700)
    os.chown(tmp_path / "cache", NOBODY, NOBODY)
    with pytest.raises(ConfigError) as raised:
        open_store(tmp_path / "cache", MiB)
    assert "belongs to uid 65534" in str(raised.value)
    assert "--cache-dir" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert os.listdir(tmp_path / "cache") == []


@pytest.mark.parametrize("bits", [0o770, 0o707])
def test_a_cache_dir_others_may_write_is_refused(tmp_path: Path, bits: int) -> None:
    (tmp_path / "cache").mkdir()
    os.chmod(tmp_path / "cache", bits)
    with pytest.raises(ConfigError, match="writable by other users"):
        open_store(tmp_path / "cache", MiB)
    with pytest.raises(ConfigError, match="writable by other users"):
        tools.stats_report(tmp_path / "cache")


def test_a_block_directory_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    BlockStore(tmp_path / "cache", max_size_bytes=MiB).close()
    shutil.rmtree(tmp_path / "cache" / "blocks-v3" / "ab")
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    os.symlink(tmp_path / "elsewhere", tmp_path / "cache" / "blocks-v3" / "ab")
    with pytest.raises(ConfigError, match="ab is not a directory"):
        open_store(tmp_path / "cache", MiB)


@pytest.mark.parametrize("suffix", ["", "-wal"])
def test_an_index_file_that_is_a_symlink_is_refused(tmp_path: Path, suffix: str) -> None:
    (tmp_path / "cache").mkdir(mode=0o700)
    (tmp_path / "elsewhere.db").write_bytes(b"")
    os.symlink(tmp_path / "elsewhere.db", tmp_path / "cache" / (FILE_NAME + suffix))
    with pytest.raises(ConfigError, match="is not a regular file"):
        open_store(tmp_path / "cache", MiB)
    assert (tmp_path / "elsewhere.db").read_bytes() == b""


def test_a_cache_dir_that_cannot_be_used_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="--cache-dir"):
        open_store(tmp_path / "file" / "cache", MiB)


def test_a_damaged_index_is_a_one_line_error_and_cache_clear_removes_it(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, max_size_bytes=64 * MiB)
    store.put(key("a"), payload(1, 100 * KiB))
    store.close()
    (tmp_path / FILE_NAME).write_bytes(b"not a database" * 1000)
    with pytest.raises(ConfigError, match="objmount cache clear"):
        open_store(tmp_path, MiB)
    assert tools.clear(tmp_path, None) == tools.Cleared(1, 0)
    assert block_files(tmp_path) == [] and not (tmp_path / FILE_NAME).exists()
    assert open_store(tmp_path, MiB) is not None


# Old layouts and hostile contents: nothing read back is trusted.


def test_an_old_layout_is_never_opened_and_clear_removes_only_its_own_names(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    marker = tmp_path / "pickle-ran"
    outside = tmp_path / "outside.val"
    outside.write_bytes(b"precious")
    b2_key = ("b2", "s3:http://x/c", "a", "e1", 0, 100 * KiB)
    write_database(cache / "cache.db", old_layout_sql(marker, [b2_key], [str(outside)]),
                   as_other_user=False)
    (cache / "ab" / "cd").mkdir(parents=True)
    (cache / "ab" / f"{'1' * 30}.val").write_bytes(b"b2 block")
    (cache / "ab" / "cd" / f"{'2' * 28}.val").write_bytes(b"diskcache block")
    (cache / "ab" / "keep.txt").write_bytes(b"not ours to remove")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / f"{'3' * 30}.val").write_bytes(b"outside, behind a link")
    os.symlink(tmp_path / "linked", cache / "ef")
    with caplog.at_level(logging.WARNING):
        store = BlockStore(cache, max_size_bytes=64 * MiB)
        assert store.read_block(key("a")) is None
        assert list(store.stored_keys()) == []
        store.put(key("b"), payload(1, 100 * KiB))
        store.close()
    assert "older objmount's cache layout" in caplog.text
    report = tools.stats_report(cache)
    assert "an older objmount's cache layout: 3 files" in report
    assert tools.verify(cache) == (1, 0)
    assert tools.clear(cache, None) == tools.Cleared(1, 3)
    assert not marker.exists()
    assert outside.read_bytes() == b"precious"
    assert (tmp_path / "linked" / f"{'3' * 30}.val").exists()
    assert sorted(os.listdir(cache)) == ["ab", "blocks-v3", "ef", FILE_NAME]
    assert os.listdir(cache / "ab") == ["keep.txt"]


def insert_row(directory: Path, values: tuple) -> None:
    with sqlite3.connect(directory / FILE_NAME) as conn:
        conn.execute("INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)


def hostile_rows(outside: Path) -> list[tuple]:
    real = key("real")
    valid_name = name_of(real)
    fields = (b"s3:http://x/c", b"real", b"e1", 0, 100 * KiB, SIZE, 0)
    return [
        ("../../../outside", *fields),
        (str(outside), *fields),
        ("0" * 32, *fields),  # a name of the right shape that is not this key's
        (valid_name.upper(), *fields),
        (valid_name + "\n", *fields),
        (f"{valid_name[:2]}/../../../../outside", *fields),
        (b"blob name", *fields),
        (12345, *fields),
        (name_of(key("sized")), b"s3:http://x/c", b"sized", b"e1", 0, 100 * KiB, -1 << 40, 0),
        (name_of(key("typed")), "s3:http://x/c", "typed", "e1", 0, 100 * KiB, SIZE, 0),
    ]


def test_hostile_rows_never_make_verify_clear_or_eviction_touch_anything_outside(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    store = sized(cache, 2)
    store.put(key("a"), payload(1, 100 * KiB))
    for row in hostile_rows(outside):
        insert_row(cache, row)
    # A valid row whose file is a symlink to something outside.
    insert_row(cache, (name_of(key("linked")), b"s3:http://x/c", b"linked", b"e1", 0,
                       100 * KiB, SIZE, 0))
    os.symlink(outside, store.path_of(key("linked")))
    for i in range(6):  # eviction: the oldest rows first (the hostile ones)
        assert store.put(key(f"n{i}"), payload(i, 100 * KiB))
    assert store.disk_bytes() <= store.max_size_bytes
    assert store.verify() == (2, 0)
    assert {k.key for k in store.stored_keys()} == {"n4", "n5"}
    assert store.clear() == 2
    store.close()
    assert outside.read_bytes() == b"precious"
    assert not os.path.lexists(store.path_of(key("linked")))
    assert row_names(cache) == set()


def test_a_writer_that_died_leaves_nothing_that_lasts(tmp_path: Path) -> None:
    """Rows without files, files without rows and temporary files, older than the grace,
    are removed by the next opener; younger ones (writes in progress) stay."""
    cache = tmp_path / "cache"
    store = BlockStore(cache, max_size_bytes=64 * MiB)
    for name in ("kept", "file-lost", "row-lost", "recent-row-lost"):
        store.put(key(name), payload(1, 100 * KiB))
    store._writer = None  # it "dies": its writer entry stays behind
    store.close()
    old = time.time() - 2 * blocks.RECONCILE_GRACE_S
    with sqlite3.connect(cache / FILE_NAME) as conn:
        conn.execute("INSERT INTO writers VALUES (?, ?)", (os.getpid(), 1))  # a dead pid's
        conn.execute("DELETE FROM blocks WHERE name = ?", (name_of(key("row-lost")),))
        conn.execute("DELETE FROM blocks WHERE name = ?", (name_of(key("recent-row-lost")),))
        conn.execute("UPDATE blocks SET used = 0 WHERE name = ?", (name_of(key("file-lost")),))
    os.unlink(store.path_of(key("file-lost")))
    os.utime(store.path_of(key("row-lost")), (old, old))
    tmp_old = Path(store.path_of(key("kept"))).with_name(".tmp-old")
    tmp_new = tmp_old.with_name(".tmp-new")
    tmp_old.write_bytes(b"half")
    tmp_new.write_bytes(b"half")
    os.utime(tmp_old, (old, old))
    reopened = BlockStore(cache, max_size_bytes=64 * MiB)
    assert reopened.unclean and reopened._reconciler is not None
    reopened._reconciler.join()
    assert not reopened.unclean
    assert {k.key for k in reopened.stored_keys()} == {"kept"}
    assert not os.path.exists(store.path_of(key("row-lost")))
    assert os.path.exists(store.path_of(key("recent-row-lost")))  # served meanwhile
    assert reopened.read_block(key("recent-row-lost")) == payload(1, 100 * KiB)
    assert not tmp_old.exists() and tmp_new.exists()
    assert reopened.block_count() == 1
    with sqlite3.connect(cache / FILE_NAME) as conn:
        assert conn.execute("SELECT pid, started FROM writers").fetchall() == [
            (os.getpid(), process_start(os.getpid()))]
    reopened.close()


def test_a_closed_store_needs_no_reconcile(tmp_path: Path) -> None:
    BlockStore(tmp_path, max_size_bytes=MiB).close()
    store = BlockStore(tmp_path, max_size_bytes=MiB)
    assert not store.unclean and store._reconciler is None
    store.close()


def test_concurrent_writers_of_one_block_store_it_once(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, max_size_bytes=64 * MiB)
    other = BlockStore(tmp_path, max_size_bytes=64 * MiB)
    barrier = threading.Barrier(4)

    def write(s: BlockStore) -> None:
        barrier.wait()
        s.put(key("same"), payload(1, 100 * KiB))

    threads = [threading.Thread(target=write, args=(s,)) for s in (store, other) * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.block_count() == 1
    assert store.read_block(key("same")) == payload(1, 100 * KiB)
    assert_rows_and_files_agree(tmp_path)
