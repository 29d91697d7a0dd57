"""FUSE requests that may wait on the store: a deadline each, dropped when the caller is signalled.

pyfuse3 3.5 never delivers FUSE_INTERRUPT: libfuse receives it and marks its
request interrupted, but pyfuse3 registers no interrupt callback and never asks
(tests/integration/test_interrupts.py shows both: libfuse logs the INTERRUPT, the
handler runs on). Meanwhile the kernel keeps the caller waiting: a request that
reached the daemon is waited for uninterruptibly, so not even SIGKILL ends the
caller before the request is answered.

So every request that may wait on the store runs through `InFlight.run`:
- under a deadline (backends/deadline.py): the runner's attempts end at
  `budget_s` (--timeout); the request itself is cancelled MARGIN_S later whatever
  it waits on (a block fetched for another request, a listing in flight), and
  answered with DeadlineExceeded (EIO);
- watched: every POLL_S, the callers of requests older than MIN_AGE_S are looked
  up in /proc/<pid>/status. A caller with a signal pending that would interrupt a
  system call (`interrupting_signal`) has its requests cancelled and answered with
  Interrupted (EINTR): the kernel returns EINTR to it, and it runs its handler
  (Python raises KeyboardInterrupt) or dies (SIGKILL, a fatal signal). A caller
  found signalled stays watched for RECENT_S: its next requests (the kernel
  retries a failed read-ahead with a read of its own) are checked at the next poll,
  whatever their age. So a signal takes effect within MIN_AGE_S + POLL_S, and
  another POLL_S for such a retried read.

The pid is the caller's thread id as the kernel gives it (pyfuse3's ctx.pid); for
a read, the pid that opened the handle (pyfuse3 gives read no context). pid 0 (a
caller outside the mount's pid namespace) is never watched.

FUSE-free: fs.py maps Interrupted to EINTR. Used on the trio thread only; the
/proc reads happen on it too: procfs builds the text in memory and never blocks
on a device (~20 us per caller looked at, only while requests are slow).
"""

import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import trio

from objmount.backends import deadline as deadlines
from objmount.backends.deadline import Deadline, DeadlineExceeded

T = TypeVar("T")

# The watchdog's period, and the age before a request's caller is looked at: a
# /proc read costs ~20 us, so requests that end within half a second (nearly all)
# are never looked at, and a signal takes effect within 0.75 s.
POLL_S = 0.25
MIN_AGE_S = 0.5
RECENT_S = 5.0
# The request's own cancel comes this long after the runner's deadline: the
# runner's error (which names what timed out) normally answers first.
MARGIN_S = 0.5
# Stop signals with their default action stop the caller, who then resumes the
# system call: not a reason to fail it.
_STOPS = sum(1 << (s - 1) for s in (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN,
                                    signal.SIGTTOU))
_FIELDS = ("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")


class Interrupted(Exception):
    """The caller of a request got a signal: the request was abandoned."""


def interrupting_signal(status: str) -> bool:
    """True if a /proc/<pid>/status text shows a signal pending that interrupts a system
    call: not blocked, not ignored, and caught or fatal (a stop signal only if caught)."""
    masks = dict.fromkeys(_FIELDS, 0)
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in masks:
            masks[name] = int(value.strip() or "0", 16)
    pending = (masks["SigPnd"] | masks["ShdPnd"]) & ~masks["SigBlk"] & ~masks["SigIgn"]
    return bool(pending & ~(_STOPS & ~masks["SigCgt"]))


def caller_signalled(pid: int, proc: Path = Path("/proc")) -> bool:
    """True if the thread `pid` has an interrupting signal pending. A thread that is gone
    is not: for a read, `pid` opened the file, and another thread may be reading it."""
    try:
        status = (proc / str(pid) / "status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return interrupting_signal(status)


class _Request:
    __slots__ = ("interrupted", "pid", "scope", "started")

    def __init__(self, scope: trio.CancelScope, pid: int, started: float) -> None:
        self.scope = scope
        self.pid = pid
        self.started = started
        self.interrupted = False


class InFlight:
    """The requests in flight that may wait on the store; see the module docstring."""

    def __init__(self, budget_s: float,
                 signalled: Callable[[int], bool] = caller_signalled) -> None:
        """`budget_s`: the deadline of each request (--timeout); `signalled(pid)`: whether
        a caller's requests must be abandoned (a /proc read)."""
        self.budget_s = budget_s
        self.signalled = signalled
        self.interrupted = 0  # requests abandoned for a signal, since the mount started
        self._requests: set[_Request] = set()
        self._recent: dict[int, float] = {}  # pid found signalled -> watched until

    def __len__(self) -> int:
        return len(self._requests)

    async def run(self, pid: int, fn: Callable[..., Awaitable[T]], *args: object) -> T:
        """Return `await fn(*args)`, under the deadline and the watch.

        Raises DeadlineExceeded (a BackendError) if it is not done MARGIN_S after the
        deadline, Interrupted if its caller was signalled meanwhile.
        """
        # Every FUSE request that may wait comes here: kept to a cancel scope (most of its
        # ~15 us of CPU on these machines), a set entry and a context variable.
        now = trio.current_time()
        scope = trio.CancelScope(deadline=now + self.budget_s + MARGIN_S)
        request = _Request(scope, pid, now)
        self._requests.add(request)
        token = deadlines.enter(Deadline(now + self.budget_s, self.budget_s))
        try:
            with scope:
                return await fn(*args)
        finally:
            deadlines.leave(token)
            self._requests.discard(request)
        if request.interrupted:
            raise Interrupted(f"the caller (pid {pid}) got a signal")
        raise DeadlineExceeded(f"no answer within the {self.budget_s:g}s deadline (--timeout)")

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch the requests in flight until cancelled (mount.py runs it)."""
        task_status.started()
        while True:
            await trio.sleep(POLL_S)
            self.check()

    def check(self) -> None:
        """Abandon the requests whose caller is signalled (one look at each caller)."""
        now = trio.current_time()
        self._recent = {pid: until for pid, until in self._recent.items() if until > now}
        due = [r for r in self._requests if r.pid > 0 and not r.interrupted
               and (now - r.started >= MIN_AGE_S or r.pid in self._recent)]
        if not due:
            return
        found = {pid for pid in {r.pid for r in due} if self.signalled(pid)}
        for request in due:
            if request.pid in found and request in self._requests:
                request.interrupted = True
                request.scope.cancel()
                self.interrupted += 1
        for pid in found:
            self._recent[pid] = now + RECENT_S
