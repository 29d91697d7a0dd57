"""Two versions of an object never mix: not in one open file, not across handles, not later.

An open file is pinned to the version it was opened on (it reads the old bytes or
EIO). The kernel's page cache belongs to the inode, not to the handle, so a
handle opened on a newer version while an older one is still open must neither
read pages the old handle filled nor fill pages the old handle reads; and once
both are closed, a fresh open reads the new version exactly.
"""

import errno
import os
from pathlib import Path

import pytest

from tests.integration.conftest import MiB, data
from tests.integration.mounting import mounted, wait_for_version
from tests.integration.stores import TestStore

pytestmark = pytest.mark.mount


def test_object_replaced_while_open_never_yields_new_bytes(
    store: TestStore, config: Path, tmp_path: Path
) -> None:
    store.create_container("versions")
    old = os.urandom(40 * MiB)
    store.put("versions", "model.bin", old)
    with mounted("remote:versions", tmp_path / "mnt", config) as mount:
        fd = os.open(mount.path / "model.bin", os.O_RDONLY)
        try:
            assert os.pread(fd, 1024, 0) == old[:1024]
            store.put("versions", "model.bin", os.urandom(40 * MiB))
            try:
                far = os.pread(fd, 1024, 35 * MiB)
            except OSError as exc:
                assert exc.errno == errno.EIO
                assert "changed since it was opened" in mount.log()
            else:
                assert far == old[35 * MiB : 35 * MiB + 1024]
        finally:
            os.close(fd)
        assert os.listdir(mount.path) == ["model.bin"]  # the mount is still serving


def read_whole(fd: int, size: int) -> bytes:
    """Read `size` bytes from offset 0 with 1 MiB preads (the kernel's largest read)."""
    return b"".join(os.pread(fd, MiB, offset) for offset in range(0, size, MiB))


@pytest.mark.parametrize("first", ["old handle reads first", "new handle reads first"])
def test_two_handles_across_a_replace_each_read_their_own_version(
    store: TestStore, config: Path, tmp_path: Path, first: str
) -> None:
    """The issue's reproduction: the new handle read 1 MiB of old bytes at 2 MiB, and a
    fresh open after both closed still read the mix. Same size, so that attributes
    cached by the kernel cannot hide or cause a difference."""
    container = "replaced-" + first.split()[0]
    size = 4 * MiB
    old, new = data(f"{container}-old", size), data(f"{container}-new", size)
    store.create_container(container)
    store.put(container, "obj.bin", old)
    # --dir-cache-time 0: every use of the directory starts a re-listing.
    args = ("--dir-cache-time", "0s")
    with mounted(f"remote:{container}", tmp_path / "mnt", config, *args) as mount:
        path = mount.path / "obj.bin"
        old_fd = os.open(path, os.O_RDONLY)
        try:
            assert read_whole(old_fd, size) == old  # the page cache now holds the old version
            store.put(container, "obj.bin", new)
            wait_for_version(path, new)  # so that the next open is of the new version
            new_fd = os.open(path, os.O_RDONLY)
            try:
                if first == "new handle reads first":
                    assert read_whole(new_fd, size) == new
                # The old handle re-reads after the new open: old bytes (or EIO), never new.
                assert read_whole(old_fd, size) == old
                assert read_whole(new_fd, size) == new
                assert read_whole(old_fd, size) == old
            finally:
                os.close(new_fd)
        finally:
            os.close(old_fd)
        # Both closed: a fresh open reads the new version, at once (no attr timeout to wait).
        assert path.read_bytes() == new
        assert path.read_bytes() == new  # and again, now from the kept page cache
