"""The persistent block store: object blocks in a diskcache directory, checksummed.

A block is the bytes [start, end) of one version of one object. Its key names
the store (`source`: kind, endpoint, container), the object key, the ETag and the
byte range, so a new version (new ETag) can never be served old bytes, and a
mount with another block size simply misses. Each stored value carries a
SHA-256 digest (truncated to 16 bytes) of every 1 MiB chunk, checked on every
read: a corrupt or truncated block is dropped and reads as a miss. Every value
is a file of its own (diskcache's min file size is 0), so sizes add up exactly.

Invariants:
- a block is written whole (file first, then its row, by diskcache) or not at
  all: a killed process leaves at worst an orphan file, never a row pointing at
  half a block;
- eviction is ours, not diskcache's (its culling is off): an EvictionPolicy
  chooses victims, and blocks pinned by a read in flight are never chosen;
- several processes may share one directory (SQLite is the arbiter); the byte
  total is shared, each process's recency view is its own (blocks stored by
  others are learnt, as the coldest, when a process runs out of victims);
- a write that fails (full disk, full database, locked database) never fails a
  read: the block is simply not cached, writes pause, one warning is logged.

Every method blocks (disk, SQLite): call them through a Runner, never on the
trio thread. Methods are thread-safe.
"""

import contextlib
import errno
import hashlib
import logging
import os
import sqlite3
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import diskcache
from diskcache.core import MODE_BINARY

from objmount import log as logs
from objmount.errors import ConfigError

log = logging.getLogger(__name__)

# Bumped whenever the key or value layout changes: old entries then never match.
KEY_VERSION = "b1"
_MAGIC = b"OMB1"
_HEADER = struct.Struct("<4sIQ")  # magic, chunk size, data length
DIGEST_BYTES = 16
# Checksums per 1 MiB chunk: a FUSE read (at most 1 MiB) verifies only the chunks it
# touches instead of a whole block.
CHUNK_BYTES = 1 << 20
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


def header_bytes(length: int) -> int:
    return _HEADER.size + DIGEST_BYTES * _chunks(length)


def _chunks(length: int) -> int:
    return max(1, -(-length // CHUNK_BYTES))


def _digest(data: bytes | memoryview) -> bytes:
    return hashlib.sha256(data).digest()[:DIGEST_BYTES]


def _db_key(key: BlockKey) -> tuple:
    return (KEY_VERSION, *key)


def _block_key(db_key: object) -> BlockKey | None:
    if isinstance(db_key, tuple) and len(db_key) == 6 and db_key[0] == KEY_VERSION:
        return BlockKey(*db_key[1:])
    return None


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


class _BlockValue(NamedTuple):
    header: bytes
    data: bytes | memoryview


class _BlockDisk(diskcache.Disk):
    """diskcache's Disk for our values: a header then the data, written to a file of
    its own; a partial file is removed, and the last file name is kept per thread so
    the store can remove it if the row insert fails after the file was written."""

    def __init__(self, directory: str, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.local = threading.local()

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> tuple:
        if not isinstance(value, _BlockValue):
            return super().store(value, read, key=key)
        filename, full_path = self.filename(key, value)
        self.local.filename = filename
        os.makedirs(os.path.dirname(full_path), exist_ok=True)
        try:
            with open(full_path, "xb") as file:
                file.write(value.header)
                file.write(value.data)
        except BaseException:
            self.remove(filename)
            raise
        return len(value.header) + len(value.data), MODE_BINARY, filename, None


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
        self._cache = diskcache.Cache(str(self.directory), disk=_BlockDisk,
                                      **_DISKCACHE_SETTINGS)
        self._disk: _BlockDisk = self._cache.disk
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
            file = self._cache.get(_db_key(key), read=True)
        except _STORE_ERRORS as exc:
            logs.once(log, logging.WARNING, f"cache-read:{type(exc).__name__}",
                      "cannot read the block cache (reading from the store instead): %s", exc)
            return None
        if file is None:
            return None
        try:
            with file:
                return self._verified_range(file, key, start, end)
        except _CorruptBlock as exc:
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

    @staticmethod
    def _verified_range(file: Any, key: BlockKey, start: int, end: int) -> bytes:
        header = file.read(_HEADER.size)
        if len(header) != _HEADER.size:
            raise _CorruptBlock("truncated header")
        magic, chunk, length = _HEADER.unpack(header)
        if magic != _MAGIC or chunk != CHUNK_BYTES or length != key.length:
            raise _CorruptBlock("bad header")
        count = max(1, -(-length // chunk))
        digests = file.read(DIGEST_BYTES * count)
        if len(digests) != DIGEST_BYTES * count:
            raise _CorruptBlock("truncated digests")
        if start == end:
            return b""
        first, last = start // chunk, (end - 1) // chunk
        file.seek(_HEADER.size + len(digests) + first * chunk)
        want = min(length, (last + 1) * chunk) - first * chunk
        data = file.read(want)
        if len(data) != want:
            raise _CorruptBlock("truncated data")
        view = memoryview(data)
        for i in range(first, last + 1):
            piece = view[(i - first) * chunk : (i - first + 1) * chunk]
            expected = digests[i * DIGEST_BYTES : (i + 1) * DIGEST_BYTES]
            if _digest(piece) != expected:
                raise _CorruptBlock(f"checksum mismatch in chunk {i}")
        offset = first * chunk
        if start == offset and end - offset == len(data):
            return data
        return data[start - offset : end - offset]

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
            view = memoryview(data)
            digests = b"".join(
                _digest(view[i : i + CHUNK_BYTES]) for i in range(0, max(1, len(data)),
                                                                  CHUNK_BYTES)
            )
            header = _HEADER.pack(_MAGIC, CHUNK_BYTES, len(data)) + digests
            self._disk.local.filename = None
            self._cache.set(_db_key(key), _BlockValue(header, data))
        except _STORE_ERRORS as exc:
            filename = getattr(self._disk.local, "filename", None)
            if filename:
                self._disk.remove(filename)  # the file was written, its row was not
            self._write_failed(exc)
            return False
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
        with self._lock:
            self.policy.removed(key)
        try:
            return self._cache.delete(_db_key(key))
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
                assert isinstance(victim, BlockKey)
                if self.discard(victim):
                    with self._lock:
                        self.counters.evicted += 1
                    total -= victim.stored_bytes()
                else:  # gone already (another process evicted it): recount
                    total = self.stored_bytes()

    def _discover(self) -> None:
        keys = list(self.stored_keys())  # in store order: oldest first
        with self._lock:
            self.policy.discovered(keys)

    # Whole-store operations (the cache commands).

    def stored_keys(self) -> Iterator[BlockKey]:
        """Yield every block key, oldest stored first (other entries are skipped)."""
        for db_key in self._cache:
            key = _block_key(db_key)
            if key is not None:
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
        """Remove every block (of `source` only, if given); return how many were removed."""
        return sum(
            self.discard(key) for key in list(self.stored_keys()) if source in (None, key.source)
        )

    def verify(self, progress: Callable[[BlockKey, bool], None] | None = None) -> tuple[int, int]:
        """Re-check every block's checksums and drop the bad ones; return (checked, dropped).

        Reads every block whole; a block that vanishes meanwhile is not counted.
        """
        checked = dropped = 0
        for key in list(self.stored_keys()):
            try:
                file = self._cache.get(_db_key(key), read=True)
                if file is None:
                    continue
                with file:
                    self._verified_range(file, key, 0, key.length)
                good = True
            except _CorruptBlock:
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


class _CorruptBlock(Exception):
    """A stored block does not match its header or checksums."""
