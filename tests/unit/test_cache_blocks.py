"""The block store: checksums, ETag keying, LRU eviction with pins, full-disk fallback."""

import errno
import logging
import os
import random
import sqlite3
from pathlib import Path

import diskcache
import pytest

from objmount.cache import blocks
from objmount.cache.blockfile import CHUNK_BYTES, ONE_READ_BYTES
from objmount.cache.blocks import BlockKey, BlockStore, LruPolicy, open_store
from objmount.errors import ConfigError

KiB = 1 << 10
MiB = 1 << 20


def key(name: str, etag: str = "e1", start: int = 0, length: int = 100 * KiB) -> BlockKey:
    return BlockKey("s3:http://x/c", name, etag, start, start + length)


def payload(seed: int, length: int) -> bytes:
    return random.Random(seed).randbytes(length)


@pytest.fixture(autouse=True)
def _fresh_log_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees its own warnings, however often another test logged the same one."""
    monkeypatch.setattr(blocks.logs, "_logged_once", set())


@pytest.fixture
def store(tmp_path: Path) -> BlockStore:
    s = BlockStore(tmp_path / "cache", max_size_bytes=64 * MiB)
    yield s
    s.close()


def block_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.val"))


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


def test_blocks_persist_across_reopening(tmp_path: Path) -> None:
    first = BlockStore(tmp_path, max_size_bytes=MiB)
    first.put(key("a"), payload(3, 100 * KiB))
    first.close()
    second = BlockStore(tmp_path, max_size_bytes=MiB)
    assert second.read_block(key("a")) == payload(3, 100 * KiB)
    assert list(second.stored_keys()) == [key("a")]


@pytest.mark.parametrize("length", SIZES)
@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
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
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        assert store.read_block(k) is None
    assert store.counters.corrupt == 1
    assert not store.contains(k)
    assert block_files(tmp_path / "cache") == []
    assert "corrupt" in caplog.text
    # Refetched and stored again, it reads fine.
    assert store.put(k, payload(5, k.length))
    assert store.read_block(k) == payload(5, k.length)


def test_block_files_live_one_level_down_in_directories_that_stay(
    store: BlockStore, tmp_path: Path
) -> None:
    for name in "abcdefgh":
        store.put(key(name, length=10 * KiB), payload(1, 10 * KiB))
    files = block_files(tmp_path / "cache")
    assert len(files) == 8
    for path in files:
        assert path.parent.parent == tmp_path / "cache"
        assert len(path.parent.name) == 2 and int(path.parent.name, 16) < 256
    store.clear()
    assert block_files(tmp_path / "cache") == []
    assert all(path.parent.is_dir() for path in files)


def test_a_block_stored_by_another_process_is_found(tmp_path: Path) -> None:
    ours = BlockStore(tmp_path, max_size_bytes=MiB)
    other = BlockStore(tmp_path, max_size_bytes=MiB)
    assert ours.read_block(key("a")) is None
    other.put(key("a"), payload(1, 100 * KiB))
    assert ours.read_block(key("a")) == payload(1, 100 * KiB)


def test_a_block_another_process_evicted_reads_as_a_miss_and_can_be_stored_again(
    tmp_path: Path,
) -> None:
    ours = BlockStore(tmp_path, max_size_bytes=MiB)
    other = BlockStore(tmp_path, max_size_bytes=MiB)
    ours.put(key("a"), payload(1, 100 * KiB))
    assert ours.read_block(key("a")) is not None  # its path is remembered now
    assert other.discard(key("a"))
    assert ours.read_block(key("a")) is None
    assert ours.counters.misses == 1 and ours.counters.corrupt == 0
    assert ours.put(key("a"), payload(1, 100 * KiB))
    assert other.read_block(key("a")) == payload(1, 100 * KiB)


def test_a_block_another_process_replaced_is_read_from_its_new_file(tmp_path: Path) -> None:
    ours = BlockStore(tmp_path, max_size_bytes=MiB)
    other = BlockStore(tmp_path, max_size_bytes=MiB)
    ours.put(key("a"), payload(1, 100 * KiB))
    other.discard(key("a"))
    other.put(key("a"), payload(1, 100 * KiB))
    assert ours.read_block(key("a")) == payload(1, 100 * KiB)
    assert ours.counters.hits == 1


def old_version_entries(directory: Path, count: int, length: int) -> None:
    """Rows as an objmount of key version b1 wrote them (diskcache's own file layout)."""
    cache = diskcache.Cache(str(directory), **blocks._DISKCACHE_SETTINGS)
    for i in range(count):
        cache.set(("b1", "s3:http://x/c", f"old{i}", "e1", 0, length), payload(i, length))
    cache.close()


def test_entries_of_an_older_key_version_miss_and_are_evicted_first(tmp_path: Path) -> None:
    old_version_entries(tmp_path, 3, 100 * KiB)
    assert len(block_files(tmp_path)) == 3
    size = key("x").stored_bytes()
    store = BlockStore(tmp_path, max_size_bytes=3 * size)
    assert store.read_block(BlockKey("s3:http://x/c", "old0", "e1", 0, 100 * KiB)) is None
    assert list(store.stored_keys()) == []
    for name in "ab":
        assert store.put(key(name), payload(1, 100 * KiB))
    assert store.stored_bytes() <= 3 * size
    assert {k.key for k in store.stored_keys()} == {"a", "b"}
    store.put(key("c"), payload(1, 100 * KiB))
    assert {k.key for k in store.stored_keys()} == {"a", "b", "c"}
    assert store.block_count() == 3
    # diskcache's two-level directories go with their last file.
    assert [p for p in tmp_path.glob("*/*") if p.is_dir()] == []


def test_clearing_everything_removes_entries_of_older_key_versions(tmp_path: Path) -> None:
    old_version_entries(tmp_path, 2, 10 * KiB)
    store = BlockStore(tmp_path, max_size_bytes=MiB)
    store.put(key("a", length=10 * KiB), payload(1, 10 * KiB))
    assert store.clear("s3:http://x/c") == 1
    assert store.block_count() == 2
    assert store.clear() == 2
    assert store.block_count() == 0 and block_files(tmp_path) == []


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


def test_eviction_keeps_the_store_under_its_size_least_recently_used_first(
    tmp_path: Path,
) -> None:
    size = key("x").stored_bytes()
    store = BlockStore(tmp_path, max_size_bytes=3 * size)
    for name in "abc":
        assert store.put(key(name), payload(1, 100 * KiB))
    assert store.read_block(key("a")) is not None  # a is now more recent than b
    store.put(key("d"), payload(1, 100 * KiB))
    assert store.stored_bytes() <= 3 * size
    assert {k.key for k in store.stored_keys()} == {"a", "c", "d"}
    assert store.counters.evicted == 1


def test_pinned_blocks_are_never_evicted(tmp_path: Path) -> None:
    size = key("x").stored_bytes()
    store = BlockStore(tmp_path, max_size_bytes=2 * size)
    store.put(key("a"), payload(1, 100 * KiB))
    store.put(key("b"), payload(1, 100 * KiB))
    with store.pinned(key("a")):
        store.put(key("c"), payload(1, 100 * KiB))
        store.put(key("d"), payload(1, 100 * KiB))
        assert store.contains(key("a"))
    assert {k.key for k in store.stored_keys()} == {"a", "d"}
    # Once unpinned, it is the coldest again.
    store.put(key("e"), payload(1, 100 * KiB))
    assert {k.key for k in store.stored_keys()} == {"d", "e"}


def test_when_everything_is_pinned_the_store_stays_over_size(tmp_path: Path) -> None:
    size = key("x").stored_bytes()
    store = BlockStore(tmp_path, max_size_bytes=size)
    store.put(key("a"), payload(1, 100 * KiB))
    store.pin(key("a"))
    assert store.put(key("b"), payload(1, 100 * KiB))
    assert {k.key for k in store.stored_keys()} == {"a", "b"}


def test_blocks_stored_by_another_process_are_evicted_as_the_coldest(tmp_path: Path) -> None:
    size = key("x").stored_bytes()
    other = BlockStore(tmp_path, max_size_bytes=10 * size)
    ours = BlockStore(tmp_path, max_size_bytes=3 * size)
    ours.put(key("mine1"), payload(1, 100 * KiB))
    other.put(key("theirs1"), payload(1, 100 * KiB))
    other.put(key("theirs2"), payload(1, 100 * KiB))
    ours.put(key("mine2"), payload(1, 100 * KiB))
    assert ours.stored_bytes() <= 3 * size
    assert {k.key for k in ours.stored_keys()} == {"mine1", "theirs2", "mine2"}


def test_a_block_larger_than_the_whole_cache_is_not_stored(tmp_path: Path) -> None:
    store = BlockStore(tmp_path, max_size_bytes=50 * KiB)
    assert not store.put(key("a"), payload(1, 100 * KiB))
    assert list(store.stored_keys()) == []


def test_lru_policy_order() -> None:
    policy = LruPolicy()
    for k in "abc":
        policy.inserted(k)
    policy.accessed("a")
    policy.discovered(["old1", "b", "old2"])
    order = []
    while (victim := policy.victim(lambda k: k == "c")) is not None:
        order.append(victim)
        policy.removed(victim)
    assert order == ["old1", "old2", "b", "a"]


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    sqlite3.OperationalError("database or disk is full"),
    diskcache.Timeout(),
])
def test_a_failed_write_warns_once_pauses_writes_and_leaves_no_file(
    store: BlockStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, error: Exception,
) -> None:
    original = store._cache._row_insert

    def fail(*args: object) -> None:
        raise error

    monkeypatch.setattr(store._cache, "_row_insert", fail)
    with caplog.at_level(logging.WARNING):
        assert not store.put(key("a"), payload(1, 100 * KiB))
        assert not store.put(key("b"), payload(1, 100 * KiB))
    assert caplog.text.count("uncached") == 1
    assert store.counters.write_errors == 1  # the second write was not even tried
    assert block_files(tmp_path / "cache") == []
    monkeypatch.setattr(store._cache, "_row_insert", original)
    store._writes_paused_until = 0.0  # the pause is over
    assert store.put(key("a"), payload(1, 100 * KiB))


def test_a_really_full_filesystem_degrades_to_uncached(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    if os.system(f"mount -t tmpfs -o size=600k tmpfs {tiny} 2>/dev/null") != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        store = BlockStore(tiny, max_size_bytes=100 * MiB)
        stored = [store.put(key(f"k{i}"), payload(i, 100 * KiB)) for i in range(10)]
        assert stored[0] and not all(stored)
        assert store.counters.write_errors == 1
        # What is stored still reads back.
        assert store.read_block(key("k0")) == payload(0, 100 * KiB)
        store.close()
    finally:
        os.system(f"umount -l {tiny}")


def test_a_cache_dir_that_cannot_be_used_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="--cache-dir"):
        open_store(tmp_path / "file" / "cache", MiB)
