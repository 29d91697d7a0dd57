"""Child processes of the benchmark: start them so they cannot outlive it, stop them for sure.

Every server, relay and mount runs in its own session (Ctrl-C in the terminal
reaches only the benchmark, which then stops them in order) and gets SIGTERM
from Linux if the benchmark itself dies (PR_SET_PDEATHSIG).
"""

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child, before exec: ask Linux to SIGTERM it when the parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(args: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `args` in its own session, output appended to `log_path`."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(args), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True, preexec_fn=die_with_parent,
        )


def stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 15.0) -> None:
    """SIGTERM the process group of `proc`, SIGKILL it after `timeout_s`; reap it."""
    if proc is None or proc.poll() is not None:
        return
    for signum, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_main(main: Callable[[], int], prog: str) -> None:
    """Exit with `main()`'s status; Ctrl-C exits 130 and a RuntimeError (the harness's own
    "this failed, because") 1, each with one line (what ran is stopped). Anything else is
    a bug: its traceback shows."""
    try:
        sys.exit(main())
    except RuntimeError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; everything it started is stopped", file=sys.stderr)
        sys.exit(130)


def exit_on_signals() -> None:
    """Make SIGTERM and SIGHUP raise SystemExit, so with-blocks stop what they started."""

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)


def wait_until(ready: Callable[[], bool], timeout_s: float, what: str,
               alive: Callable[[], bool] = lambda: True) -> None:
    """Poll `ready` every 50 ms; raise RuntimeError if `alive` turns False or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if not alive():
            raise RuntimeError(f"{what}: process exited")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout_s:.0f}s")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def read_status_kib(pid: int, field: str) -> int | None:
    """Return a `kB` field of /proc/PID/status (VmHWM: peak RSS), or None if gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """Return user + system CPU seconds of `pid` so far (its threads included), or None."""
    times = cpu_times(pid)
    return None if times is None else times[0] + times[1]


def cpu_times(pid: int) -> tuple[float, float] | None:
    """Return (user, system) CPU seconds of `pid` so far (its threads included), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    # fields[0] is the state (field 3 of stat(5)): utime and stime are fields 14 and 15.
    return int(fields[11]) / ticks, int(fields[12]) / ticks
