"""Listing snapshots: the namespace of a container prefix, kept in the cache directory.

Layout, in the cache directory (private: 0700 directory, 0600 files):

    listings-v1/<source>-<prefix>.db            a snapshot (database.py's format), or none
    listings-v1/<source>-<prefix>.work-<pid>-<start>.db (+ -wal, -shm)
                                                a running mount's working copy
    listings-v1/.tmp-<random>.db                a snapshot being written

(<source> and <prefix> are 16 hex digits of a hash each, so `objmount cache clear
REMOTE:CONTAINER` finds a container's snapshots by name.)

Invariants:
- a snapshot is written whole, then synced and renamed into place: readers see
  the old file or the new one, never a part. Nobody opens a snapshot to write
  it: a mount serves it read-only where it lies and copies it (a private working
  copy; 100 MB copies in ~0.1 s) only before its first write, in the background,
  and publishes a new one from its copy, so mounts, `objmount warm` and `etl load`
  may publish at once (the last rename wins, each file is whole);
- a snapshot that is not a regular file of the user's, not SQLite, not of this
  format, or of another source or prefix, is ignored with one warning and
  replaced by the next publish;
- working copies of processes that are gone (a crash, SIGKILL) are removed by
  the next mount of the cache directory;
- their bytes count in --cache-max-size (the block store measures this
  directory with its own files).

Every function blocks on the filesystem and SQLite.
"""

import contextlib
import hashlib
import logging
import os
import re
import secrets
import sqlite3
import stat
from collections.abc import Iterable
from pathlib import Path

from objmount.backends.base import ListPage
from objmount.cache.index import process_start
from objmount.namespace.database import InvalidDatabase, ListingDB, fsync_file
from objmount.namespace.listing import entries_of_tree
from objmount.private import private_file_in, private_subdirs

log = logging.getLogger(__name__)

LISTINGS_DIR = "listings-v1"
FIX = "choose another --cache-dir"
# A snapshot opened to serve is read ahead into the page cache up to this size.
READ_AHEAD_BYTES = 256 << 20
_WORK = re.compile(r"(?P<stem>[0-9a-f]{16}-[0-9a-f]{16})\.work-(?P<pid>\d+)-(?P<start>\d+)\.db")
_STEM = re.compile(r"[0-9a-f]{16}-[0-9a-f]{16}")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def stem(source: str, prefix: str) -> str:
    """The file name stem of the snapshot of `prefix` in container `source`."""
    return f"{_digest(source)}-{_digest(prefix)}"


def listings_dir(cache_dir: Path) -> Path:
    """Return (creating it 0700) the listings directory of a private cache directory."""
    private_subdirs(cache_dir, [LISTINGS_DIR], "cache directory", FIX)
    return cache_dir / LISTINGS_DIR


def snapshot_path(cache_dir: Path, source: str, prefix: str) -> Path:
    return cache_dir / LISTINGS_DIR / f"{stem(source, prefix)}.db"


def _new_private_file(directory: Path, name: str) -> Path:
    path = directory / name
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600))
    return path


def remove_db(path: Path) -> None:
    """Remove a database file and its WAL and shared-memory files, if any."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def remove_dead_copies(directory: Path) -> int:
    """Remove the working copies of processes that no longer run; return how many."""
    removed = 0
    for name in os.listdir(directory):
        found = _WORK.fullmatch(name)
        if found and process_start(int(found["pid"])) != int(found["start"]):
            remove_db(directory / name)
            removed += 1
        elif name.startswith(".tmp-") and name.endswith(".db"):
            with contextlib.suppress(OSError):
                if process_start(int(name.split("-")[1])) is None:
                    remove_db(directory / name)
    return removed


def open_working_copy(cache_dir: Path, source: str, prefix: str) -> tuple[ListingDB, bool]:
    """Open this mount's working copy of the snapshot of `prefix` (a new, empty namespace
    if there is no usable snapshot). Return it and whether it came from a snapshot.

    Raises ConfigError if the listings directory or a file in it is not the user's.
    """
    directory = listings_dir(cache_dir)
    remove_dead_copies(directory)
    snapshot = snapshot_path(cache_dir, source, prefix)
    pid = os.getpid()
    work = directory / f"{snapshot.stem}.work-{pid}-{process_start(pid) or 0}.db"
    remove_db(work)
    _new_private_file(directory, work.name)
    if private_file_in(directory, snapshot.name, "listing snapshot", FIX):
        try:
            return ListingDB(work, source, prefix, snapshot_fd=_open_snapshot(snapshot)), True
        except (OSError, InvalidDatabase, sqlite3.Error) as exc:
            log.warning("ignoring the listing snapshot %s (%s): listing from the store; a "
                        "new snapshot replaces it", snapshot, exc)
            remove_db(work)
            _new_private_file(directory, work.name)
    return ListingDB(work, source, prefix), False


def _open_snapshot(path: Path) -> int:
    """A descriptor of the snapshot at `path`, a regular file of the user's (what is served
    until it is copied: a snapshot renamed over it meanwhile does not change it)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise InvalidDatabase("it is not a regular file of the user's")
    # A walk reads most of it soon, page by page: the kernel reads it in ahead, in the
    # background and in large requests (the first READ_AHEAD_BYTES: ~4M entries).
    with contextlib.suppress(OSError):  # advice only
        os.posix_fadvise(fd, 0, min(info.st_size, READ_AHEAD_BYTES), os.POSIX_FADV_WILLNEED)
    return fd


def open_private(directory: Path, source: str, prefix: str) -> ListingDB:
    """A new, empty namespace database in `directory` (private to the user), for a mount
    without a cache directory or a test; the caller removes it (`discard`)."""
    path = _new_private_file(directory, f"{stem(source, prefix)}.private-{os.getpid()}-"
                                        f"{secrets.token_hex(4)}.db")
    return ListingDB(path, source, prefix)


def discard(db: ListingDB) -> None:
    """Close a working copy and remove its files."""
    db.close()
    remove_db(db.path)


def publish(db: ListingDB, cache_dir: Path) -> Path:
    """Write `db`'s live entries as the snapshot of its source and prefix: a copy,
    synced, renamed into place. Return the snapshot's path. Raises OSError, sqlite3.Error."""
    directory = listings_dir(cache_dir)
    tmp = _new_private_file(directory, f".tmp-{os.getpid()}-{secrets.token_hex(6)}.db")
    try:
        db.copy_to(tmp)  # VACUUM INTO fills an empty file: this one, private
        fsync_file(tmp)
        target = snapshot_path(cache_dir, db.source, db.prefix)
        os.rename(tmp, target)
        fsync_file(directory, os.O_DIRECTORY)
        return target
    except BaseException:
        remove_db(tmp)
        raise


def build(cache_dir: Path, source: str, prefix: str, pages: Iterable[ListPage],
          container_version: str | None, now: float) -> Path:
    """Publish a snapshot from the pages of one complete recursive listing of `prefix`
    (`objmount warm`, `etl load`). `container_version` is the store's, asked before the
    listing (None: none). Returns its path; raises OSError, sqlite3.Error."""
    directory = listings_dir(cache_dir)
    db = open_private(directory, source, prefix)
    try:
        listing = db.new_listing()
        dirs = {prefix}
        for page in pages:
            db.stage(listing, entries_of_tree(prefix, page, dirs))
        db.apply_tree(listing, dirs, now)
        db.set_meta("container_version", container_version)
        return publish(db, cache_dir)
    finally:
        discard(db)


def bytes_on_disk(cache_dir: Path) -> int:
    """Disk the listings directory's files take (0 if there is none)."""
    total = 0
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(cache_dir / LISTINGS_DIR):
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                total += max(info.st_size, info.st_blocks * 512)
    return total


def remove_snapshots(cache_dir: Path, source: str | None = None) -> int:
    """Remove the snapshots (of `source` only, if given); return how many. Working copies
    of running mounts stay (each publishes its own at unmount: `objmount cache clear`
    then clears what it finds, like blocks being written)."""
    directory = cache_dir / LISTINGS_DIR
    if not directory.is_dir():
        return 0
    head = None if source is None else _digest(source) + "-"
    removed = 0
    for name in os.listdir(directory):
        stem_, _, suffix = name.partition(".")
        if suffix == "db" and _STEM.fullmatch(stem_) and (head is None or name.startswith(head)):
            remove_db(directory / name)
            removed += 1
    return removed
