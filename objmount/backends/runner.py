"""The only bridge from trio to blocking backend calls.

Every SDK call runs in a worker thread (threads.run_sync: trio.to_thread.run_sync's
job for a fraction of its CPU), under one limiter shared by the whole mount, so a
slow request never blocks the trio thread that serves FUSE. Transient failures
are retried here, with exponential backoff and a bound, sleeping on trio (no
thread held while waiting).

Deadlines (deadline.py): `call` runs within the deadline of the request it works
for, or, outside any request (list-ahead, warm-up), within `deadline_s` of its
start. Each attempt is cancelled when the deadline passes, and a retry starts only
if its backoff ends before it: the call then raises DeadlineExceeded (or the last
error), never later than the deadline. A cancelled attempt's thread is abandoned
(`abandon`), keeps its limiter token until it ends (so abandoned threads are
bounded by the pool), and is told so through deadline.abandoned(); with `abandon`
off (disk work, whose calls are short and must not outlive the store they use) a
cancel waits for the thread.

Two priorities share the threads (PriorityLimiter): demand calls (a reader
waits for them) and background calls (prefetch, directory read-ahead;
`Runner.background`). Invariants:
- a background call never takes a thread while a demand call waits for one,
  and background calls hold at most `background_max` threads at once, so a
  demand miss always finds a thread within one request's time of asking;
- demand calls are served first come, first served among themselves; a
  running call is never interrupted (priority acts only at the queue; a
  deadline abandons it, and its thread keeps its token until it ends);
- a call that finds its thread free takes it without yielding (the thread hop
  is the schedule point), under the same rules.

Used on the trio thread only (the limiter has no locks).
"""

import copy
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import trio

from objmount.backends import deadline as deadlines
from objmount.backends import threads
from objmount.backends.base import BackendError
from objmount.backends.deadline import Attempt, Deadline, DeadlineExceeded, run_attempt

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


def background_share(max_threads: int) -> int:
    """Threads background calls may hold at once: all but a quarter (at least one) kept
    for demand, so that a demand miss never waits behind a full pool of prefetches."""
    return max(1, max_threads - max(1, max_threads // 4))


class PriorityLimiter:
    """A CapacityLimiter of `total_tokens` threads with a demand and a background side.

    `demand` and `background` are CapacityLimiter-like objects for
    trio.to_thread.run_sync; see the module docstring for their rules.
    """

    def __init__(self, total_tokens: int, background_max: int | None = None) -> None:
        self._threads = trio.CapacityLimiter(total_tokens)
        self.background_max = (background_share(total_tokens) if background_max is None
                               else max(1, min(background_max, total_tokens)))
        self.demand_waiting = 0
        self.background_in_use = 0
        self._parked = trio.lowlevel.ParkingLot()  # background callers waiting for a turn
        self.demand = _Side(self, background=False)
        self.background = _Side(self, background=True)

    @property
    def total_tokens(self) -> int:
        return int(self._threads.total_tokens)

    @property
    def borrowed_tokens(self) -> int:
        return self._threads.borrowed_tokens

    async def _acquire(self, borrower: object, background: bool) -> None:
        if not background:
            self.demand_waiting += 1
            try:
                await self._threads.acquire_on_behalf_of(borrower)
            finally:
                self.demand_waiting -= 1
                self._parked.unpark_all()  # a cancelled demand caller may free a turn
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._background_turn():
            await self._parked.park()
        self._threads.acquire_on_behalf_of_nowait(borrower)
        self.background_in_use += 1

    def _background_turn(self) -> bool:
        return not (self.demand_waiting or self.background_in_use >= self.background_max
                    or self._threads.available_tokens < 1)

    def _acquire_nowait(self, borrower: object, background: bool) -> None:
        """Take a thread at once, by the rules of _acquire, or raise trio.WouldBlock."""
        if not background:
            self._threads.acquire_on_behalf_of_nowait(borrower)  # FIFO: not past waiters
            return
        if len(self._parked) or not self._background_turn():  # not past parked callers
            raise trio.WouldBlock
        self._threads.acquire_on_behalf_of_nowait(borrower)
        self.background_in_use += 1

    def _release(self, borrower: object, background: bool) -> None:
        if background:
            self.background_in_use -= 1
        self._threads.release_on_behalf_of(borrower)  # a waiting demand caller gets it first
        self._parked.unpark_all()


class _Side:
    """One priority of a PriorityLimiter, in the shape trio.to_thread.run_sync expects."""

    def __init__(self, limiter: PriorityLimiter, background: bool) -> None:
        self._limiter = limiter
        self._background = background

    @property
    def total_tokens(self) -> int:
        return self._limiter.background_max if self._background else self._limiter.total_tokens

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        await self._limiter._acquire(borrower, self._background)

    def acquire_on_behalf_of_nowait(self, borrower: object) -> None:
        self._limiter._acquire_nowait(borrower, self._background)

    def release_on_behalf_of(self, borrower: object) -> None:
        self._limiter._release(borrower, self._background)


class Runner:
    """Runs blocking callables in threads: at most `max_threads` at once, bounded retries.

    `background` is the same runner at background priority (same threads, same retries).
    """

    def __init__(
        self, max_threads: int, retries: int = 3, first_backoff_s: float = 0.2,
        deadline_s: float | None = None, abandon: bool = True,
    ) -> None:
        """`deadline_s`: the deadline of a `call` made outside any request (None: none)."""
        self.retries = retries
        self.first_backoff_s = first_backoff_s
        self.deadline_s = deadline_s
        self.abandon = abandon
        self.priority = PriorityLimiter(max_threads)
        self.limiter: _Side = self.priority.demand
        self.background: Runner = copy.copy(self)
        self.background.limiter = self.priority.background
        self.background.background = self.background

    async def call_once(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args)` in a worker thread, without retries (fail-fast checks): its one
        attempt waits for a first byte as a retry does (no retry follows).

        Cancelled (a deadline, an interrupt), it abandons the thread if `abandon`.
        """
        return await self._call_once(Attempt(final=True), fn, *args, **kwargs)

    async def _call_once(self, attempt: Attempt, fn: Callable[P, T], *args: P.args,
                         **kwargs: P.kwargs) -> T:
        """Run `fn(*args)` in a worker thread as `attempt` (of `call`, or `call_once`'s)."""
        try:
            return await threads.run_sync(lambda: run_attempt(attempt, fn, *args, **kwargs),
                                          self.limiter, abandon=self.abandon)
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
                return await self._attempt(deadline, attempt, fn, *args, **kwargs)
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

    async def _attempt(self, deadline: Deadline | None, number: int, fn: Callable[P, T],
                       *args: P.args, **kwargs: P.kwargs) -> T:
        if deadline is None:
            return await self._call_once(Attempt(number), fn, *args, **kwargs)
        with trio.move_on_at(deadline.at):
            return await self._call_once(Attempt(number), fn, *args, **kwargs)
        raise _exceeded(deadline, fn, args, None)


def local_runner(max_threads: int) -> Runner:
    """Threads for local work (block files, SQLite, kernel notifications): no retries, and
    a cancel waits for the call, never abandons it (it must not outlive what it uses)."""
    return Runner(max_threads, retries=0, abandon=False)


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
