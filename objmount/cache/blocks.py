"""The persistent block store (v3): object blocks as files named by their keys, with an index.

Layout of a cache directory, private to the user who mounts (0700 directories,
0600 files; a directory of anyone else, or one others may write, is refused):

    index-v3.db (+ -wal, -shm)   the index (index.py): one row per block, the totals
    listings-v1/                 the namespace's listing snapshots (namespace/snapshot.py),
                                 counted in the cap with the index and the directories
    blocks-v3/xx/<name>.blk      a block's file (blockfile.py); <name>: 32 hex digits
                                 derived from the block's key (keys.py), xx its first two
    blocks-v3/xx/.tmp-<random>   a block file being written

Invariants:
- a hit touches no SQLite: the file's path is computed from the key, the file is
  opened (O_NOFOLLOW), checked to be a regular file of the user's of the right
  size, and its header proves which block it holds (key digest, CRCs). Anything
  else is CorruptBlock: the derived path (only) is unlinked and the read is a miss.
  No file, row or path can make a read return another block's bytes; a file
  without a row is a hit, a row without a file a miss;
- reserve, then write: one BEGIN IMMEDIATE transaction reads the total, picks
  victims, unlinks their files and deletes their rows, and inserts the new block's
  row; only then is its file written. The total so covers every file, written or
  in progress, and `blocks + index files + directories <= max_size_bytes` holds
  with several processes, to within what one transaction adds to the index;
- a failed write (full disk, read-only directory, locked index, a failing policy)
  never fails a read and never touches another block: its own row is deleted, its
  temporary file removed, writes pause for WRITE_PAUSE_S, one warning is logged;
- victims are the EvictionPolicy's first, then the index's least recently used rows
  (of every process; the policy is told of them as `discovered`), never a block
  this process is writing, never the block being stored. A reader that opened a
  file keeps reading it after an eviction (the inode lives until it is closed);
- recency: hits are kept in memory and written to the index in batches (with the
  next write that evicts, or at most every RECENCY_FLUSH_S), never one UPDATE a hit;
- after an unclean close (a writer in the index whose process is gone), a reconcile
  pass in a thread deletes rows without a file, files without a row and temporary
  files, only those older than RECONCILE_GRACE_S (writes in progress are younger);
- files of the layouts before v3 (a diskcache `cache.db`, `*.val`) are never opened:
  a mount warns once, they do not count in the cap, `clear` removes them (legacy.py).

Every method but `path_of` blocks on disk or SQLite: call them through a Runner,
never on the trio thread. Methods are thread-safe.
"""

import contextlib
import errno
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from objmount import log as logs
from objmount.cache import legacy
from objmount.cache.blockfile import (
    SUFFIX,
    TMP_PREFIX,
    CorruptBlock,
    file_bytes,
    header,
    open_block,
    read_verified,
    stored_bytes,
    verify_read,
    write_block,
)
from objmount.cache.index import (
    FILE_NAME,
    Index,
    Row,
    Transaction,
    now_ms,
    process_start,
    writer_alive,
)
from objmount.cache.keys import (
    KEY_VERSION,
    NAME_PATTERN,
    BlockKey,
    block_key,
    key_digest,
    name_and_digest,
    name_of,
    source_id,
)
from objmount.errors import ConfigError
from objmount.private import private_dir, private_subdirs

__all__ = ["KEY_VERSION", "BlockKey", "BlockStore", "EvictionPolicy", "LruPolicy", "OpenBlock",
           "block_key", "open_store", "source_id"]

log = logging.getLogger(__name__)

BLOCKS_DIR = "blocks-v3"
DIR_NAMES = [f"{i:02x}" for i in range(256)]
# Past the last two-hex-digit prefix "ff": every valid name sorts in ["00", NAMES_END).
NAMES_END = "fg"
FIX = "choose another with --cache-dir, or mount with --cache-mode off"
# After a failed write (disk full...), how long to read uncached before trying again.
WRITE_PAUSE_S = 30.0
# Hits are written to the index at most this often (or with the next evicting write):
# other processes evict by the index's order, which is then at most this stale.
RECENCY_FLUSH_S = 2.0
# Hits remembered between flushes, at most (~100 bytes each); beyond, a hit is not
# recorded until the next flush (it only makes that block look older).
MAX_PENDING_HITS = 1 << 15
# Rows and files a reconcile pass deletes only once they are this old: a write in
# progress (row first, then its file) takes milliseconds, never minutes.
RECONCILE_GRACE_S = 600.0
# The directories' own size (257 of them, 4 KiB each when small) is counted in the cap;
# it is re-measured this often (259 lstats, ~0.4 ms): a directory that grows by a
# 4 KiB block as it fills (in this process or another) is seen within it. (At 10 s,
# writers filling the directories passed the cap plus one block by 8 KiB in a test.)
DIRS_MEASURE_S = 1.0
# Index rows read per query when looking for victims (each is validated).
VICTIM_PAGE = 8
# Victims asked of the policy per write, at most (a policy naming blocks that are gone).
POLICY_TRIES = 64
# Rounds of choosing victims per write: another only if invalid rows were deleted (their
# bytes leave the total, which is then recounted).
RESERVE_ATTEMPTS = 4
_STORE_ERRORS = (OSError, sqlite3.Error)


def check_cache_dir(directory: Path) -> Path:
    """Return `directory` (absolute, created 0700 if missing) if it is private to the user;
    raise ConfigError (one line, with the fix) if it is not (see private.py)."""
    return private_dir(Path(directory), "cache directory", FIX)


def is_disk_full(exc: BaseException) -> bool:
    """Return True if `exc` says the disk (or SQLite database) is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.Error) and "full" in str(exc).lower()


class EvictionPolicy(Protocol):
    """Decides which blocks are written and which go first; told of every insert, access
    and removal. Keys are BlockKeys. Called under the store's lock: no locking needed.

    `admit` is asked before a block is written: False and the block is not written
    (its reader still gets it, from memory). `victim` is asked when the store needs
    room; a policy that returns None (it knows no victim) lets the store take the
    least recently used rows of the index, of every process, which it tells the
    policy of first with `discovered`. A scan-resistant policy (S3-FIFO, or one that
    keeps a stable resident set when an epoch exceeds the cache) fits these six calls.
    """

    def admit(self, key: BlockKey, size: int) -> bool: ...
    def inserted(self, key: BlockKey) -> None: ...
    def accessed(self, key: BlockKey) -> None: ...
    def removed(self, key: BlockKey) -> None: ...

    def discovered(self, keys_oldest_first: Iterable[BlockKey]) -> None:
        """Blocks in the index the policy may not have seen, the least recently used."""
        ...

    def victim(self, skip: Callable[[BlockKey], bool]) -> BlockKey | None:
        """Return the block to evict next, never one for which `skip` is True; None if none."""
        ...


class LruPolicy:
    """Least recently used first, over every process sharing the cache directory.

    The order is the index's `used` column (hits flushed in batches), so this policy
    keeps no state and names no victim: the store takes the index's oldest rows. One
    order for every mount and `warm` on a directory, and no memory per block.
    """

    def admit(self, key: BlockKey, size: int) -> bool:
        return True

    def inserted(self, key: BlockKey) -> None:
        pass

    accessed = removed = inserted

    def discovered(self, keys_oldest_first: Iterable[BlockKey]) -> None:
        pass

    def victim(self, skip: Callable[[BlockKey], bool]) -> BlockKey | None:
        return None


@dataclass(frozen=True, slots=True)
class OpenBlock:
    """A block's file, open for reading (`fd`, the holder closes it), and its header as
    read or written (what blockfile.read_verified needs to read it again)."""

    fd: int
    head: bytes


@dataclass
class StoreCounters:
    """What the store did since it was opened (this process only)."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    writes: int = 0
    write_errors: int = 0
    evicted: int = 0
    not_admitted: int = 0
    no_room: int = 0


@dataclass(frozen=True)
class SourceUsage:
    """Blocks and bytes that one source (container) holds in the store."""

    source: str
    blocks: int
    stored_bytes: int


@dataclass
class ReconcileReport:
    """What a reconcile pass removed."""

    rows: int = 0
    files: int = 0
    temporary: int = 0


class BlockStore:
    """Blocks of objects on local disk, within `max_size_bytes`; see the module docstring."""

    def __init__(self, directory: Path, max_size_bytes: int,
                 policy: EvictionPolicy | None = None, *, writer: bool = True) -> None:
        """Open (creating it) the store in `directory`. `writer`: a mount or a warm-up,
        which registers in the index and reconciles after a previous unclean close;
        the cache commands pass False (they reconcile only when asked).

        Raises ConfigError if the directory is not private to the user (private.py)
        or holds files that are not the user's; OSError, sqlite3.Error if it fails.
        """
        self.directory = check_cache_dir(directory)
        self.blocks_dir = self.directory / BLOCKS_DIR
        private_subdirs(self.directory, [BLOCKS_DIR], "cache directory", FIX)
        private_subdirs(self.blocks_dir, DIR_NAMES, "cache directory", FIX)
        self.max_size_bytes = max_size_bytes
        self.policy: EvictionPolicy = policy if policy is not None else LruPolicy()
        self.counters = StoreCounters()
        self._root = str(self.blocks_dir)
        self._uid = os.geteuid()
        self._lock = threading.Lock()  # policy, counters, pending hits, writes in progress
        self._pending: dict[str, int] = {}  # hits not yet in the index: name -> used (ms)
        self._flushed_at = time.monotonic()
        self._writing: set[str] = set()
        self._writes_paused_until = 0.0
        self._dirs_bytes = self._measure_dirs()
        self._dirs_measured_at = time.monotonic()
        self._stop = threading.Event()
        self._reconciler: threading.Thread | None = None
        self._writer: tuple[int, int] | None = None
        self._closed = False
        self._index = Index(self.directory)
        try:
            self.unclean = bool(self._index.dead_writers(writer_alive))
            if writer:
                self._register_writer()
        except BaseException:
            self._index.close()
            raise
        if writer and legacy.present(self.directory):
            logs.once(log, logging.WARNING, f"legacy:{self.directory}",
                      "the cache directory %s holds an older objmount's cache layout: it is "
                      "ignored and not counted in --cache-max-size (`objmount cache clear "
                      "--cache-dir %s` removes it)", self.directory, self.directory)

    def _register_writer(self) -> None:
        pid = os.getpid()
        started = process_start(pid)
        if started is None:
            return
        self._writer = (pid, started)
        self._index.register_writer(pid, started)
        if self.unclean:
            self._reconciler = threading.Thread(target=self._reconcile_in_background,
                                                name="objmount-reconcile", daemon=True)
            self._reconciler.start()

    def close(self) -> None:
        """Stop a reconcile in progress, write pending hits, deregister; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._reconciler is not None:
            self._reconciler.join()
        with contextlib.suppress(*_STORE_ERRORS):
            self.flush_recency()
            if self._writer is not None:
                self._index.remove_writer(*self._writer)
        self._index.close()

    # Paths.

    def path_of(self, key: BlockKey) -> str:
        """Return the path the block's file has if it is stored (computed; no I/O)."""
        return self._path(name_of(key))

    def _path(self, name: str) -> str:
        return f"{self._root}/{name[:2]}/{name}{SUFFIX}"

    # Reads.

    def read_range(self, key: BlockKey, start: int, end: int) -> bytes | bytearray | None:
        """Return bytes [start, end) of the block (offsets within it), or None on a miss.

        Only the chunks covering the range are read and verified; a bad file drops the
        whole block (a miss). No SQLite. Blocks on disk; never raises for I/O errors.
        """
        return self.read_kept(key, start, end)[0]

    def read_kept(self, key: BlockKey, start: int, end: int, opened: OpenBlock | None = None,
                  keep_open: bool = False) -> tuple[bytes | bytearray | None, OpenBlock | None]:
        """read_range through a file opened before (`opened`, still the caller's), or one it
        opens; return the bytes (None on a miss) and, with `keep_open`, the file it opened
        (the caller closes it; None if it opened none, or on a miss).

        A file found corrupt is dropped (its derived path and row), also through `opened`.
        """
        if not 0 <= start <= end <= key.length:
            raise ValueError(f"range [{start}, {end}) is outside block of {key.length} bytes")
        name, digest = name_and_digest(key)
        data = None
        fd = None
        try:
            if opened is None:
                fd = open_block(self._path(name), key.length, self._uid)
            data, head = read_verified(fd if opened is None else opened.fd, key, start, end,
                                       digest=digest, head=None if opened is None else opened.head)
        except FileNotFoundError:
            pass
        except CorruptBlock as exc:
            self.drop_corrupt(key, name, exc)
        except OSError as exc:
            logs.once(log, logging.WARNING, f"cache-read:{exc.errno}",
                      "cannot read the block cache (reading from the store instead): %s", exc)
        if data is None:
            with self._lock:
                self.counters.misses += 1
            if fd is not None:
                os.close(fd)
            return None, None
        self.note_hit(key, name)
        if fd is None:
            return data, None
        if keep_open:
            return data, OpenBlock(fd, head)
        os.close(fd)
        return data, None

    def read_block(self, key: BlockKey) -> bytes | None:
        """Return the whole block, verified, or None on a miss."""
        return self.read_range(key, 0, key.length)

    def open_block(self, key: BlockKey) -> int | None:
        """Open the block's file and check what it is (not its bytes: see
        blockfile.verify_read); return the descriptor (the caller closes it), or None
        on a miss. A file that is not a block's is dropped."""
        name = name_of(key)
        try:
            return open_block(self._path(name), key.length, self._uid)
        except FileNotFoundError:
            return None
        except CorruptBlock as exc:
            self.drop_corrupt(key, name, exc)
            return None

    def note_hit(self, key: BlockKey, name: str | None = None) -> None:
        """Count a hit of `key` (read through `open_block` by a caller, or by read_range):
        the policy is told, the index learns of it with the next flush. No I/O."""
        name = name or name_of(key)
        with self._lock:
            self.counters.hits += 1
            self.policy.accessed(key)
            if len(self._pending) < MAX_PENDING_HITS:
                self._pending[name] = now_ms()

    def contains(self, key: BlockKey) -> bool:
        """Return True if the block's file is there (not verified). No SQLite."""
        try:
            info = os.lstat(self.path_of(key))
        except OSError:
            return False
        return stat.S_ISREG(info.st_mode) and info.st_size == file_bytes(key.length)

    def drop_corrupt(self, key: BlockKey, name: str | None, exc: Exception) -> None:
        """Remove the block's file (and row) because reading it raised CorruptBlock `exc`:
        counted, logged once. For callers that read through `open_block` too."""
        name = name or name_of(key)
        with self._lock:
            self.counters.corrupt += 1
        logs.once(log, logging.WARNING, f"corrupt:{name}",
                  "cached block of %r [%d, %d) is corrupt (%s): dropped, refetching",
                  key.key, key.start, key.end, exc)
        self._remove(key, name)

    # Writes.

    def put(self, key: BlockKey, data: bytes | memoryview) -> bool:
        """Store a whole block, evicting others first if needed; return False if not stored.

        Not stored: the policy did not admit it, it does not fit in the cache, writes
        are paused, or the write failed (logged once as a warning; writes then pause
        for WRITE_PAUSE_S). Never raises for I/O or SQLite errors.
        """
        return self.put_many([(key, data)], keep_open=False)[0][0]

    def put_many(self, blocks: Sequence[tuple[BlockKey, bytes | bytearray | memoryview]],
                 keep_open: bool = False) -> list[tuple[bool, OpenBlock | None]]:
        """put for several blocks: their room reserved in one index transaction, their
        files written, their rows confirmed with one query. Returns, per block, whether
        it is stored and (with `keep_open`) the file written, open for reading with its
        header (the caller closes it; None if this call wrote none).

        Per block, what put says; a failed write stops the rest of the batch (writes
        pause). One transaction instead of one per block: ~40 us of CPU per row in
        batches of 16 against ~90 alone (SQLite's locks and WAL frames per commit).
        """
        results: list[tuple[bool, OpenBlock | None]] = [(False, None)] * len(blocks)
        todo: list[tuple[int, BlockKey, str, int]] = []
        paused = time.monotonic() < self._writes_paused_until
        with self._lock:
            for i, (key, data) in enumerate(blocks):
                if len(data) != key.length:
                    raise ValueError(f"block of {key.length} bytes given {len(data)} bytes")
                size = stored_bytes(key.length)
                if size > self.max_size_bytes or paused:
                    continue
                name = name_of(key)
                if name in self._writing:  # another thread is writing it
                    continue
                self._writing.add(name)
                todo.append((i, key, name, size))
        try:
            self._write_reserved(blocks, todo, results, keep_open)
        finally:
            with self._lock:
                self._writing.difference_update(name for _, _, name, _ in todo)
        return results

    def _write_reserved(self, blocks: Sequence[tuple[BlockKey, bytes | bytearray | memoryview]],
                        todo: list[tuple[int, BlockKey, str, int]],
                        results: list[tuple[bool, OpenBlock | None]], keep_open: bool) -> None:
        if not todo:
            return
        try:
            with self._index.write() as tx:
                overhead = self.overhead_bytes()
                # Admitted one by one, each after the evictions of those before it (the
                # policy learns from them that the cache is full).
                owned = [self._reserve(tx, key, name, size, overhead) if self._admit(key, size)
                         else None for _, key, name, size in todo]
        except Exception as exc:  # SQLite, the disk, or the policy: nothing was changed
            self._write_failed(exc)
            return
        written: list[tuple[int, BlockKey, str, int | None, bytes]] = []
        for (i, key, name, _size), mine in zip(todo, owned, strict=True):
            if mine is None:
                continue
            if not mine and self.contains(key):
                results[i] = (True, None)  # stored by another thread or process meanwhile
                continue
            if time.monotonic() < self._writes_paused_until:  # an earlier write failed
                self._forget_rows([name] if mine else [])
                continue
            data = blocks[i][1]
            path = self._path(name)
            head = header(key_digest(key), data)
            try:
                fd = write_block(os.path.dirname(path), os.path.basename(path), [head, data],
                                 keep_open=keep_open)
            except Exception as exc:
                self._forget_rows([name] if mine else [])
                self._write_failed(exc)
                continue
            written.append((i, key, name, fd, head))
        # Another process may have evicted a reservation meanwhile: its file would then
        # be counted nowhere.
        kept = {name for _, _, name, _, _ in written}
        with contextlib.suppress(sqlite3.Error):
            kept = self._index.existing(list(kept))
        for i, key, name, fd, head in written:
            if name not in kept:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(name))
                if fd is not None:
                    os.close(fd)
                continue
            with self._lock:
                self.counters.writes += 1
                self.policy.inserted(key)
            results[i] = (True, None if fd is None else OpenBlock(fd, head))

    def _admit(self, key: BlockKey, size: int) -> bool:
        with self._lock:
            if self.policy.admit(key, size):
                return True
            self.counters.not_admitted += 1
            return False

    def _forget_rows(self, names: list[str]) -> None:
        """Delete the rows reserved for files that were not written."""
        if names:
            with contextlib.suppress(*_STORE_ERRORS), self._index.write() as tx:
                for name in names:
                    tx.delete(name)

    def _reserve(self, tx: Transaction, key: BlockKey, name: str, size: int,
                 overhead: int) -> bool | None:
        """In `tx`: make room and insert the block's row; return True if the row is ours,
        False if the block had one already, None if there is no room."""
        if tx.get(name) is not None:
            tx.touch([(name, now_ms())])
            return False
        victims: list[Row] = []
        for attempt in range(RESERVE_ATTEMPTS):
            need = (tx.totals()[0] + size + overhead - self.max_size_bytes
                    - sum(row.size for row in victims))
            if need <= 0:
                break
            if attempt == 0:
                self._flush_into(tx)  # so that this eviction sees this process's hits
            more = self._victims(tx, need, {row.name for row in victims})
            if not tx.damaged:  # else deleted invalid rows freed bytes: count again
                if more is None:
                    with self._lock:
                        self.counters.no_room += 1
                    log.debug("no room in the cache for %r [%d, %d)", key.key, key.start,
                              key.end)
                    return None
                victims += more
                break
            tx.recount()
            victims += more or []
        else:
            return None
        if not victims and time.monotonic() - self._flushed_at >= RECENCY_FLUSH_S:
            self._flush_into(tx)
        for row in victims:
            _unlink_block(self._path(row.name))
            tx.delete(row.name)
        with self._lock:
            self.counters.evicted += len(victims)
            for row in victims:
                self.policy.removed(row.key)
        tx.insert(Row(name, key, size, now_ms()))
        return True

    def _victims(self, tx: Transaction, need: int, taken: set[str]) -> list[Row] | None:
        """Choose rows worth at least `need` bytes, none of `taken`: the policy's, then the
        index's least recently used; never a block this process is writing. None if there
        are too few."""
        chosen: list[Row] = []
        taken = set(taken)
        freed = 0
        with self._lock:
            busy = set(self._writing)

        def skip(candidate: BlockKey) -> bool:
            return (found := name_of(candidate)) in taken or found in busy

        for _ in range(POLICY_TRIES):
            if freed >= need:
                return chosen
            with self._lock:
                victim = self.policy.victim(skip)
            if victim is None:
                break
            victim_name = name_of(victim)
            taken.add(victim_name)
            row = tx.get(victim_name)
            if row is None:  # gone already (another process evicted it)
                with self._lock:
                    self.policy.removed(victim)
                continue
            chosen.append(row)
            freed += row.size
        after: tuple[object, object] | None = None
        while freed < need:
            page, after = tx.oldest(after, VICTIM_PAGE)
            fresh = [row for row in page if row.name not in taken and row.name not in busy]
            with self._lock:
                self.policy.discovered([row.key for row in fresh])
            for row in fresh:
                if freed >= need:
                    break
                chosen.append(row)
                taken.add(row.name)
                freed += row.size
            if after is None:
                break
        return chosen if freed >= need else None

    def overhead_bytes(self) -> int:
        """Disk the index's files and the directories take (counted in the cap)."""
        now = time.monotonic()
        if now - self._dirs_measured_at >= DIRS_MEASURE_S:
            self._dirs_bytes = self._measure_dirs()
            self._dirs_measured_at = now
        # The index's files at every call (3 stats, ~6 us): the WAL is counted at least
        # at its reserved size, but grows past it while a checkpoint cannot finish
        # (another process's reader, a loaded machine); measured a second apart, that
        # growth (up to 1 MB in a test under load) was not in the cap.
        return self._index.disk_bytes() + self._dirs_bytes

    def _measure_dirs(self) -> int:
        """The directories' own size, and the files of the cache directory's other
        subdirectories (the namespace's listing snapshots and working copies)."""
        paths = [self.directory, self.blocks_dir] + [self.blocks_dir / n for n in DIR_NAMES]
        total = 0
        for path in paths:
            with contextlib.suppress(OSError):
                info = os.lstat(path)
                total += max(info.st_size, info.st_blocks * 512)
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.directory):
                if entry.name != BLOCKS_DIR and entry.is_dir(follow_symlinks=False):
                    total += _files_bytes(entry.path)
        return total

    def _write_failed(self, exc: BaseException) -> None:
        self._writes_paused_until = time.monotonic() + WRITE_PAUSE_S
        with self._lock:
            self.counters.write_errors += 1
        why = "the cache disk is full" if is_disk_full(exc) else f"cannot write the cache ({exc})"
        logs.once(log, logging.WARNING, f"cache-write:{self.directory}",
                  "%s: reading uncached from the store (writes retried every %ds)",
                  why, int(WRITE_PAUSE_S))

    # Recency.

    def touch(self, keys: Iterable[BlockKey]) -> None:
        """Mark `keys` as just used (in the index at once), so they are evicted last."""
        used = now_ms()
        keys = list(keys)
        with self._lock:
            for key in keys:
                self.policy.accessed(key)
        with self._index.write() as tx:
            tx.touch([(name_of(key), used) for key in keys])

    def flush_recency(self) -> None:
        """Write the hits noted since the last flush to the index (one transaction)."""
        if self._pending:
            with self._index.write() as tx:
                self._flush_into(tx)

    def _flush_into(self, tx: Transaction) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._flushed_at = time.monotonic()
        if pending:
            tx.touch(pending.items())

    # Removal.

    def discard(self, key: BlockKey) -> bool:
        """Remove one block (its file, then its row); return True if it was stored."""
        return self._remove(key, name_of(key))

    def _remove(self, key: BlockKey, name: str) -> bool:
        with self._lock:
            self.policy.removed(key)
            self._pending.pop(name, None)
        try:
            removed = _unlink_block(self._path(name))
        except OSError as exc:
            log.debug("cannot remove a block file: %s", exc)
            removed = False
        try:
            with self._index.write() as tx:
                removed = tx.delete(name) or removed
        except sqlite3.Error as exc:
            log.debug("cannot delete the index row of a removed block: %s", exc)
        return removed

    # Sizes.

    def stored_bytes(self) -> int:
        """Disk the blocks take (every process's, writes in progress included)."""
        return self._index.totals()[0]

    def block_count(self) -> int:
        return self._index.totals()[1]

    def disk_bytes(self) -> int:
        """Disk the whole store takes, as counted against the cap: blocks, index, directories."""
        return self.stored_bytes() + self.overhead_bytes()

    # Whole-store operations (the cache commands).

    def stored_keys(self) -> Iterator[BlockKey]:
        """Yield every block's key (in no particular order); invalid rows are dropped."""
        for row in self._index.scan():
            yield row.key

    def usage(self) -> list[SourceUsage]:
        """Return blocks and bytes per source, largest first (reads every row)."""
        blocks: dict[str, int] = {}
        stored: dict[str, int] = {}
        for row in self._index.scan():
            source = row.key.source
            blocks[source] = blocks.get(source, 0) + 1
            stored[source] = stored.get(source, 0) + row.size
        return sorted((SourceUsage(s, blocks[s], stored[s]) for s in blocks),
                      key=lambda u: -u.stored_bytes)

    def clear(self, source: str | None = None) -> int:
        """Remove every block (of `source` only, if given; else also files without a row);
        return how many were removed."""
        removed = 0
        batch: list[Row] = []
        for row in self._index.scan():
            if source in (None, row.key.source):
                batch.append(row)
            if len(batch) >= 256:
                removed += self._remove_rows(batch)
                batch = []
        removed += self._remove_rows(batch)
        if source is None:
            removed += remove_block_files(self.blocks_dir)
        return removed

    def _remove_rows(self, rows: list[Row]) -> int:
        if not rows:
            return 0
        with self._index.write() as tx:
            for row in rows:
                _unlink_block(self._path(row.name))
                tx.delete(row.name)
        with self._lock:
            for row in rows:
                self.policy.removed(row.key)
        return len(rows)

    def verify(self, progress: Callable[[BlockKey, bool], None] | None = None) -> tuple[int, int]:
        """Reconcile, then re-check every block's file whole and drop the bad ones; return
        (checked, dropped). Only paths derived from valid rows are opened or removed."""
        self.reconcile()
        checked = dropped = 0
        for row in self._index.scan():
            key = row.key
            try:
                fd = open_block(self._path(row.name), key.length, self._uid)
                try:
                    verify_read(fd, key, 0, key.length)
                finally:
                    os.close(fd)
                good = True
            except FileNotFoundError:  # a row without a file: nothing to check
                self._remove(key, row.name)
                continue
            except CorruptBlock:
                good = False
            except OSError:
                continue
            if not good:
                self._remove(key, row.name)
                with self._lock:
                    self.counters.corrupt += 1
            checked += 1
            dropped += not good
            if progress is not None:
                progress(key, good)
        return checked, dropped

    # Crash recovery.

    def _reconcile_in_background(self) -> None:
        try:
            report = self.reconcile()
            log.info("cache reconciled after an unclean close: %d rows, %d files, %d "
                     "temporary files removed", report.rows, report.files, report.temporary)
        except _STORE_ERRORS as exc:
            log.warning("cannot reconcile the block cache after an unclean close: %s", exc)

    def reconcile(self, grace_s: float = RECONCILE_GRACE_S) -> ReconcileReport:
        """Fix what crashed writers leave: rows without a file, files without a row,
        temporary files (only those older than `grace_s`); recount the totals.

        One directory at a time (a scan and a short transaction each); stops early
        when the store closes. Deregisters the dead writers once done.
        """
        dead = self._index.dead_writers(writer_alive)
        report = ReconcileReport()
        row_cutoff_ms = now_ms() - int(grace_s * 1000)
        file_cutoff_s = time.time() - grace_s
        for i, prefix in enumerate(DIR_NAMES):
            if self._stop.is_set():
                return report
            directory = self.blocks_dir / prefix
            files, temporary = _block_files(directory, prefix)
            high = DIR_NAMES[i + 1] if i + 1 < len(DIR_NAMES) else NAMES_END
            rows = {row.name: row for row in self._index.scan(prefix, high)}
            stale = [row for name, row in rows.items()
                     if name not in files and row.used < row_cutoff_ms]
            if stale:
                with self._index.write() as tx:
                    for row in stale:
                        if not os.path.lexists(self._path(row.name)):
                            report.rows += tx.delete(row.name)
            for name, mtime in files.items():
                if name not in rows and mtime < file_cutoff_s:
                    report.files += _unlink_if_older(directory / f"{name}{SUFFIX}",
                                                     file_cutoff_s)
            for name, mtime in temporary:
                if mtime < file_cutoff_s:
                    report.temporary += _unlink_if_older(directory / name, file_cutoff_s)
        report.rows += self._index.delete_outside(DIR_NAMES[0], NAMES_END)
        with self._index.write() as tx:
            tx.recount()
        self._index.remove_writers(dead)
        self.unclean = False
        return report


def _files_bytes(directory: str) -> int:
    """Disk the regular files directly in `directory` take, and the directory itself."""
    total = 0
    with contextlib.suppress(OSError):
        info = os.lstat(directory)
        total += max(info.st_size, info.st_blocks * 512)
        for entry in os.scandir(directory):
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode):
                    total += max(info.st_size, info.st_blocks * 512)
    return total


def _unlink_block(path: str) -> bool:
    """Remove what is at a block's path (never following a link; an empty directory planted
    there too); return True if something was. Raises OSError for other failures."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except IsADirectoryError:
        with contextlib.suppress(OSError):  # not empty: it stays, and reads miss
            os.rmdir(path)
    return True


def _block_files(directory: Path, prefix: str) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Return the block files in `directory` (name -> mtime; a name of another prefix
    counts as a file without a row) and its temporary files [(file name, mtime)]."""
    files: dict[str, float] = {}
    temporary: list[tuple[str, float]] = []
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            stem = entry.name[: -len(SUFFIX)]
            if entry.name.startswith(TMP_PREFIX):
                temporary.append((entry.name, info.st_mtime))
            elif entry.name.endswith(SUFFIX) and NAME_PATTERN.fullmatch(stem):
                files[stem if stem.startswith(prefix) else f"misplaced:{stem}"] = info.st_mtime
    return files, temporary


def _unlink_if_older(path: Path, cutoff_s: float) -> int:
    """Unlink `path` (never following a link) if it was not modified since `cutoff_s`."""
    try:
        if os.lstat(path).st_mtime >= cutoff_s:
            return 0
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return 1


def remove_block_files(blocks_dir: Path) -> int:
    """Remove every block file and temporary file in `blocks_dir`'s 256 directories (only
    names of those shapes; the directories stay); return how many block files."""
    removed = 0
    for prefix in DIR_NAMES:
        directory = blocks_dir / prefix
        files, temporary = _block_files(directory, prefix)
        for name in files:
            stem = name.removeprefix("misplaced:")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / f"{stem}{SUFFIX}")
                removed += 1
        for name, _mtime in temporary:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / name)
    return removed


def open_store(directory: Path, max_size_bytes: int,
               policy: EvictionPolicy | None = None) -> BlockStore | None:
    """Open (creating it if needed) the block store in `directory` for a mount or `warm`,
    with `policy` (default: LruPolicy).

    Returns None, after one warning, if the disk is full: reads then go uncached.
    Raises ConfigError for any other reason it cannot be used (a directory that is not
    private to the user included). Blocks (disk, SQLite).
    """
    try:
        return BlockStore(directory, max_size_bytes, policy)
    except _STORE_ERRORS as exc:
        if is_disk_full(exc):
            log.warning("the cache disk is full (%s): reading uncached from the store", directory)
            return None
        fix = FIX
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            fix = f"`objmount cache clear --cache-dir {directory}` removes it, or {FIX}"
        raise ConfigError(f"cannot use cache directory {directory}: {exc} ({fix})") from None


def remove_store_files(directory: Path) -> int:
    """Remove a store's files without opening its index (a damaged one): the index files,
    every block and temporary file. Return how many block files."""
    directory = check_cache_dir(directory)
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(directory / (FILE_NAME + suffix))
    blocks_dir = directory / BLOCKS_DIR
    private_subdirs(directory, [BLOCKS_DIR], "cache directory", FIX)
    private_subdirs(blocks_dir, DIR_NAMES, "cache directory", FIX)
    return remove_block_files(blocks_dir)

