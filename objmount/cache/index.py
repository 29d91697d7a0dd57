"""The block index: a small SQLite database of the blocks in one cache directory.

Schema (format 3, file index-v3.db in WAL mode):

    blocks(name PRIMARY KEY, source, key, etag, start, end, size, used)
        one row per block, inserted *before* its file is written (a reservation);
        `used` is the last use in ms since the epoch (flushed in batches)
    totals(bytes, blocks)       kept equal to the rows' sums by triggers
    writers(pid, started)       processes that have the index open to write
    meta(key, value)            format = 3

Invariants:
- values are plain TEXT / INTEGER / BLOB (the key's text fields as UTF-8 bytes):
  nothing read back is ever unpickled or evaluated, and the schema is not trusted
  to run functions (trusted_schema off);
- a row read back is validated (`parse_row`) before any use: its name must be the
  hash of its own key fields and its size the size of that key's file; a row that
  fails is deleted where it is found, and the totals recounted. Paths come from
  validated names only, never from a row;
- one connection per Index, used under a lock; write transactions are
  BEGIN IMMEDIATE and short, so several processes take turns (SQLite's busy
  timeout bounds the wait);
- the WAL is checkpointed every WAL_PAGES pages and truncated back to that size, so
  the index's files stay within `disk_bytes()`, which the store counts in its cap.

Every method blocks on SQLite and the filesystem: call them from a worker thread.
"""

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from objmount.cache.blockfile import FS_BLOCK_BYTES, stored_bytes
from objmount.cache.keys import NAME_PATTERN, BlockKey, decode_text, encode_text, name_of
from objmount.errors import ConfigError
from objmount.private import private_file_in

FILE_NAME = "index-v3.db"
FORMAT = 3
# How long a write waits for another process's transaction before it gives up (the
# block is then not cached, and writes pause). Our transactions take milliseconds.
BUSY_TIMEOUT_S = 5.0
# The WAL is checkpointed (and truncated back) every 128 pages (512 KiB): small enough
# to count in the cap of a small cache, large enough that a checkpoint (two fsyncs)
# comes every ~40 block writes, not every few.
WAL_PAGES = 128
_PAGE_BYTES = 4096
# Counted for the WAL whatever its size now: it grows to WAL_PAGES pages plus the
# transaction that crosses the mark before the checkpoint shrinks it.
WAL_RESERVE_BYTES = (WAL_PAGES + 32) * _PAGE_BYTES
SHM_BYTES = 32 << 10
# Rows read per query when scanning the index.
PAGE_ROWS = 512
# The largest block a row may describe (cli.MAX_BLOCK_SIZE) and the largest offset.
MAX_BLOCK_BYTES = 1 << 30
MAX_OFFSET = 1 << 62

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    f"INSERT OR IGNORE INTO meta VALUES ('format', {FORMAT})",
    """CREATE TABLE IF NOT EXISTS blocks (
        name TEXT PRIMARY KEY,
        source BLOB NOT NULL, key BLOB NOT NULL, etag BLOB NOT NULL,
        start INTEGER NOT NULL, "end" INTEGER NOT NULL,
        size INTEGER NOT NULL, used INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS blocks_by_use ON blocks (used)",
    """CREATE TABLE IF NOT EXISTS totals (
        id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL, blocks INTEGER NOT NULL
    )""",
    "INSERT OR IGNORE INTO totals VALUES (0, 0, 0)",
    """CREATE TRIGGER IF NOT EXISTS blocks_added AFTER INSERT ON blocks BEGIN
        UPDATE totals SET bytes = bytes + NEW.size, blocks = blocks + 1;
    END""",
    """CREATE TRIGGER IF NOT EXISTS blocks_removed AFTER DELETE ON blocks BEGIN
        UPDATE totals SET bytes = bytes - OLD.size, blocks = blocks - 1;
    END""",
    """CREATE TABLE IF NOT EXISTS writers (
        pid INTEGER NOT NULL, started INTEGER NOT NULL, PRIMARY KEY (pid, started)
    ) WITHOUT ROWID""",
)
_COLUMNS = 'name, source, key, etag, start, "end", size, used'


class Row(NamedTuple):
    """A validated row: a block, the disk its file takes, its last use (ms)."""

    name: str
    key: BlockKey
    size: int
    used: int


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_row(raw: tuple) -> Row | None:
    """Return the Row of a `blocks` row as read back, or None if it is not one we wrote."""
    name, source, key, etag, start, end, size, used = raw
    if type(name) is not str or not NAME_PATTERN.fullmatch(name):
        return None
    if not all(type(v) is bytes for v in (source, key, etag)):
        return None
    if not all(type(v) is int for v in (start, end, size, used)):
        return None
    if not 0 <= start <= end <= MAX_OFFSET or end - start > MAX_BLOCK_BYTES:
        return None
    try:
        block = BlockKey(decode_text(source), decode_text(key), decode_text(etag), start, end)
    except UnicodeDecodeError:
        return None
    if name_of(block) != name or size != stored_bytes(block.length):
        return None
    return Row(name, block, size, used)


def row_values(row: Row) -> tuple:
    key = row.key
    return (row.name, encode_text(key.source), encode_text(key.key), encode_text(key.etag),
            key.start, key.end, row.size, row.used)


class Transaction:
    """Statements inside one transaction of an Index (see Index.write)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.damaged = False  # an invalid row was deleted: the totals are recounted

    def totals(self) -> tuple[int, int]:
        """Return (bytes, blocks) of every row."""
        found = self.conn.execute("SELECT bytes, blocks FROM totals WHERE id = 0").fetchone()
        if found is None or not all(type(v) is int and v >= 0 for v in found):
            self.recount()
            found = self.conn.execute("SELECT bytes, blocks FROM totals").fetchone()
        return int(found[0]), int(found[1])

    def recount(self) -> None:
        """Set the totals from the rows (after rows were found damaged or deleted)."""
        self.conn.execute("DELETE FROM totals")
        self.conn.execute(
            "INSERT INTO totals SELECT 0, COALESCE(SUM(CASE WHEN typeof(size) = 'integer' AND "
            "size > 0 THEN size ELSE 0 END), 0), COUNT(*) FROM blocks")
        self.damaged = False

    def insert(self, row: Row) -> bool:
        """Insert `row`; if the block has a row already, mark it used instead and return False."""
        cursor = self.conn.execute(
            f"INSERT INTO blocks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (name) DO NOTHING", row_values(row))
        if cursor.rowcount == 1:
            return True
        self.touch([(row.name, row.used)])
        return False

    def get(self, name: str) -> Row | None:
        """Return the block's row, validated (an invalid one is deleted); None if none."""
        raw = self.conn.execute(f"SELECT {_COLUMNS} FROM blocks WHERE name = ?",
                                (name,)).fetchone()
        rows = [] if raw is None else self._valid([raw])
        return rows[0] if rows else None

    def delete(self, name: object) -> bool:
        """Delete the row named `name` (as read back, valid or not); True if there was one."""
        return self.conn.execute("DELETE FROM blocks WHERE name = ?", (name,)).rowcount == 1

    def touch(self, uses: Iterable[tuple[str, int]]) -> None:
        """Set `used` of the named blocks (only ever forward)."""
        self.conn.executemany("UPDATE blocks SET used = ?2 WHERE name = ?1 AND used < ?2",
                              list(uses))

    def oldest(self, after: tuple[object, object] | None, limit: int
               ) -> tuple[list[Row], tuple[object, object] | None]:
        """Return up to `limit` rows, least recently used first, after (used, name) as read
        back (None: from the first); the valid ones, and where to continue (None: done)."""
        if after is None:
            raws = list(self.conn.execute(
                f"SELECT {_COLUMNS} FROM blocks ORDER BY used, name LIMIT ?", (limit,)))
        else:
            raws = list(self.conn.execute(
                f"SELECT {_COLUMNS} FROM blocks WHERE (used, name) > (?, ?) "
                "ORDER BY used, name LIMIT ?", (*after, limit)))
        more = (raws[-1][7], raws[-1][0]) if len(raws) == limit else None
        return self._valid(raws), more

    def page(self, low: object, high: object, after: object, limit: int
             ) -> tuple[list[Row], object]:
        """Return up to `limit` valid rows in name order, in [low, high) (None: unbounded)
        and after the raw name `after` (None: from `low`); and the raw name to continue
        after (None: there are no more)."""
        where, args = [], []
        for bound, op in ((low, ">="), (after, ">"), (high, "<")):
            if bound is not None:
                where.append(f"name {op} ?")
                args.append(bound)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        raws = list(self.conn.execute(
            f"SELECT {_COLUMNS} FROM blocks {clause} ORDER BY name LIMIT ?", (*args, limit)))
        return self._valid(raws), (raws[-1][0] if len(raws) == limit else None)

    def _valid(self, raws: list[tuple]) -> list[Row]:
        rows = []
        for raw in raws:
            row = parse_row(raw)
            if row is None:
                self.delete(raw[0])
                self.damaged = True
            else:
                rows.append(row)
        return rows


class Index:
    """The index of one cache directory; see the module docstring."""

    def __init__(self, directory: Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        """Open (creating it 0600) `directory`/index-v3.db. Raises ConfigError if a file
        of it is not a regular file of the user's, sqlite3.Error if SQLite fails."""
        self.path = Path(directory) / FILE_NAME
        self.files = [self.path, self.path.with_name(FILE_NAME + "-wal"),
                      self.path.with_name(FILE_NAME + "-shm")]
        fix = "remove it, or choose another --cache-dir"
        for path in self.files:
            private_file_in(path.parent, path.name, "cache index", fix,
                            create=path == self.path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), timeout=busy_timeout_s,
                                     isolation_level=None, check_same_thread=False)
        try:
            for pragma in ("trusted_schema = OFF", "journal_mode = WAL", "synchronous = NORMAL",
                           f"wal_autocheckpoint = {WAL_PAGES}",
                           f"journal_size_limit = {WAL_PAGES * _PAGE_BYTES}"):
                self._conn.execute(f"PRAGMA {pragma}")
            with self.write() as tx:
                for statement in _SCHEMA:
                    tx.conn.execute(statement)
                found = tx.conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if found is None or found[0] != FORMAT:
                raise ConfigError(f"cache index {self.path} has format {found and found[0]!r}, "
                                  f"not {FORMAT} ({fix})")
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[Transaction]:
        """One write transaction (BEGIN IMMEDIATE): committed, or rolled back on an error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            tx = Transaction(self._conn)
            try:
                yield tx
                if tx.damaged:
                    tx.recount()
                self._conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise

    def exists(self, name: str) -> bool:
        return bool(self.existing([name]))

    def existing(self, names: list[str]) -> set[str]:
        """The names among `names` that have a row (as stored: not validated)."""
        found: set[str] = set()
        with self._lock:
            for at in range(0, len(names), PAGE_ROWS):
                page = names[at:at + PAGE_ROWS]
                found.update(row[0] for row in self._conn.execute(
                    f"SELECT name FROM blocks WHERE name IN ({','.join('?' * len(page))})",
                    page))
        return found

    def totals(self) -> tuple[int, int]:
        """Return (bytes, blocks) of every row."""
        with self.write() as tx:
            return tx.totals()

    def scan(self, low: str | None = None, high: str | None = None) -> Iterator[Row]:
        """Yield every valid row with a name in [low, high) (None: unbounded), by name, a
        page per transaction; invalid rows are deleted as they are met."""
        after: object = None
        while True:
            with self.write() as tx:
                rows, after = tx.page(low, high, after, PAGE_ROWS)
            yield from rows
            if after is None:
                return

    def delete_outside(self, low: str, high: str) -> int:
        """Delete every row whose name is not in [low, high) (none of ours are); return
        how many."""
        with self.write() as tx:
            count = tx.conn.execute("DELETE FROM blocks WHERE NOT (name >= ? AND name < ?)",
                                    (low, high)).rowcount
            if count:
                tx.recount()
            return count

    def disk_bytes(self) -> int:
        """Disk the index's files take, with room for the WAL's and shm's full size."""
        db, wal, shm = (_allocated(path) for path in self.files)
        return db + max(wal, WAL_RESERVE_BYTES) + max(shm, SHM_BYTES)

    # Writers: processes that may have left reservations behind if they die.

    def register_writer(self, pid: int, started: int) -> None:
        with self.write() as tx:
            tx.conn.execute("INSERT OR REPLACE INTO writers VALUES (?, ?)", (pid, started))

    def remove_writer(self, pid: int, started: int) -> None:
        with self.write() as tx:
            tx.conn.execute("DELETE FROM writers WHERE pid = ? AND started = ?", (pid, started))

    def dead_writers(self, alive: Callable[[int, int], bool]) -> list[tuple[int, int]]:
        """Return the writers for which `alive(pid, started)` is False."""
        with self.write() as tx:
            rows = tx.conn.execute("SELECT pid, started FROM writers").fetchall()
        return [(pid, started) for pid, started in rows
                if not (type(pid) is int and type(started) is int and alive(pid, started))]

    def remove_writers(self, writers: Iterable[tuple[object, object]]) -> None:
        with self.write() as tx:
            tx.conn.executemany("DELETE FROM writers WHERE pid = ? AND started = ?",
                                list(writers))


def _allocated(path: Path) -> int:
    """Disk a file takes (its size in whole blocks, or what is allocated if more); 0 if none."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return 0
    return max(-(-info.st_size // FS_BLOCK_BYTES) * FS_BLOCK_BYTES, info.st_blocks * 512)


def process_start(pid: int) -> int | None:
    """Return when process `pid` started (clock ticks since boot), None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    try:
        return int(fields[19])  # field 22 of stat(5); fields[0] is field 3
    except (IndexError, ValueError):
        return None


def writer_alive(pid: int, started: int) -> bool:
    return process_start(pid) == started
