"""--daemon: run the mount in a detached child and return once it is live.

The parent re-executes objmount without --daemon, in a new session, and waits
on a pipe: the child writes `ok` once the FUSE mount exists, or `error: ...`
with the one-line reason it could not mount. The parent exits 0 only on `ok`.
The child's stderr goes to --log-file, opened as privately as the log itself.
"""

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from objmount import log as logsetup
from objmount.errors import ObjmountError

READY_FD_ENV = "OBJMOUNT_READY_FD"


def start_daemon(args: list[str], log_file: Path | None, timeout_s: float) -> int:
    """Start `objmount <args>` detached; return its pid once mounted, or raise its error.

    Raises ConfigError if `log_file` cannot be opened privately (logsetup.open_log_file).
    """
    stderr = logsetup.open_log_file(log_file) if log_file else subprocess.DEVNULL
    read_fd, write_fd = os.pipe()
    env = dict(os.environ, **{READY_FD_ENV: str(write_fd)})
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "objmount", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            pass_fds=(write_fd,),
            env=env,
            start_new_session=True,
        )
    finally:
        os.close(write_fd)
        if log_file:
            os.close(stderr)
    message = _read_message(read_fd, timeout_s)
    if message == "ok":
        return child.pid
    if message is None:
        child.kill()
        raise ObjmountError(f"the mount did not come up within {timeout_s:.0f}s; gave up")
    if message.startswith("error: "):
        raise ObjmountError(message.removeprefix("error: "))
    code = child.wait(timeout=5)
    hint = f"; see {log_file}" if log_file else "; rerun with --log-file to see why"
    raise ObjmountError(f"the mount process exited (code {code}) before mounting{hint}")


def _read_message(fd: int, timeout_s: float) -> str | None:
    """Read the child's one-line message; '' on EOF, None on time-out."""
    deadline = time.monotonic() + timeout_s
    data = b""
    try:
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace").strip()


def notify_parent(error: str | None) -> None:
    """In a daemon child: tell the waiting parent `ok` or the error; no-op in the foreground."""
    fd_text = os.environ.pop(READY_FD_ENV, None)
    if fd_text is None:
        return
    fd = int(fd_text)
    try:
        os.write(fd, (f"error: {error}" if error else "ok").encode() + b"\n")
    finally:
        os.close(fd)
