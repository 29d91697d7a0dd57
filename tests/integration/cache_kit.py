"""What the tests of the block cache through real mounts share (test_cache.py,
test_faults_cache.py): the block files on disk, waiting for the writes behind the
reads, re-reading through the mount past the kernel's page cache, damaging files."""

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.mounting import MountProcess
from tests.integration.mounting import mount_stats as stats
from tests.servers.net import wait_until


def block_files(cache_dir: Path) -> list[Path]:
    """The cache's block files, sorted by path."""
    return sorted(cache_dir.rglob("*.blk"))


def cached_block_bytes(cache_dir: Path) -> int:
    return sum(path.stat().st_size for path in cache_dir.rglob("*.blk"))


def all_written(mount: MountProcess) -> None:
    """Wait until every block fetched is in the cache (writes go on behind the reads)."""
    wait_until(lambda: stats(mount)["blocks_stored"] == stats(mount)["gets"], 30,
               "block writes")


def reread(path: Path, size: int = 1 << 20) -> bytes:
    """Read the first `size` bytes of a file through the mount again: its pages dropped
    first, so the read reaches the mount (which may serve it from the block file it
    keeps open)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return b"".join(os.pread(fd, 1 << 20, offset) for offset in range(0, size, 1 << 20))
    finally:
        os.close(fd)


def flip_a_byte(path: Path) -> None:
    """Corrupt a block file in place: one byte of its middle changed."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x55
    path.write_bytes(bytes(raw))


# Where a truncation leaves a block file: empty, within its header, within its data.
TRUNCATIONS = {"empty": lambda size: 0, "in the header": lambda size: 20,
               "half": lambda size: size // 2, "one byte short": lambda size: size - 1}


def truncate_in_place(path: Path, how: str) -> None:
    """Truncate a block file in place (the inode a mount may hold open) as TRUNCATIONS says."""
    os.truncate(path, TRUNCATIONS[how](path.stat().st_size))


@contextmanager
def root_mount(*args: str) -> Iterator[None]:
    """Run `mount *args` for the body (skipped where mounting is not allowed: not root),
    then unmount it lazily, however the body ends. The last arg is the mountpoint."""
    made = subprocess.run(["mount", *args], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount here (needs root): {made.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", args[-1]], capture_output=True, check=False)
