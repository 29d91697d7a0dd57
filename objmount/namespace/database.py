"""The namespace's database: the entries of a container prefix in one SQLite file.

Schema (format 1):

    meta(key, value)          format = 1, source, prefix, next_ino, container_version
    entries(parent, name, ino, size, etag, mtime_ns, listed_at), keyed by (parent, name)
        a file (size set) or a directory (size NULL; `listed_at` its last complete
        listing in seconds since the epoch, NULL if never listed); the root is
        ino 1 (parent 0, name ''). Lookups are point queries, readdir a range of
        the key (keyset pages); an index finds a row by inode
    gone(ino, parent, name, size, etag, mtime_ns)
        entries that lost their name (vanished, replaced by another version)
    staged(listing, dir, name, kind, size, etag, mtime_ns)
        pages of listings in progress, until applied whole

Invariants:
- inodes come from `next_ino` and are never reused. A name keeps its inode while
  its kind and its version stay; a vanished name, or a changed object (another
  ETag; without one, another size or mtime), moves to `gone` (with the subtree
  of a vanished directory) and a new inode takes the name: one inode per
  version. A gone entry still answers by inode (an open file's getattr), never
  by name;
- a listing is applied in one transaction: a directory shows the old listing or
  the new one, never a mix, and only a complete listing is ever applied;
- everything read back is checked: the schema must be exactly ours (a snapshot
  file is not trusted to bring views or triggers), meta must name this source and
  prefix in this format, and each row is validated before use (an invalid row is
  skipped, reported once); trusted_schema is off;
- reads (point queries and pages of a few hundred rows) run on the caller's
  thread through the reader connection; every write goes through the writer
  connection, in one worker thread at a time (WAL: readers never wait for it);
- the rows of the last RECENT_ROWS inodes read by point query are kept in memory
  (a FUSE open and release ask again for the inode a lookup just found): a write
  transaction empties them before it starts and once it ends, and a query that
  overlapped one (its generation moved) keeps nothing, so a row kept is never
  older than the last committed write.

The file is private to one mount (a working copy); snapshot.py publishes copies.
Every method blocks on SQLite.
"""

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from objmount import log as logs
from objmount.namespace.listing import DIRECTORY, FILE, Entry, usable
from objmount.namespace.names import name_problem

log = logging.getLogger(__name__)

FORMAT = 1
ROOT_INODE = 1  # FUSE's root inode number (pyfuse3.ROOT_INODE)
# Names of a directory's changed entries reported per listing, at most: the kernel is
# told to forget those dentries; past it, the directory's own entry is dropped instead.
CHANGES_REPORTED = 10_000
# The reader's page cache: the hot part of the index (the rest is in the OS page cache,
# outside the mount's RSS).
READER_CACHE_KIB = 8 << 10
_MAX_ETAG = 1024
# Inodes whose rows are kept (~200 bytes each): more than the files a mount's readers
# have between lookup and release at once.
RECENT_ROWS = 4096

SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    """CREATE TABLE entries (
        parent INTEGER NOT NULL,
        name TEXT NOT NULL,
        ino INTEGER NOT NULL,
        size INTEGER,
        etag TEXT NOT NULL DEFAULT '',
        mtime_ns INTEGER NOT NULL DEFAULT 0,
        listed_at REAL,
        PRIMARY KEY (parent, name)
    ) WITHOUT ROWID""",
    "CREATE UNIQUE INDEX entries_by_ino ON entries (ino)",
    "CREATE INDEX dirs_unlisted ON entries (ino) WHERE size IS NULL AND listed_at IS NULL",
    """CREATE TABLE gone (
        ino INTEGER PRIMARY KEY, parent INTEGER NOT NULL, name TEXT NOT NULL,
        size INTEGER, etag TEXT NOT NULL, mtime_ns INTEGER NOT NULL
    )""",
    """CREATE TABLE staged (
        listing INTEGER NOT NULL, dir TEXT NOT NULL, name TEXT NOT NULL,
        kind INTEGER NOT NULL, size INTEGER NOT NULL DEFAULT 0,
        etag TEXT NOT NULL DEFAULT '', mtime_ns INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (listing, dir, name, kind)
    ) WITHOUT ROWID""",
)
_COLUMNS = "parent, name, ino, size, etag, mtime_ns, listed_at"
_GONE_COLUMNS = "parent, name, ino, size, etag, mtime_ns, NULL"

# A row of the directory is kept by the new listing: same name and kind and, for a
# file, the same version, and no directory of that name hides it.
_KEPT = """EXISTS (
    SELECT 1 FROM staged s WHERE s.listing = :l AND s.dir = :d AND s.name = entries.name
    AND ((entries.size IS NULL AND s.kind = 1)
         OR (entries.size IS NOT NULL AND s.kind = 0 AND s.size = entries.size
             AND s.etag = entries.etag AND (s.etag != '' OR s.mtime_ns = entries.mtime_ns)
             AND NOT EXISTS (SELECT 1 FROM staged h WHERE h.listing = :l AND h.dir = :d
                             AND h.name = entries.name AND h.kind = 1))))"""
_NOT_KEPT = f"SELECT ino, name, size IS NULL FROM entries WHERE parent = :p AND NOT {_KEPT}"
_TO_GONE = ("INSERT OR REPLACE INTO gone SELECT ino, parent, name, size, etag, mtime_ns "
            "FROM entries WHERE ino = ?")
_APPLY_MTIME = """UPDATE entries SET mtime_ns = s.mtime_ns FROM staged s
    WHERE entries.parent = :p AND entries.size IS NOT NULL
    AND s.listing = :l AND s.dir = :d AND s.name = entries.name AND s.kind = 0
    AND s.mtime_ns != entries.mtime_ns"""
_APPLY_NEW = """INSERT INTO entries (parent, name, ino, size, etag, mtime_ns)
    SELECT :p, s.name, :base + ROW_NUMBER() OVER (ORDER BY s.name),
           CASE WHEN s.kind = 1 THEN NULL ELSE s.size END, s.etag, s.mtime_ns
    FROM staged s WHERE s.listing = :l AND s.dir = :d
    AND (s.kind = 1 OR NOT EXISTS (SELECT 1 FROM staged h WHERE h.listing = :l
                                   AND h.dir = :d AND h.name = s.name AND h.kind = 1))
    AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.parent = :p AND e.name = s.name)"""
_HIDDEN = """SELECT f.name FROM staged f WHERE f.listing = :l AND f.dir = :d AND f.kind = 0
    AND EXISTS (SELECT 1 FROM staged h WHERE h.listing = :l AND h.dir = :d
                AND h.name = f.name AND h.kind = 1)"""
_SUBTREE = """WITH RECURSIVE sub(ino) AS (
        SELECT ?1 UNION ALL SELECT e.ino FROM entries e JOIN sub ON e.parent = sub.ino)
    SELECT ino FROM sub WHERE ino != ?1"""


# readdir's entry: name, inode, size (None: a directory), mtime in ns.
Dirent = tuple[str, int, int | None, int]


class InvalidDatabase(Exception):
    """A database file that is not a namespace of this format, source and prefix."""


class Row(NamedTuple):
    """A validated entry (`gone`: it lost its name)."""

    parent: int
    name: str
    ino: int
    size: int | None  # None: a directory
    etag: str
    mtime_ns: int
    listed_at: float | None
    gone: bool = False

    @property
    def is_dir(self) -> bool:
        return self.size is None


@dataclass
class Applied:
    """What applying a listing changed: the names that went (or changed), to tell the
    kernel; `more` if there were more than CHANGES_REPORTED of a directory."""

    gone: list[tuple[int, str]] = field(default_factory=list)  # (parent inode, name)
    more: set[int] = field(default_factory=set)  # directories with too many changes
    entries: int = 0  # entries added


def valid(raw: tuple, gone: bool = False) -> Row | None:
    """Return the Row of an `entries` (or `gone`) row as read back, or None if it is not
    one we wrote. On every row a query returns (~1 us): the common case first."""
    parent, name, ino, size, etag, mtime_ns, listed_at = raw
    if (type(ino) is int and type(parent) is int and type(name) is str and type(etag) is str
            and type(mtime_ns) is int and ino > 0 and parent >= 0
            and (size is None or (type(size) is int and size >= 0))
            and (listed_at is None or type(listed_at) is float or type(listed_at) is int)
            and len(etag) <= _MAX_ETAG
            and (ino == ROOT_INODE or _good_name(name))):
        return Row(parent, name, ino, size, etag, mtime_ns, listed_at, gone)
    return None


def _good_name(name: str) -> bool:
    """name_problem(name) is None, without encoding names of up to 63 characters (at
    most 4 bytes each in UTF-8, so never over the limit)."""
    if len(name) > 63:
        return name_problem(name) is None
    return bool(name) and "/" not in name and "\0" not in name and name != "." \
        and name != ".."


def _connect(path: Path | str) -> sqlite3.Connection:
    """A connection to `path` (a `file:` URI if it is a str starting with one)."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                           timeout=5.0, uri=isinstance(path, str) and path.startswith("file:"))
    conn.execute("PRAGMA trusted_schema = OFF")
    return conn


def check_schema(conn: sqlite3.Connection) -> None:
    """Raise InvalidDatabase unless the file holds exactly our tables and indexes."""
    found = {(kind, name, " ".join(sql.split()) if isinstance(sql, str) else sql)
             for kind, name, sql in conn.execute(
                 "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite%'")}
    expected = set()
    for statement in SCHEMA:
        words = statement.split()
        kind = "table" if "TABLE" in words[:2] else "index"
        expected.add((kind, words[words.index(kind.upper()) + 1], " ".join(words)))
    if found != expected:
        raise InvalidDatabase("its tables are not a listing snapshot's")


class ListingDB:
    """The entries of one mount; see the module docstring."""

    def __init__(self, path: Path, source: str, prefix: str, *,
                 snapshot_fd: int | None = None) -> None:
        """Open `path`, a new empty file of the user's: created as an empty namespace,
        or, given `snapshot_fd` (an open snapshot; the ListingDB owns it), over that
        snapshot, checked (schema, meta, root: a few pages, whatever its size).

        A snapshot is served read-only where it lies (it never changes in place:
        snapshot.py) until the first write copies it into `path` (`materialize`, in
        the writer's thread): the mount answers before a byte of a large snapshot is
        copied, and every row is still validated as it is read.

        Raises InvalidDatabase or sqlite3.Error for a file that cannot be used.
        """
        self.path = path
        self.source = source
        self.prefix = prefix
        self._listings = 0
        self._recent: dict[int, Row] = {}  # by inode; see the module docstring
        self._generation = 0  # moved by every write transaction, at its start and end
        self._snapshot_fd = snapshot_fd
        self._retired: list[sqlite3.Connection] = []
        self._w: sqlite3.Connection | None = None
        try:
            if snapshot_fd is not None:
                # immutable: no locks, no journal; the file is never written in place.
                self._r = _connect(f"file:/proc/self/fd/{snapshot_fd}?mode=ro&immutable=1")
                self._check(self._r)
            else:
                self._open_writer()
                self._create()
                self._r = _connect(path)
            self._r.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
        except BaseException:
            self.close()
            raise

    def _open_writer(self) -> None:
        self._w = _connect(self.path)
        self._w.execute("PRAGMA journal_mode = WAL")
        # A working copy is disposable (a crash discards it): no fsync per commit.
        self._w.execute("PRAGMA synchronous = OFF")

    def materialize(self) -> None:
        """Copy the snapshot into this mount's working copy and serve that (once; in the
        writer's thread, before its first write). Blocks on the disk (~0.1 s per
        100 MB); raises OSError, sqlite3.Error."""
        if self._w is not None:
            return
        if self._snapshot_fd is not None:
            with open(self.path, "r+b") as work:
                os.lseek(self._snapshot_fd, 0, os.SEEK_SET)
                while os.copy_file_range(self._snapshot_fd, work.fileno(), 16 << 20):
                    pass
        self._open_writer()
        assert self._w is not None
        self._w.execute("DELETE FROM staged")
        reader = _connect(self.path)
        reader.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
        # The old reader may be in a query on the trio thread: it is closed with the rest.
        self._retired.append(self._r)
        self._r = reader
        if self._snapshot_fd is not None:
            os.close(self._snapshot_fd)
            self._snapshot_fd = None

    def _check(self, conn: sqlite3.Connection) -> None:
        try:
            check_schema(conn)
            meta = dict(conn.execute("SELECT key, value FROM meta"))
            root = conn.execute(f"SELECT {_COLUMNS} FROM entries WHERE ino = ?",
                                (ROOT_INODE,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise InvalidDatabase(str(exc)) from None
        if meta.get("format") != FORMAT:
            raise InvalidDatabase(f"format {meta.get('format')!r}, not {FORMAT}")
        if (meta.get("source"), meta.get("prefix")) != (self.source, self.prefix):
            raise InvalidDatabase("it is the listing of another container or prefix")
        if type(meta.get("next_ino")) is not int or meta["next_ino"] <= ROOT_INODE:
            raise InvalidDatabase("its inode counter is missing")
        if root is None or (row := valid(root)) is None or not row.is_dir or row.parent != 0:
            raise InvalidDatabase("it has no root directory")
        self._next_ino = meta["next_ino"]

    def _create(self) -> None:
        with self.write():
            for statement in SCHEMA:
                self._w.execute(statement)
            self._next_ino = ROOT_INODE + 1
            self._w.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("format", FORMAT), ("source", self.source), ("prefix", self.prefix),
                ("next_ino", self._next_ino), ("container_version", None)])
            self._w.execute("INSERT INTO entries (parent, name, ino) VALUES (0, '', ?)",
                            (ROOT_INODE,))

    def close(self) -> None:
        for conn in (getattr(self, "_r", None), *self._retired, self._w):
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
        if self._snapshot_fd is not None:
            os.close(self._snapshot_fd)
            self._snapshot_fd = None

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the writer connection: committed, or rolled back
        (the snapshot copied first: `materialize`). The rows kept in memory are dropped
        before it starts and once it ended."""
        self.materialize()
        assert self._w is not None
        self._forget_recent()
        try:
            self._w.execute("BEGIN IMMEDIATE")
            try:
                yield self._w
                self._w.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._w.execute("ROLLBACK")
                raise
        finally:
            self._forget_recent()

    def _forget_recent(self) -> None:
        # Generation first: a reader's query in flight then keeps nothing. (Atomic
        # enough across threads: an int rebound and a new dict, under the GIL.)
        self._generation += 1
        self._recent = {}

    def _keep(self, row: Row, generation: int) -> None:
        """Keep `row`, read by a query started at `generation`, unless a write overlapped it."""
        recent = self._recent
        if generation != self._generation:
            return
        if len(recent) >= RECENT_ROWS:
            del recent[next(iter(recent))]  # the oldest kept
        recent[row.ino] = row

    # Reads (the reader connection: one thread at a time, the trio thread in a mount).

    def _rows(self, raws: Iterable[tuple], gone: bool = False) -> list[Row]:
        rows = []
        for raw in raws:
            row = valid(raw, gone)
            if row is None:
                logs.once(log, logging.WARNING, f"badrow:{self.path}",
                          "the listing database %s has invalid rows: skipped", self.path)
            else:
                rows.append(row)
        return rows

    def _one(self, sql: str, args: tuple) -> Row | None:
        rows = self._rows(self._r.execute(sql, args))
        return rows[0] if rows else None

    def lookup(self, parent: int, name: str) -> Row | None:
        """The entry `name` of directory `parent`, or None."""
        generation = self._generation
        found = self._one(f"SELECT {_COLUMNS} FROM entries WHERE parent = ? AND name = ?",
                          (parent, name))
        if found is not None:
            self._keep(found, generation)
        return found

    def row(self, ino: int) -> Row | None:
        """The entry of inode `ino`, with its name or gone, or None."""
        found = self._recent.get(ino)
        if found is not None:
            return found
        generation = self._generation
        found = self._one(f"SELECT {_COLUMNS} FROM entries WHERE ino = ?", (ino,))
        if found is None:
            rows = self._rows(self._r.execute(
                f"SELECT {_GONE_COLUMNS} FROM gone WHERE ino = ?", (ino,)), gone=True)
            found = rows[0] if rows else None
        if found is not None:
            self._keep(found, generation)
        return found

    def page(self, parent: int, after: str | None, limit: int) -> list[Row]:
        """Up to `limit` entries of `parent` by name, after the name `after`."""
        return self._rows(self._r.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE parent = ? AND name > ? ORDER BY name "
            "LIMIT ?", (parent, after if after is not None else "", limit)))

    def page_at(self, parent: int, offset: int, limit: int) -> list[Row]:
        """Up to `limit` entries of `parent` by name, from position `offset` (linear:
        only for a seekdir to a position no page ended at)."""
        return self._rows(self._r.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE parent = ? ORDER BY name LIMIT ? OFFSET ?",
            (parent, limit, offset)))

    def dirents(self, parent: int, after: str | None, limit: int, offset: int = 0
                ) -> list[Dirent]:
        """readdir's page: up to `limit` (name, inode, size or None, mtime_ns) of `parent`
        by name, after the name `after` (None: from position `offset`, linear).

        readdir's hot path (a million entries per walk): four columns, validated inline,
        no Row per entry.
        """
        if after is not None:
            raws = self._r.execute(
                "SELECT name, ino, size, mtime_ns FROM entries WHERE parent = ? AND name > ? "
                "ORDER BY name LIMIT ?", (parent, after, limit)).fetchall()
        else:
            raws = self._r.execute(
                "SELECT name, ino, size, mtime_ns FROM entries WHERE parent = ? ORDER BY name "
                "LIMIT ? OFFSET ?", (parent, limit, offset)).fetchall()
        good = [raw for raw in raws if type(raw[1]) is int and raw[1] > ROOT_INODE
                and type(raw[3]) is int and type(raw[0]) is str and _good_name(raw[0])
                and (raw[2] is None or (type(raw[2]) is int and raw[2] >= 0))]
        if len(good) != len(raws):
            logs.once(log, logging.WARNING, f"badrow:{self.path}",
                      "the listing database %s has invalid rows: skipped", self.path)
        return good

    def subdirs(self, parent: int, limit: int) -> list[Row]:
        """Up to `limit` subdirectories of `parent`, by name."""
        return self._rows(self._r.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE parent = ? AND size IS NULL ORDER BY name "
            "LIMIT ?", (parent, limit)))

    def files(self, parent: int, limit: int) -> list[Row]:
        """Up to `limit` files of `parent`, by name."""
        return self._rows(self._r.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE parent = ? AND size IS NOT NULL "
            "ORDER BY name LIMIT ?", (parent, limit)))

    def file_from(self, ino: int) -> int | None:
        """The first file's inode at or after `ino` (None: there is none)."""
        found = self._r.execute(
            "SELECT ino FROM entries WHERE ino >= ? AND size IS NOT NULL ORDER BY ino LIMIT 1",
            (ino,)).fetchone()
        return found[0] if found and type(found[0]) is int else None

    def inodes(self) -> int:
        """How many inodes were ever handed out (statfs's file count)."""
        found = self._r.execute("SELECT value FROM meta WHERE key = 'next_ino'").fetchone()
        return found[0] - 1 if found and type(found[0]) is int else ROOT_INODE

    def unlisted(self) -> bool:
        """Whether some directory was never listed (the namespace is partial)."""
        return self._r.execute(
            "SELECT EXISTS (SELECT 1 FROM entries WHERE size IS NULL AND listed_at IS NULL)"
        ).fetchone()[0] == 1

    def listed_before(self, when: float) -> bool:
        """Whether a directory's listing is older than `when`."""
        return self._r.execute(
            "SELECT EXISTS (SELECT 1 FROM entries WHERE size IS NULL AND listed_at < ?)",
            (when,)).fetchone()[0] == 1

    def meta(self, key: str) -> object:
        found = self._r.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return found[0] if found else None

    # Writes (one worker thread at a time; the writer connection).

    def new_listing(self) -> int:
        """A number for a listing's staged pages (unique in this database's life)."""
        self._listings += 1
        return self._listings

    def stage(self, listing: int, entries: Sequence[Entry]) -> None:
        """Add the entries of one page to `listing` (duplicates are kept once)."""
        rows = [(listing, e.dir, e.name, DIRECTORY, 0, "", 0) if e.obj is None else
                (listing, e.dir, e.name, FILE, e.obj.size, e.obj.etag, e.obj.mtime_ns)
                for e in entries]
        with self.write() as conn:
            conn.executemany("INSERT OR IGNORE INTO staged VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def discard(self, listing: int) -> None:
        """Forget a listing that will not be applied."""
        with self.write() as conn:
            conn.execute("DELETE FROM staged WHERE listing = ?", (listing,))

    def apply_dir(self, listing: int, parent: int, dir_key: str, now: float) -> Applied:
        """Make directory `parent` (key `dir_key`) hold exactly the staged listing."""
        applied = Applied()
        with self.write():
            self._apply(listing, parent, dir_key, now, applied)
            self._finish(listing)
        return applied

    def apply_tree(self, listing: int, dir_keys: Iterable[str], now: float) -> Applied:
        """Make every directory of `dir_keys` (the prefix's own among them) hold exactly
        its staged entries, parents before children, in one transaction."""
        applied = Applied()
        inodes = {self.prefix: ROOT_INODE}
        with self.write():
            for dir_key in sorted(dir_keys, key=lambda k: (k.count("/"), k)):
                if dir_key != self.prefix:
                    parent_key, name = _split_dir(dir_key)
                    parent = inodes.get(parent_key)
                    found = None if parent is None else self._w.execute(
                        "SELECT ino FROM entries WHERE parent = ? AND name = ? "
                        "AND size IS NULL", (parent, name)).fetchone()
                    if found is None:
                        continue  # under an unusable name
                    inodes[dir_key] = found[0]
                self._apply(listing, inodes[dir_key], dir_key, now, applied)
            self._finish(listing)
        return applied

    def _finish(self, listing: int) -> None:
        self._w.execute("DELETE FROM staged WHERE listing = ?", (listing,))
        self._w.execute("UPDATE meta SET value = ? WHERE key = 'next_ino'", (self._next_ino,))

    def _apply(self, listing: int, parent: int, dir_key: str, now: float,
               applied: Applied) -> None:
        args = {"l": listing, "d": dir_key, "p": parent}
        for (name,) in self._w.execute(_HIDDEN, args).fetchall():
            logs.once(log, logging.WARNING, f"hidden:{dir_key}{name}",
                      "object %r is hidden: a directory of the same name exists",
                      dir_key + name)
        leaving = []
        for ino, name, is_dir in self._w.execute(_NOT_KEPT, args).fetchall():
            leaving.append(ino)
            if is_dir:  # its subtree goes with it
                leaving += [sub for (sub,) in self._w.execute(_SUBTREE, (ino,)).fetchall()]
            if len(applied.gone) < CHANGES_REPORTED:
                applied.gone.append((parent, name))
            else:
                applied.more.add(parent)
        if leaving:
            self._w.executemany(_TO_GONE, [(ino,) for ino in leaving])
            self._w.executemany("DELETE FROM entries WHERE ino = ?", [(ino,) for ino in leaving])
        self._w.execute(_APPLY_MTIME, args)
        added = self._w.execute(_APPLY_NEW, {**args, "base": self._next_ino - 1}).rowcount
        self._next_ino += added
        applied.entries += added
        self._w.execute("UPDATE entries SET listed_at = ? WHERE ino = ?", (now, parent))

    def set_meta(self, key: str, value: object) -> None:
        with self.write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def copy_to(self, target: Path) -> None:
        """Write a compact copy of the entries to `target`, a new empty file of the
        user's (not synced: the caller syncs and renames it)."""
        self.materialize()
        assert self._w is not None
        self._w.execute("VACUUM INTO ?", (str(target),))
        conn = _connect(target)
        try:
            conn.execute("PRAGMA journal_mode = DELETE")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM gone")
            conn.execute("DELETE FROM staged")
            conn.execute("COMMIT")
        finally:
            conn.close()


def _split_dir(dir_key: str) -> tuple[str, str]:
    """'a/b/' -> ('a/', 'b')."""
    parent, _, name = dir_key[:-1].rpartition("/")
    return (parent + "/" if parent else ""), name


def fsync_file(path: Path, flags: int = os.O_NOFOLLOW) -> None:
    """fsync `path` (a directory with flags=os.O_DIRECTORY); raises OSError."""
    fd = os.open(path, os.O_RDONLY | flags | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["ROOT_INODE", "Applied", "InvalidDatabase", "ListingDB", "Row", "usable"]
