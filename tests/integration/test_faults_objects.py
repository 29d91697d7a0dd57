"""Object changes under a running mount: an object deleted mid-epoch.

(An object replaced mid-epoch: test_consistency.py.) A handle opened before the
delete reads the right bytes (the blocks it already has) or EIO, never other
bytes and never a hang; once the listing is revalidated the name is gone
(ENOENT for stat and open); every other file keeps reading.
"""

import errno
import os
from pathlib import Path

import pytest

from tests.integration.bounds import within
from tests.integration.conftest import MiB, data
from tests.integration.fault_kit import EIO_BOUND_S, FAST, SLACK_S, fails_with, reads_within
from tests.integration.mounting import mounted
from tests.integration.stores import TestStore, put_many
from tests.servers.net import wait_until

pytestmark = pytest.mark.mount

DIR_CACHE_S = 1.0
# The re-listing that shows the delete: the listing's age, one listing round trip
# behind (stale-while-revalidate), slack for 2 shared cores at load 4+.
RELISTED_BOUND_S = DIR_CACHE_S + 2 * SLACK_S


def test_an_object_deleted_mid_epoch_reads_right_bytes_or_eio_then_is_enoent(
    store: TestStore, config: Path, tmp_path: Path,
) -> None:
    container = "deleted"
    objects = {"d/victim.bin": data("victim", 3 * MiB + 5),
               "d/other.bin": data("other", 200_000)}
    store.create_container(container)
    put_many(store, container, objects)
    victim = objects["d/victim.bin"]
    with mounted(f"remote:{container}", tmp_path / "mnt", config, *FAST, "--dir-cache-time",
                 f"{DIR_CACHE_S:g}s", "--dir-read-ahead", "0") as mount:
        path = mount.path / "d/victim.bin"
        fd = os.open(path, os.O_RDONLY)
        try:
            assert os.pread(fd, 4096, 0) == victim[:4096]
            store.delete(container, "d/victim.bin")
            # The open handle, at a block it has and at one it may not: right or EIO.
            for offset in (0, 2 * MiB + 17, 3 * MiB - 100):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # reach the mount
                with within(EIO_BOUND_S, f"deleted, open handle at {offset}: bytes or EIO"):
                    try:
                        got = os.pread(fd, 4096, offset)
                    except OSError as exc:
                        assert exc.errno == errno.EIO, exc
                    else:
                        assert got == victim[offset : offset + 4096], offset
        finally:
            os.close(fd)
        reads_within(SLACK_S, "deleted: another file reads", mount.path, objects, "d/other.bin")

        def gone() -> bool:
            return "victim.bin" not in os.listdir(mount.path / "d")

        with within(RELISTED_BOUND_S, "deleted: the re-listing drops the name"):
            wait_until(gone, RELISTED_BOUND_S + 1, "the delete listed")
        with within(SLACK_S, "deleted: stat and open are ENOENT"):
            fails_with(lambda: os.stat(path), errno.ENOENT)
            fails_with(lambda: open(path, "rb").close(), errno.ENOENT)
        reads_within(SLACK_S, "deleted: the other file still reads", mount.path, objects,
                     "d/other.bin")
        assert "Traceback" not in mount.log()
