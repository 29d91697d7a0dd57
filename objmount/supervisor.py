"""--restart N: a supervisor that mounts again after the serving process dies.

The supervisor runs the mount (`objmount mount ...` without --restart and
--daemon) as a child in a session of its own, and waits for it (daemon.py's
ready pipe tells it when the child has mounted). When the child ends:

- exit 0 (it unmounted: `objmount umount`, or a signal the supervisor passed on):
  the supervisor exits 0;
- before it ever mounted, the first time: the supervisor fails with its error
  (a configuration problem restarts would only repeat);
- killed by a signal (SIGKILL, the OOM killer) or failed: the mountpoint is left
  dead, and its users get ENOTCONN ("Transport endpoint is not connected"). After
  a backoff (FIRST_BACKOFF_S, doubling up to MAX_BACKOFF_S) a new child clears the
  dead mount (a lazy unmount, just before it mounts: mountpoint.py) and mounts
  again over the same cache directory, whose blocks it reads on (an unclean close
  is reconciled in the background: cache/blocks.py). At most `restarts` times in
  the supervisor's life; a restart that fails before mounting (the store still
  down) counts as one, and the next waits longer.

SIGTERM, SIGINT and SIGHUP to the supervisor go to the child (which unmounts
cleanly), and no restart follows. A SIGKILLed supervisor leaves its child
serving. Each event is one log line.
"""

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from types import FrameType

from objmount import daemon
from objmount.errors import ObjmountError

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
# How long a child may take to mount: its own checks are bounded by --contimeout
# and --timeout; this only catches a child that hangs before it reports.
READY_TIMEOUT_S = 300.0
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def describe_exit(code: int) -> str:
    """'killed by SIGKILL', 'exit code 1'."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


class Supervisor:
    """Runs `objmount <args>` and starts it again after it dies, `restarts` times at most."""

    def __init__(self, args: list[str], restarts: int, mountpoint: str,
                 on_ready: Callable[[], None], on_note: Callable[[str], None],
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """`on_ready` runs once, when the first child has mounted; `on_note` gets what it
        says before (a dead mount cleared; later children log that themselves)."""
        self.args = args
        self.restarts = restarts
        self.mountpoint = mountpoint
        self.on_ready = on_ready
        self.on_note = on_note
        self.sleep = sleep
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping: int | None = None  # the signal that asked us to stop

    def run(self) -> int:
        """Supervise until the mount ends for good; return the exit code for objmount.

        Raises ObjmountError if the first mount fails (its one-line reason).
        """
        previous = {sig: signal.signal(sig, self._stop) for sig in _FORWARDED}
        try:
            return self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _loop(self) -> int:
        used = 0
        backoff_s = FIRST_BACKOFF_S
        first = True
        while True:
            mounted, code = self._run_child(first)
            first = False
            if self.stopping is not None or code == 0:
                return 0 if code == 0 else 1
            if mounted:
                backoff_s = FIRST_BACKOFF_S
            if used >= self.restarts:
                log.error("the mount process of %s ended (%s) and all %d restarts are used: "
                          "the mountpoint stays dead until `objmount umount %s`",
                          self.mountpoint, describe_exit(code), self.restarts, self.mountpoint)
                return 1
            used += 1
            log.warning("the mount process of %s ended (%s): mounting again in %.0fs "
                        "(restart %d of %d)", self.mountpoint, describe_exit(code), backoff_s,
                        used, self.restarts)
            self.sleep(backoff_s)
            if self.stopping is not None:
                return 0
            backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)

    def _run_child(self, first: bool) -> tuple[bool, int]:
        """Start one child and wait for it to end; return (it had mounted, its exit code).

        The first child's failure to mount raises its error.
        """
        self.child, ready_fd = daemon.spawn(self.args, stderr=None)
        message = daemon.wait_ready(ready_fd, READY_TIMEOUT_S,
                                    self.on_note if first else lambda _note: None)
        mounted = message == "ok"
        if mounted:
            if first:
                self.on_ready()
            else:
                log.warning("mounted %s again (pid %d)", self.mountpoint, self.child.pid)
        elif message is None:
            log.error("the mount process did not report within %.0fs: killing it",
                      READY_TIMEOUT_S)
            self.child.kill()
        code = self.child.wait()
        if first and not mounted and self.stopping is None:
            if message and message.startswith("error: "):
                raise ObjmountError(message.removeprefix("error: "))
            raise ObjmountError(f"the mount process ended ({describe_exit(code)}) before "
                                "mounting")
        if not mounted and message and message.startswith("error: "):
            log.warning("mounting %s again failed: %s", self.mountpoint,
                        message.removeprefix("error: "))
        return mounted, code

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = signum
        child = self.child
        if child is not None and child.poll() is None:
            os.kill(child.pid, signum)
