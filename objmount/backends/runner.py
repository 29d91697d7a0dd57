"""The only bridge from trio to blocking backend calls.

Every SDK call runs in a worker thread via `trio.to_thread.run_sync`, under one
CapacityLimiter shared by the whole mount, so a slow request never blocks the
trio thread that serves FUSE. Transient failures are retried here, with
exponential backoff and a bound, sleeping on trio (no thread held while waiting).

Deadlines (deadline.py): `call` runs within the deadline of the request it works
for, or, outside any request (list-ahead, warm-up), within `deadline_s` of its
start. Each attempt is cancelled when the deadline passes, and a retry starts only
if its backoff ends before it: the call then raises DeadlineExceeded (or the last
error), never later than the deadline. A cancelled attempt's thread is abandoned
(`abandon`), keeps its limiter token until it ends, and is told so through
deadline.abandoned(); with `abandon` off (disk work, whose calls are short and
must not outlive the store they use) a cancel waits for the thread.
"""

import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import trio

from objmount.backends import deadline as deadlines
from objmount.backends.base import BackendError
from objmount.backends.deadline import Attempt, Deadline, DeadlineExceeded, run_attempt

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class Runner:
    """Runs blocking callables in threads: at most `max_threads` at once, bounded retries."""

    def __init__(
        self, max_threads: int, retries: int = 3, first_backoff_s: float = 0.2,
        deadline_s: float | None = None, abandon: bool = True,
    ) -> None:
        """`deadline_s`: the deadline of a `call` made outside any request (None: none)."""
        self.limiter = trio.CapacityLimiter(max_threads)
        self.retries = retries
        self.first_backoff_s = first_backoff_s
        self.deadline_s = deadline_s
        self.abandon = abandon

    async def call_once(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args)` in a worker thread, without retries (fail-fast checks).

        Cancelled (a deadline, an interrupt), it abandons the thread if `abandon`.
        """
        attempt = Attempt()
        try:
            return await trio.to_thread.run_sync(
                lambda: run_attempt(attempt, fn, *args, **kwargs), limiter=self.limiter,
                abandon_on_cancel=self.abandon)
        except trio.Cancelled:
            attempt.abandoned = True
            raise

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args)` in a worker thread; retry transient BackendErrors, then re-raise.

        Raises DeadlineExceeded if the deadline passes during an attempt, or leaves no
        time for the next one.
        """
        deadline = deadlines.current()
        if deadline is None and self.deadline_s is not None:
            deadline = Deadline(trio.current_time() + self.deadline_s, self.deadline_s)
        backoff_s = self.first_backoff_s
        attempt = 0
        while True:
            try:
                return await self._attempt(deadline, fn, *args, **kwargs)
            except BackendError as exc:
                attempt += 1
                if not exc.transient or attempt > self.retries:
                    raise
                if deadline is not None and trio.current_time() + backoff_s >= deadline.at:
                    raise _exceeded(deadline, fn, args, exc) from None
                log.warning(
                    "%s (attempt %d of %d, retrying in %.1fs)",
                    exc, attempt, self.retries + 1, backoff_s,
                )
            await trio.sleep(backoff_s)
            backoff_s *= 4

    async def _attempt(self, deadline: Deadline | None, fn: Callable[P, T], *args: P.args,
                       **kwargs: P.kwargs) -> T:
        if deadline is None:
            return await self.call_once(fn, *args, **kwargs)
        with trio.move_on_at(deadline.at):
            return await self.call_once(fn, *args, **kwargs)
        raise _exceeded(deadline, fn, args, None)


def _exceeded(deadline: Deadline, fn: Callable[..., object], args: tuple,
              last: BackendError | None) -> DeadlineExceeded:
    """The error of a call that ran out of time: what it was (a backend method, and its
    key if it has one), the budget, the last error it met."""
    what = getattr(fn, "__name__", "request")
    if args and isinstance(args[0], str):
        what += f" {args[0]!r}"
    why = f", after: {last}" if last is not None else ": the store did not answer"
    return DeadlineExceeded(f"{what}: gave up at the {deadline.budget_s:g}s deadline "
                            f"(--timeout){why}")
