"""Cache layouts of objmount before store v3: found and removed safely, never opened.

Before v3 a cache directory was a diskcache directory: `cache.db` (+ -wal, -shm),
whose keys and values diskcache unpickles (code execution for anyone who could
write the directory), and block files `xx/<30 hex>.val` (layout b2) or
`xx/yy/<28 hex>.val` (diskcache's own). Store v3 never opens any of them: a
mount logs once that they are there and ignores them (they do not count in
--cache-max-size), and `objmount cache clear` removes them.

Invariants:
- only names of exactly those shapes are removed: regular files (an unlink never
  follows a link) and the user's own `xx` directories once empty;
- every directory is opened relative to its parent's descriptor with
  O_NOFOLLOW|O_DIRECTORY, so nothing outside the cache directory is ever listed or
  removed, even if a name on the way is (or becomes) a symlink;
- the scan that counts them (for `cache stats`) stops after SCAN_LIMIT entries.

Blocks on the filesystem.
"""

import contextlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DB_FILES = ("cache.db", "cache.db-wal", "cache.db-shm")
_DIR = re.compile(r"[0-9a-f]{2}")
_B2_FILE = re.compile(r"[0-9a-f]{30}\.val")
_DISKCACHE_FILE = re.compile(r"[0-9a-f]{28}\.val")
SCAN_LIMIT = 200_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class OldLayout:
    """What an old layout holds: files and their bytes (`complete`: all were counted)."""

    files: int = 0
    bytes: int = 0
    complete: bool = True


def present(directory: Path) -> bool:
    """Return True if `directory` holds an old layout (a look at its top level only)."""
    with contextlib.suppress(OSError):
        if any(os.path.lexists(directory / name) for name in DB_FILES):
            return True
        with os.scandir(directory) as entries:
            return any(_DIR.fullmatch(entry.name) for entry in entries)
    return False


def find(directory: Path, limit: int = SCAN_LIMIT) -> OldLayout | None:
    """Count the old layout's files in `directory`; None if there is none."""
    if not present(directory):
        return None
    found = OldLayout()
    for seen, (_fd, _name, info) in enumerate(_old_files(directory)):
        if seen >= limit:
            found.complete = False
            break
        found.files += 1
        found.bytes += info.st_blocks * 512
    return found


def remove(directory: Path) -> int:
    """Remove the old layout's files (and its emptied directories); return how many files."""
    removed = 0
    for fd, name, _info in _old_files(directory, remove_dirs=True):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=fd)
            removed += 1
    return removed


def _old_files(directory: Path, remove_dirs: bool = False
               ) -> Iterator[tuple[int, str, os.stat_result]]:
    """Yield (directory fd, name, lstat) of every old-layout file; with `remove_dirs`,
    rmdir each old directory after its files were yielded (it goes if it is empty)."""
    try:
        root = os.open(directory, _DIR_FLAGS)
    except OSError:
        return
    try:
        for name in DB_FILES:
            info = _regular(root, name)
            if info is not None:
                yield root, name, info
        for name in _names(root, _DIR):
            yield from _in_dir(root, name, remove_dirs, depth=0)
    finally:
        os.close(root)


def _in_dir(parent: int, name: str, remove_dirs: bool, depth: int
            ) -> Iterator[tuple[int, str, os.stat_result]]:
    fd = _open_own_dir(parent, name)
    if fd is None:
        return
    try:
        pattern = _B2_FILE if depth == 0 else _DISKCACHE_FILE
        for file_name in _names(fd, pattern):
            info = _regular(fd, file_name)
            if info is not None:
                yield fd, file_name, info
        if depth == 0:
            for sub in _names(fd, _DIR):
                yield from _in_dir(fd, sub, remove_dirs, depth=1)
    finally:
        os.close(fd)
    if remove_dirs:
        with contextlib.suppress(OSError):  # not empty (something else is in it)
            os.rmdir(name, dir_fd=parent)


def _names(fd: int, pattern: re.Pattern[str]) -> list[str]:
    with os.scandir(fd) as entries:
        return [entry.name for entry in entries if pattern.fullmatch(entry.name)]


def _regular(fd: int, name: str) -> os.stat_result | None:
    try:
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def _open_own_dir(parent: int, name: str) -> int | None:
    """Open the directory `name` in `parent` (never through a symlink) if it is the user's."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError:
        return None
    if os.fstat(fd).st_uid != os.geteuid():
        os.close(fd)
        return None
    return fd
