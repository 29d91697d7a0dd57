"""An open file never mixes two versions of an object: it reads the old bytes or EIO."""

import errno
import os
from pathlib import Path

import pytest

from tests.integration.mounting import mounted
from tests.integration.stores import TestStore

pytestmark = pytest.mark.mount

MiB = 1 << 20


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
