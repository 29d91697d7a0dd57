"""Process faults: a mount whose daemon was SIGKILLed leaves a dead mountpoint
("Transport endpoint is not connected"); the next mount on it clears it and mounts."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.mounting import mounted

pytestmark = pytest.mark.mount


def test_a_dead_mountpoint_is_cleared_in_one_line_and_mounted_again(
    dataset: dict[str, bytes], config: Path, tmp_path: Path,
) -> None:
    mnt = tmp_path / "mnt"
    with mounted("remote:dataset", mnt, config) as first:
        assert (mnt / "nested/top.txt").read_bytes() == dataset["nested/top.txt"]
        os.killpg(first.proc.pid, signal.SIGKILL)  # its attributes stay in the kernel's cache
        first.proc.wait()
        second = subprocess.run(
            [sys.executable, "-m", "objmount", "mount", "remote:dataset", str(mnt), "--config",
             str(config), "--daemon", "--cache-dir", str(tmp_path / "mnt.cache")],
            capture_output=True, text=True, timeout=120, check=False)
        try:
            assert second.returncode == 0, second.stderr
            assert "was a dead mount" in second.stderr + second.stdout
            assert (mnt / "nested/top.txt").read_bytes() == dataset["nested/top.txt"]
        finally:
            subprocess.run([sys.executable, "-m", "objmount", "umount", str(mnt)],
                           capture_output=True, timeout=60, check=False)
