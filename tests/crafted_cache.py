"""Cache directories crafted by another local user (`nobody`), for the block store's tests.

What another user can plant: an old-layout diskcache `cache.db` whose rows unpickle to
code, rows naming files outside the cache directory, block files under the wrong name.
The user acts through `setpriv` and plain commands (the system Python's sqlite3 module
writes the database: the suite's own interpreter lives under /root, which `nobody`
cannot run).
"""

import os
import pickle
import pickletools
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

NOBODY = 65534
AS_NOBODY = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
SYSTEM_PYTHON = "/usr/bin/python3"
# diskcache's table, as objmount before store v3 wrote it (cache.db).
DISKCACHE_TABLE = (
    "CREATE TABLE Cache (rowid INTEGER PRIMARY KEY, key BLOB, raw INTEGER, store_time REAL,"
    " expire_time REAL, access_time REAL, access_count INTEGER DEFAULT 0, tag BLOB,"
    " size INTEGER DEFAULT 0, mode INTEGER DEFAULT 0, filename TEXT, value BLOB)"
)
MODE_BINARY, MODE_PICKLE = 2, 4  # diskcache.core.MODE_BINARY, MODE_PICKLE


class CreatesMarker:
    """Unpickled, it creates the file `marker` (what a planted pickle runs, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run `argv` as the user nobody; raise if it fails."""
    return subprocess.run([*AS_NOBODY, *argv], capture_output=True, text=True, check=True)


@contextmanager
def foreign_area() -> Iterator[Path]:
    """Yield a fresh root-owned directory in /tmp that `nobody` may enter, with a
    subdirectory `theirs/` that `nobody` owns (where that user crafts things)."""
    base = Path(tempfile.mkdtemp(prefix="objmount-foreign-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        (base / "theirs").mkdir()
        os.chown(base / "theirs", NOBODY, NOBODY)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def diskcache_key(key: tuple) -> bytes:
    """A tuple key as diskcache stored it: pickled, then optimised."""
    return pickletools.optimize(pickle.dumps(key, protocol=pickle.HIGHEST_PROTOCOL))


def old_layout_sql(marker: Path, block_keys: Iterable[tuple] = (),
                   outside_files: Iterable[str] = ()) -> str:
    """SQL for an old-layout cache.db that another user planted:
    - a row whose key is a pickle that creates `marker` when unpickled (iteration);
    - for each of `block_keys` (b2 key tuples), a row whose value is that pickle (a read);
    - for each of `outside_files`, a row of a block "stored" in that file (a removal).
    """
    payload = pickle.dumps(CreatesMarker(marker)).hex()
    statements = [DISKCACHE_TABLE]
    statements.append(f"INSERT INTO Cache (key, raw, store_time, access_time, mode, value) "
                      f"VALUES (X'{payload}', 0, 0, 0, {MODE_PICKLE}, X'{payload}')")
    for key in block_keys:
        statements.append(f"INSERT INTO Cache (key, raw, store_time, access_time, mode, value) "
                          f"VALUES (X'{diskcache_key(key).hex()}', 0, 0, 0, {MODE_PICKLE}, "
                          f"X'{payload}')")
    for i, path in enumerate(outside_files):
        key = diskcache_key(("b2", "s3:http://x/c", f"planted{i}", "e", 0, 100))
        statements.append(f"INSERT INTO Cache (key, raw, store_time, access_time, size, mode, "
                          f"filename) VALUES (X'{key.hex()}', 0, 0, 0, 100, {MODE_BINARY}, "
                          f"'{path}')")
    return ";\n".join(statements) + ";\n"


def write_database(db: Path, sql: str, *, as_other_user: bool) -> None:
    """Create the SQLite database `db` from `sql` (as nobody, or as ourselves)."""
    program = "import sqlite3, sys; sqlite3.connect(sys.argv[1]).executescript(sys.argv[2])"
    argv = (SYSTEM_PYTHON, "-c", program, str(db), sql)
    if as_other_user:
        as_nobody(*argv)
    else:
        subprocess.run(argv, check=True)


def du_bytes(path: Path) -> int:
    """Disk everything under `path` takes (itself included), as `du` counts it: the larger
    of allocated and apparent size of every entry, never following links."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in [".", *dirs, *files]:
            try:
                info = os.lstat(os.path.join(root, name))
            except FileNotFoundError:  # removed while we walked
                continue
            if name == "." and root != str(path):
                continue  # counted as an entry of its parent
            total += max(info.st_blocks * 512, info.st_size)
    return total
