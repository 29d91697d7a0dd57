"""The staging directory: extract unpacks into it, transform reshapes it, load uploads it.

Besides the dataset it holds what objmount keeps there, which is never data:
DOWNLOAD_DIR (extract's archive while it is unpacked, and partial downloads) and
the load manifest's name (MANIFEST_NAME; the manifest itself lives in the
container).

Invariants: the staging directory is private to the user (0700, checked like the
cache directory: see private.py), so nobody else reads the dataset or plants
files that load would upload; `data_files` is the one definition of what in it
is the dataset (what load uploads and extract counts).
"""

import os
from collections.abc import Iterator
from pathlib import Path

from objmount.errors import EtlError
from objmount.etl.manifest import MANIFEST_NAME
from objmount.private import private_dir

DOWNLOAD_DIR = ".objmount-download"
_OWN_NAMES = frozenset({DOWNLOAD_DIR, MANIFEST_NAME})


def staging_dir(path: Path) -> Path:
    """Return `path` (absolute) as a private staging directory, creating it 0700 if missing.

    Blocks on a few stat calls; raises ConfigError (see private.private_dir).
    """
    return private_dir(path, "staging directory", "choose another with --staging")


def download_dir(staging: Path) -> Path:
    """Return the private directory of `staging` that downloads go to, creating it."""
    return private_dir(staging / DOWNLOAD_DIR, "download directory",
                       "choose another staging directory with --staging")


def data_files(directory: Path) -> Iterator[tuple[Path, str]]:
    """Yield (path, POSIX path relative to `directory`) of every regular file under it,
    symlinks followed, sorted; objmount's own entries at its top are left out.

    Blocks on the disk. Raises EtlError if a subdirectory cannot be read (silently
    skipping it would let `load --clean` delete its objects).
    """

    def unreadable(exc: OSError) -> None:
        raise EtlError(f"cannot read {exc.filename}: {exc.strerror}")

    for root, dirs, names in os.walk(directory, onerror=unreadable):
        top = root == str(directory)
        dirs[:] = sorted(d for d in dirs if not (top and d in _OWN_NAMES))
        for name in sorted(names):
            path = Path(root, name)
            if not (top and name in _OWN_NAMES) and path.is_file():
                yield path, path.relative_to(directory).as_posix()
