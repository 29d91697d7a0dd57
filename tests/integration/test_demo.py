"""The README's first command: scripts/demo.py runs to the end and prints its numbers, and
Ctrl-C at any point leaves no mount, no server and no temporary directory behind.

The demo runs as a terminal would run it: in a session of its own, Ctrl-C being
SIGINT to its whole process group (its DataLoader workers and `objmount etl`
included).
"""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.mount

REPO = Path(__file__).parents[2]
PER_CLASS = 12  # 11 x (12 + 2 + 2) images: the demo's steps, in seconds


class Demo:
    """scripts/demo.py in a new session, its output collected line by line."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "scripts/demo.py"), "--per-class", str(PER_CLASS)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._new.put(line)
        self._new.put(None)

    def wait_for(self, pattern: str, timeout_s: float = 120) -> re.Match[str]:
        """Return the match of the first output line matching `pattern`, once it is printed."""
        deadline = time.monotonic() + timeout_s
        for line in self.lines:
            if match := re.search(pattern, line):
                return match
        while (line := self._new.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
            self.lines.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"{pattern!r} never printed:\n{self.output()}")

    def finish(self, timeout_s: float = 120) -> int:
        code = self.proc.wait(timeout=timeout_s)
        while (line := self._new.get(timeout=10)) is not None:
            self.lines.append(line)
        return code

    def output(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def session_processes(sid: int) -> list[str]:
    """Command lines of the processes still in session `sid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:
                found.append((stat.parent / "cmdline").read_text().replace("\0", " "))
        except (OSError, IndexError):
            continue  # exited meanwhile
    return found


def processes_mentioning(*needles: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_text().split("\0")
        except OSError:
            continue
        if any(needle in arg for arg in args for needle in needles):
            found.append(" ".join(args))
    return found


def assert_nothing_left(demo: Demo, work: str, port: str) -> None:
    assert not [line for line in Path("/proc/mounts").read_text().splitlines() if work in line]
    assert session_processes(demo.proc.pid) == []
    # The S3 server and the mount run in sessions of their own.
    assert processes_mentioning(work, f"127.0.0.1:{port}") == []
    assert not [cmd for cmd in processes_mentioning("moto_server") if f" -p {port}" in cmd]
    assert not Path(work).exists()


def test_the_demo_prints_cold_and_warm_images_per_second_and_cleans_up() -> None:
    demo = Demo()
    try:
        work = demo.wait_for(r"working in (\S+)")[1]
        port = demo.wait_for(r"local S3 server on 127\.0\.0\.1:(\d+)")[1]
        assert demo.finish() == 0, demo.output()
    finally:
        demo.kill()
    out = demo.output()
    images = 11 * PER_CLASS
    # Cold: every image fetched once, by its reader or ahead of it (then a hit).
    cold = re.search(rf"epoch 1 \(cold\): {images} images in .*= (\d+) images/s, {images} GETs "
                     r"\(\d+ ahead of the reader\), cache hit rate \d+%", out)
    warm = re.search(rf"epoch 2 \(warm\): {images} images in .*= (\d+) images/s, 0 GETs "
                     r"\(0 ahead of the reader\), cache hit rate 100%", out)
    assert cold and warm, out
    assert "loaded it into demo:food11 with `objmount etl run" in out
    assert out.rstrip().endswith("stopped the S3 server")
    assert_nothing_left(demo, work, port)


@pytest.mark.parametrize("after", [
    "started a local S3 server",  # the server is up
    "generated a Food-11-shaped archive",  # `objmount etl run` is starting
    "mounted demo:food11",
    "DataLoader with 4 workers",  # the workers are reading the first epoch
])
def test_ctrl_c_leaves_no_mount_no_server_no_files(after: str) -> None:
    demo = Demo()
    try:
        work = demo.wait_for(r"working in (\S+)")[1]
        port = demo.wait_for(r"local S3 server on 127\.0\.0\.1:(\d+)")[1]
        demo.wait_for(re.escape(after))
        os.killpg(demo.proc.pid, signal.SIGINT)
        code = demo.finish()
    finally:
        demo.kill()
    out = demo.output()
    assert code == 130, out
    assert "interrupted: nothing left mounted or running" in out
    assert_nothing_left(demo, work, port)
