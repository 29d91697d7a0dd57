"""The persistent block store: object blocks in a diskcache directory, checksummed.

A block is the bytes [start, end) of one version of one object. Its key names
the store (`source`: kind, endpoint, container), the object key, the ETag and the
byte range, so a new version (new ETag) can never be served old bytes, and a
mount with another block size simply misses. Each block is a file of its own
(blockfile: a digest of every chunk, checked on every read; a corrupt or
truncated block is dropped and reads as a miss), so sizes add up exactly.
A hit costs one SQLite lookup, or none when this process stored or found the
block before (it remembers the path of its file).

Invariants:
- a block is written whole (file first, then its row, by diskcache) or not at
  all: a killed process leaves at worst an orphan file, never a row pointing at
  half a block;
- eviction is ours, not diskcache's (its culling is off): an EvictionPolicy
  chooses victims, and blocks pinned by a read in flight are never chosen;
- several processes may share one directory (SQLite is the arbiter); the byte
  total is shared, each process's recency view is its own (blocks stored by
  others are learnt, as the coldest, when a process runs out of victims, and
  so are rows of other key versions, which never match);
- a remembered path is only a hint: a block evicted by another process fails
  to open (ENOENT; names are never reused), and SQLite answers;
- a write that fails (full disk, full database, locked database) never fails a
  read: the block is simply not cached, writes pause, one warning is logged.

Every method blocks (disk, SQLite): call them through a Runner, never on the
trio thread. Methods are thread-safe.
"""

import contextlib
import errno
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import diskcache

from objmount import log as logs
from objmount.backends.base import ObjectInfo
from objmount.cache.blockfile import (
    BlockDisk,
    BlockValue,
    CorruptBlock,
    header,
    header_bytes,
    open_block,
    read_verified,
)
from objmount.errors import ConfigError

log = logging.getLogger(__name__)

# Bumped whenever the key or file layout changes: old entries then never match
# (b2: 256 directories, 64 KiB chunks, CRC-32; blockfile.MAGIC OMB2).
KEY_VERSION = "b2"
# Paths of block files remembered per process, to skip SQLite on a hit: ~280 bytes
# each (a key's strings are shared with the listing), so at most ~5 MB of a mount's
# ~200 MB; enough for 16,384 small files or 128 GiB of 8 MiB blocks. Beyond, hits of
# the blocks forgotten cost a SQLite lookup, as without it.
REMEMBERED_PATHS = 1 << 14
# After a failed write (disk full...), how long to read uncached before trying again.
WRITE_PAUSE_S = 30.0
# diskcache's own size limit and culling are disabled: ours apply.
_DISKCACHE_SETTINGS: dict[str, Any] = {
    "eviction_policy": "none",
    "cull_limit": 0,
    "size_limit": 1 << 62,
    "disk_min_file_size": 0,
    "statistics": 0,
}
_STORE_ERRORS = (OSError, sqlite3.Error, diskcache.Timeout)


class BlockKey(NamedTuple):
    """One block: bytes [start, end) of version `etag` of `key` in the store `source`."""

    source: str
    key: str
    etag: str
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def stored_bytes(self) -> int:
        """Bytes this block occupies in the store (header, digests, data)."""
        return header_bytes(self.length) + self.length


def _db_key(key: BlockKey) -> tuple:
    return (KEY_VERSION, *key)


def _block_key(db_key: object) -> BlockKey | None:
    if isinstance(db_key, tuple) and len(db_key) == 6 and db_key[0] == KEY_VERSION:
        return BlockKey(*db_key[1:])
    return None


def block_key(source: str, obj: ObjectInfo, block_size: int, index: int) -> BlockKey:
    """Return the key of block `index` of `obj` cut in `block_size` blocks (a mount, a
    warm-up and directory read-ahead all name blocks this way). Without an ETag, size
    and mtime stand in for the version."""
    version = obj.etag or f"size={obj.size},mtime_ns={obj.mtime_ns}"
    start = index * block_size
    return BlockKey(source, obj.key, version, start, min(obj.size, start + block_size))


def source_id(kind: str, endpoint: str, container: str) -> str:
    """Return the `source` of block keys for a container: the same for every remote name
    that points at the same store, so two remotes (or a mount and `warm`) share blocks."""
    return f"{kind}:{endpoint.rstrip('/')}/{container}"


def is_disk_full(exc: BaseException) -> bool:
    """Return True if `exc` says the disk (or SQLite database) is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.Error) and "full" in str(exc).lower()


class EvictionPolicy(Protocol):
    """Chooses which block to evict; told of every insert, access and removal.

    LRU is the first; a scan-resistant policy (hits vs first inserts, e.g. S3-FIFO)
    fits the same five calls. Called under the store's lock: no locking needed.
    """

    def inserted(self, key: Hashable) -> None: ...
    def accessed(self, key: Hashable) -> None: ...
    def removed(self, key: Hashable) -> None: ...

    def discovered(self, keys_oldest_first: Iterable[Hashable]) -> None:
        """Blocks found on disk that the policy has not seen: placed as the coldest."""
        ...

    def victim(self, skip: Callable[[Hashable], bool]) -> Hashable | None:
        """Return the block to evict next, never one for which `skip` is True; None if none."""
        ...


class LruPolicy:
    """Least recently used first; blocks discovered on disk count as the least recent."""

    def __init__(self) -> None:
        self._order: OrderedDict[Hashable, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._order

    def inserted(self, key: Hashable) -> None:
        self._order[key] = None
        self._order.move_to_end(key)

    accessed = inserted

    def removed(self, key: Hashable) -> None:
        self._order.pop(key, None)

    def discovered(self, keys_oldest_first: Iterable[Hashable]) -> None:
        new = [key for key in keys_oldest_first if key not in self._order]
        for key in reversed(new):
            self._order[key] = None
            self._order.move_to_end(key, last=False)

    def victim(self, skip: Callable[[Hashable], bool]) -> Hashable | None:
        for key in self._order:
            if not skip(key):
                return key
        return None


class _ForeignEntry(NamedTuple):
    """A row that is no block of this KEY_VERSION (an older objmount's): evictable only."""

    db_key: Hashable


class _RememberedPaths:
    """Block file paths this process stored or found, least recently used dropped first.

    Only hints (see the module docstring): a caller that fails to open one forgets it.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._paths: OrderedDict[BlockKey, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: BlockKey) -> str | None:
        with self._lock:
            path = self._paths.get(key)
            if path is not None:
                self._paths.move_to_end(key)
            return path

    def remember(self, key: BlockKey, path: str) -> None:
        with self._lock:
            self._paths[key] = path
            self._paths.move_to_end(key)
            if len(self._paths) > self.max_entries:
                self._paths.popitem(last=False)

    def forget(self, key: BlockKey, path: str | None = None) -> None:
        """Forget `key`'s path (only if it is still `path`, when given)."""
        with self._lock:
            if path is None or self._paths.get(key) == path:
                self._paths.pop(key, None)


@dataclass
class StoreCounters:
    """What the store did since it was opened (this process only)."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    writes: int = 0
    write_errors: int = 0
    evicted: int = 0


@dataclass(frozen=True)
class SourceUsage:
    """Blocks and bytes that one source (container) holds in the store."""

    source: str
    blocks: int
    stored_bytes: int


class BlockStore:
    """Blocks of objects on local disk, bounded by `max_size_bytes`; see the module docstring."""

    def __init__(
        self, directory: Path, max_size_bytes: int, policy: EvictionPolicy | None = None
    ) -> None:
        self.directory = Path(directory)
        self.max_size_bytes = max_size_bytes
        self.policy: EvictionPolicy = policy if policy is not None else LruPolicy()
        self.counters = StoreCounters()
        self._cache = diskcache.Cache(str(self.directory), disk=BlockDisk,
                                      **_DISKCACHE_SETTINGS)
        self._disk: BlockDisk = self._cache.disk
        self._paths = _RememberedPaths(REMEMBERED_PATHS)
        self._lock = threading.Lock()  # policy, pins, counters
        self._evicting = threading.Lock()
        self._pins: dict[BlockKey, int] = {}
        self._seeded = False
        self._writes_paused_until = 0.0

    def close(self) -> None:
        self._cache.close()

    # Reads.

    def read_range(self, key: BlockKey, start: int, end: int) -> bytes | None:
        """Return bytes [start, end) of the block (offsets within it), or None on a miss.

        Only the chunks covering the range are read and verified; a bad chunk drops
        the whole block (a miss). Blocks on disk and SQLite; never raises for I/O errors.
        """
        data = self._read(key, start, end)
        with self._lock:
            if data is None:
                self.counters.misses += 1
            else:
                self.counters.hits += 1
                self.policy.accessed(key)
        return data

    def read_block(self, key: BlockKey) -> bytes | None:
        """Return the whole block, verified, or None on a miss."""
        return self.read_range(key, 0, key.length)

    def contains(self, key: BlockKey) -> bool:
        """Return True if the block is stored (not verified)."""
        try:
            return _db_key(key) in self._cache
        except _STORE_ERRORS:
            return False

    def _read(self, key: BlockKey, start: int, end: int) -> bytes | None:
        if not 0 <= start <= end <= key.length:
            raise ValueError(f"range [{start}, {end}) is outside block of {key.length} bytes")
        try:
            return self._read_file(key, start, end)
        except CorruptBlock as exc:
            with self._lock:
                self.counters.corrupt += 1
            logs.once(log, logging.WARNING, f"corrupt:{key}",
                      "cached block of %r [%d, %d) is corrupt (%s): dropped, refetching",
                      key.key, key.start, key.end, exc)
            self.discard(key)
            return None
        except OSError as exc:
            logs.once(log, logging.WARNING, f"cache-read:{exc.errno}",
                      "cannot read the block cache (reading from the store instead): %s", exc)
            return None

    def _read_file(self, key: BlockKey, start: int, end: int) -> bytes | None:
        """Return bytes [start, end) of the block's file, verified; None on a miss.

        Raises CorruptBlock, or OSError if the file opens but cannot be read.
        """
        found = self._open(key)
        if found is None:
            return None
        path, fd = found
        try:
            data = read_verified(fd, key.length, start, end)
        finally:
            os.close(fd)
        self._paths.remember(key, path)
        return data

    def _open(self, key: BlockKey) -> tuple[str, int] | None:
        """Open the block's file: at its remembered path, else where SQLite says it is.

        Returns (path, descriptor), or None on a miss (or an unreadable cache, logged once).
        """
        path = self._paths.get(key)
        if path is not None:
            try:
                return path, open_block(path)
            except OSError:  # evicted (or replaced) by another process
                self._paths.forget(key, path)
        try:
            path = self._cache.get(_db_key(key), read=True)  # BlockDisk: the file's path
            if path is None:
                return None
            return path, open_block(path)
        except FileNotFoundError:  # removed since the lookup
            return None
        except _STORE_ERRORS as exc:
            logs.once(log, logging.WARNING, f"cache-read:{type(exc).__name__}",
                      "cannot read the block cache (reading from the store instead): %s", exc)
            return None

    # Writes.

    def put(self, key: BlockKey, data: bytes) -> bool:
        """Store a whole block, evicting others first if needed; return False if not stored.

        A failed write (full disk or database, lock timeout) is logged once as a
        warning and pauses writes for WRITE_PAUSE_S; it never raises.
        """
        if len(data) != key.length:
            raise ValueError(f"block of {key.length} bytes given {len(data)} bytes")
        size = key.stored_bytes()
        if size > self.max_size_bytes or time.monotonic() < self._writes_paused_until:
            return False
        try:
            self._evict(self.max_size_bytes - size)
            self._disk.local.filename = None
            self._cache.set(_db_key(key), BlockValue(header(data), data))
        except _STORE_ERRORS as exc:
            filename = getattr(self._disk.local, "filename", None)
            if filename:
                self._disk.remove(filename)  # the file was written, its row was not
            self._write_failed(exc)
            return False
        self._paths.remember(key, os.path.join(self._cache.directory, self._disk.local.filename))
        with self._lock:
            self.counters.writes += 1
            self.policy.inserted(key)
        try:
            # Other threads (or processes) may have stored blocks since we made room;
            # the block just stored is the one block that must stay.
            with self.pinned(key):
                self._evict(self.max_size_bytes)
        except _STORE_ERRORS as exc:
            log.debug("eviction after a write failed: %s", exc)
        return True

    def _write_failed(self, exc: BaseException) -> None:
        self._writes_paused_until = time.monotonic() + WRITE_PAUSE_S
        with self._lock:
            self.counters.write_errors += 1
        why = "the cache disk is full" if is_disk_full(exc) else f"cannot write the cache ({exc})"
        logs.once(log, logging.WARNING, f"cache-write:{self.directory}",
                  "%s: reading uncached from the store (writes retried every %ds)",
                  why, int(WRITE_PAUSE_S))

    def touch(self, keys: Iterable[BlockKey]) -> None:
        """Count `keys` as just used, so this process evicts them last."""
        with self._lock:
            for key in keys:
                self.policy.accessed(key)

    def discard(self, key: BlockKey) -> bool:
        """Remove one block; return True if it was stored."""
        self._paths.forget(key)
        return self._delete(key, _db_key(key))

    def _delete(self, policy_key: Hashable, db_key: Hashable) -> bool:
        with self._lock:
            self.policy.removed(policy_key)
        try:
            return self._cache.delete(db_key)
        except _STORE_ERRORS:
            return False

    # Eviction and pins.

    def pin(self, key: BlockKey) -> None:
        """Keep `key` from eviction until as many unpin calls (a read in flight needs it)."""
        with self._lock:
            self._pins[key] = self._pins.get(key, 0) + 1

    def unpin(self, key: BlockKey) -> None:
        with self._lock:
            count = self._pins.pop(key, 0) - 1
            if count > 0:
                self._pins[key] = count

    @contextlib.contextmanager
    def pinned(self, key: BlockKey) -> Iterator[None]:
        self.pin(key)
        try:
            yield
        finally:
            self.unpin(key)

    def stored_bytes(self) -> int:
        """Bytes of every block in the directory, whichever process stored them."""
        return int(self._cache.reset("size"))

    def block_count(self) -> int:
        return int(self._cache.reset("count"))

    def _evict(self, target_bytes: int) -> None:
        """Evict blocks (coldest first, never pinned ones) until at most `target_bytes` remain.

        Runs in one thread at a time; if all that is left is pinned, the store stays
        over its size until those reads finish.
        """
        if self.stored_bytes() <= target_bytes:
            return
        with self._evicting:
            total = self.stored_bytes()
            rescanned = False
            if not self._seeded:
                self._discover()
                self._seeded = rescanned = True
            while total > target_bytes:
                with self._lock:
                    victim = self.policy.victim(self._pins.__contains__)
                if victim is None:
                    if rescanned:
                        log.debug("cache over its size: every remaining block is pinned")
                        return
                    self._discover()  # blocks other processes stored
                    rescanned = True
                    total = self.stored_bytes()
                    continue
                if isinstance(victim, BlockKey):
                    removed, freed = self.discard(victim), victim.stored_bytes()
                else:  # a _ForeignEntry: its size is in its row only
                    assert isinstance(victim, _ForeignEntry)
                    removed, freed = self._delete(victim, victim.db_key), None
                if removed:
                    with self._lock:
                        self.counters.evicted += 1
                if removed and freed is not None:
                    total -= freed
                else:  # gone already (another process evicted it), or unknown: recount
                    total = self.stored_bytes()

    def _discover(self) -> None:
        entries = list(self._entries())  # in store order: oldest first
        with self._lock:
            self.policy.discovered(entries)

    def _entries(self) -> Iterator[BlockKey | _ForeignEntry]:
        """Yield every row's key, oldest stored first: a BlockKey, else a _ForeignEntry."""
        for db_key in self._cache:
            key = _block_key(db_key)
            yield _ForeignEntry(db_key) if key is None else key

    # Whole-store operations (the cache commands).

    def stored_keys(self) -> Iterator[BlockKey]:
        """Yield every block key, oldest stored first (other entries are skipped)."""
        for key in self._entries():
            if isinstance(key, BlockKey):
                yield key

    def usage(self) -> list[SourceUsage]:
        """Return blocks and bytes per source, largest first (reads every key)."""
        blocks: dict[str, int] = {}
        stored: dict[str, int] = {}
        for key in self.stored_keys():
            blocks[key.source] = blocks.get(key.source, 0) + 1
            stored[key.source] = stored.get(key.source, 0) + key.stored_bytes()
        return sorted(
            (SourceUsage(s, blocks[s], stored[s]) for s in blocks),
            key=lambda u: -u.stored_bytes,
        )

    def clear(self, source: str | None = None) -> int:
        """Remove every block (of `source` only, if given; else rows of other key versions
        too); return how many were removed."""
        removed = 0
        for entry in list(self._entries()):
            if isinstance(entry, BlockKey):
                if source in (None, entry.source):
                    removed += self.discard(entry)
            elif source is None:
                removed += self._delete(entry, entry.db_key)
        return removed

    def verify(self, progress: Callable[[BlockKey, bool], None] | None = None) -> tuple[int, int]:
        """Re-check every block's checksums and drop the bad ones; return (checked, dropped).

        Reads every block whole; a block that vanishes meanwhile is not counted.
        """
        checked = dropped = 0
        for key in list(self.stored_keys()):
            try:
                if self._read_file(key, 0, key.length) is None:
                    continue
                good = True
            except CorruptBlock:
                good = False
            except OSError:
                continue
            if not good:
                self.discard(key)
                with self._lock:
                    self.counters.corrupt += 1
            checked += 1
            dropped += not good
            if progress is not None:
                progress(key, good)
        return checked, dropped


def open_store(directory: Path, max_size_bytes: int) -> BlockStore | None:
    """Open (creating it if needed) the block store in `directory`.

    Returns None, after one warning, if the disk is full: reads then go uncached.
    Raises ConfigError for any other reason it cannot be used. Blocks (disk, SQLite).
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return BlockStore(directory, max_size_bytes)
    except _STORE_ERRORS as exc:
        if is_disk_full(exc):
            log.warning("the cache disk is full (%s): reading uncached from the store", directory)
            return None
        raise ConfigError(
            f"cannot use cache directory {directory}: {exc} "
            "(choose another with --cache-dir, or mount with --cache-mode off)"
        ) from None

