"""Mount objmount for real, in a subprocess, and always unmount afterwards."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bench.procs import die_with_parent
from objmount.mountpoint import is_mounted
from tests.servers.net import wait_until

MOUNT_DEADLINE_S = 30


def objmount(*args: str, timeout_s: float = 60, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run the objmount CLI to completion and return what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "objmount", *args],
        capture_output=True, text=True, timeout=timeout_s, check=False, **kwargs,
    )


def force_unmount(mountpoint: Path) -> None:
    """Unmount whatever is on `mountpoint`, lazily if it is busy."""
    if is_mounted(mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False,
                       capture_output=True)


@contextmanager
def mounted(spec: str, mountpoint: Path, config: Path, *args: str,
            wrapper: Sequence[str] = ()) -> Iterator["MountProcess"]:
    """Mount `spec` in the foreground in a subprocess; unmount and reap it however we leave.

    Unless `args` name one, the mount gets a --cache-dir of its own beside the
    mountpoint (never the user's ~/.cache). `wrapper` is a command that execs the
    mount (setpriv, a shell setting the umask...).
    """
    mountpoint.mkdir(parents=True, exist_ok=True)
    log_file = mountpoint.with_name(mountpoint.name + ".log")
    if not any(arg == "--cache-dir" or arg.startswith("--cache-dir=") for arg in args):
        args = (*args, "--cache-dir", str(mountpoint.with_name(mountpoint.name + ".cache")))
    proc = subprocess.Popen(
        [*wrapper, sys.executable, "-m", "objmount", "mount", spec, str(mountpoint), "--config",
         str(config), "-v", "--log-file", str(log_file), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        # A test run killed (even SIGKILL) SIGTERMs it: it unmounts, no mount is left.
        preexec_fn=die_with_parent,
    )
    mount = MountProcess(proc, mountpoint, log_file)
    try:
        mount.wait_mounted()
        yield mount
    except BaseException:
        # Shown by pytest with a failed test's captured output: why the mount failed it.
        print(f"--- the end of the mount's log ({log_file}) ---\n{mount.log()[-20000:]}")
        raise
    finally:
        mount.stop()


class MountProcess:
    """A running `objmount mount` process and where it logs."""

    def __init__(self, proc: subprocess.Popen[str], mountpoint: Path, log_file: Path) -> None:
        self.proc = proc
        self.path = mountpoint
        self.log_file = log_file

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def wait_mounted(self) -> None:
        deadline = time.monotonic() + MOUNT_DEADLINE_S
        while not is_mounted(self.path):
            if self.proc.poll() is not None:
                _, err = self.proc.communicate()
                raise RuntimeError(f"objmount exited {self.proc.returncode}: {err}\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"not mounted after {MOUNT_DEADLINE_S}s:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        """SIGTERM the process and reap it; unmount lazily if it did not. Returns its exit code."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        force_unmount(self.path)
        self.proc.communicate()
        return self.proc.returncode


def mount_stats(mount: MountProcess) -> dict[str, int]:
    """The mount's counters (its root xattr user.objmount.stats)."""
    return json.loads(os.getxattr(mount.path, "user.objmount.stats"))


def read_everything(mount: MountProcess, objects: dict[str, bytes]) -> None:
    """Read every object whole through the mount; each must be byte-exact."""
    for key, content in objects.items():
        assert (mount.path / key).read_bytes() == content, key


def wait_for_version(path: Path, content: bytes, timeout_s: float = 60) -> None:
    """Wait until the mount lists `path` at the version holding `content` (its MD5 is the
    ETag of a single PUT, on S3 and Swift). An expired listing answers at once from the
    old one while it is re-listed behind (stale-while-revalidate); listing the directory
    is what starts that re-listing."""
    want = hashlib.md5(content).hexdigest()

    def listed() -> bool:
        os.listdir(path.parent)
        try:
            return os.getxattr(path, "user.objmount.etag").decode().strip('"') == want
        except FileNotFoundError:
            return False

    wait_until(listed, timeout_s, f"{path.name} listed at its new version")
