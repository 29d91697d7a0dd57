"""Every write-type operation on the mount fails with EROFS and changes nothing."""

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.mounting import MountProcess

pytestmark = pytest.mark.mount

WRITES: dict[str, Callable[[Path], object]] = {
    "write": lambda m: open(m / "one.bin", "r+b"),  # noqa: SIM115
    "create": lambda m: open(m / "new.txt", "wb"),  # noqa: SIM115
    "truncate": lambda m: os.truncate(m / "one.bin", 0),
    "mkdir": lambda m: os.mkdir(m / "newdir"),
    "rmdir": lambda m: os.rmdir(m / "empty-dir"),
    "unlink": lambda m: os.unlink(m / "one.bin"),
    "rename": lambda m: os.rename(m / "one.bin", m / "two.bin"),
    "symlink": lambda m: os.symlink("one.bin", m / "link"),
    "link": lambda m: os.link(m / "one.bin", m / "hard"),
    "chmod": lambda m: os.chmod(m / "one.bin", 0o777),
    "setxattr": lambda m: os.setxattr(m / "one.bin", "user.x", b"1"),
}


@pytest.mark.parametrize("operation", sorted(WRITES))
def test_write_operations_fail_with_erofs(
    shared_mount: MountProcess, dataset, operation: str
) -> None:
    with pytest.raises(OSError) as raised:
        WRITES[operation](shared_mount.path)
    assert raised.value.errno == errno.EROFS
    assert (shared_mount.path / "one.bin").read_bytes() == dataset["one.bin"]
