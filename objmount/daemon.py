"""--daemon: run the mount in a detached child and return once it is live.

The parent re-executes objmount without --daemon, in a new session, and waits
on a pipe: the child writes `ok` once the FUSE mount exists, or `error: ...`
with the one-line reason it could not mount; before that, `note: ...` lines
the parent prints (a dead mount it cleared). The parent exits 0 only on `ok`.
The child's stderr goes to --log-file, opened as privately as the log itself.
The supervisor of --restart (supervisor.py) waits for each mount it starts the
same way.
"""

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from objmount import log as logsetup
from objmount.errors import ObjmountError

READY_FD_ENV = "OBJMOUNT_READY_FD"


def start_daemon(args: list[str], log_file: Path | None, timeout_s: float,
                 on_note: Callable[[str], None]) -> int:
    """Start `objmount <args>` detached; return its pid once mounted, or raise its error.

    `on_note` gets each note the child sends meanwhile. Raises ConfigError if
    `log_file` cannot be opened privately (logsetup.open_log_file).
    """
    stderr = logsetup.open_log_file(log_file) if log_file else subprocess.DEVNULL
    try:
        child, read_fd = spawn(args, stderr)
    finally:
        if log_file:
            os.close(stderr)
    message = wait_ready(read_fd, timeout_s, on_note)
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


def spawn(args: list[str], stderr: int | None) -> tuple[subprocess.Popen[bytes], int]:
    """Start `objmount <args>` in a session of its own with a ready pipe; return the
    process and the pipe's read end (for `wait_ready`). `stderr`: a descriptor, DEVNULL,
    or None (inherited)."""
    read_fd, write_fd = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != READY_FD_ENV}
    env[READY_FD_ENV] = str(write_fd)
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
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return child, read_fd


def wait_ready(fd: int, timeout_s: float, on_note: Callable[[str], None]) -> str | None:
    """Read the child's messages until `ok` or `error: ...` (returned), passing notes to
    `on_note`; '' on EOF, None on time-out. Closes `fd`."""
    deadline = time.monotonic() + timeout_s
    data = b""
    try:
        while True:
            while b"\n" in data:
                line, data = data.split(b"\n", 1)
                text = line.decode("utf-8", "replace").strip()
                if text.startswith("note: "):
                    on_note(text.removeprefix("note: "))
                elif text:
                    return text
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return data.decode("utf-8", "replace").strip()
            data += chunk
    finally:
        os.close(fd)


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


def notify_note(text: str) -> None:
    """In a daemon child, before `notify_parent`: a line for the parent to print."""
    fd_text = os.environ.get(READY_FD_ENV)
    if fd_text is not None:
        os.write(int(fd_text), f"note: {text}\n".encode())
