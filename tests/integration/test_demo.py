"""The README's first command: scripts/demo.py runs to the end and prints its numbers, and
Ctrl-C at any point exits 130 with one line, leaving no mount, no server and no
temporary directory behind.

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
PER_CLASS = 12  # 11 x (12 + 2 + 2) images of 60-120 KB: the demo's steps, in seconds


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


def test_the_demo_prints_objmount_and_rclone_epochs_side_by_side_and_cleans_up() -> None:
    demo = Demo()
    try:
        work = demo.wait_for(r"working in (\S+)")[1]
        port = demo.wait_for(r"local S3 server on 127\.0\.0\.1:(\d+)")[1]
        assert demo.finish() == 0, demo.output()
    finally:
        demo.kill()
    out = demo.output()
    images = 11 * PER_CLASS
    assert re.search(r"generated a Food-11-shaped archive: \d+ JPEGs in 11 classes, "
                     r"(\d+)-(\d+) KB each", out), out
    low, high = map(int, re.search(r"(\d+)-(\d+) KB each", out).groups())
    assert 60 <= low <= high <= 120  # Food-11's photos
    assert "loaded it into bucket food11 with `objmount etl run" in out
    assert "latency relay adding 20 ms of round trip" in out
    epoch = r"epoch {} \({}\): {} +(\d+) images/s: {} images in [\d.]+s"
    # Cold: every image fetched once, by its reader or ahead of it (then a hit).
    assert re.search(epoch.format(1, "cold", "objmount", images) +
                     rf", {images} GETs \(\d+ ahead of the reader\), cache hit rate \d+%", out)
    assert re.search(epoch.format(2, "warm", "objmount", images) +
                     r", 0 GETs \(0 ahead of the reader\), cache hit rate 100%", out)
    assert re.search(epoch.format(1, "cold", "rclone", images) + "$", out, re.MULTILINE)
    assert re.search(epoch.format(2, "warm", "rclone", images) + "$", out, re.MULTILINE)
    assert "unmounted, stopped the servers, deleted the working directory" in out
    table = out.rstrip().splitlines()[-3:]
    assert table[0].split() == ["images/s", "objmount", "rclone", "objmount/rclone"]
    assert [row.split()[:2] for row in table[1:]] == [["epoch", "(cold)"], ["epoch", "(warm)"]]
    assert_nothing_left(demo, work, port)


@pytest.mark.parametrize("after", [
    "generated a Food-11-shaped archive",  # the S3 server is starting
    "started a local S3 server",  # `objmount etl run` is starting
    "the mounts read through a latency relay",  # objmount is mounting
    "mounted demo:food11 with objmount",  # the DataLoader's workers are starting, or reading
    "mounted demo:food11 with rclone",  # the same, on rclone's mount
])
def test_ctrl_c_exits_130_with_one_line_and_leaves_nothing_behind(after: str) -> None:
    """Whatever the demo is doing when Ctrl-C reaches its process group (the workers
    included), it ends the same way: no traceback, one line, nothing left."""
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
    assert out.rstrip().splitlines()[-1] == "interrupted: nothing left mounted or running", out
    assert out.count("interrupted") == 1 and "Traceback" not in out, out
    assert_nothing_left(demo, work, port)
