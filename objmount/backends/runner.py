"""The only bridge from trio to blocking backend calls.

Every SDK call runs in a worker thread via `trio.to_thread.run_sync`, under one
limiter shared by the whole mount, so a slow request never blocks the trio
thread that serves FUSE. Transient failures are retried here, with exponential
backoff and a bound, sleeping on trio (no thread held while waiting).

Two priorities share the threads (PriorityLimiter): demand calls (a reader
waits for them) and background calls (prefetch, directory read-ahead;
`Runner.background`). Invariants:
- a background call never takes a thread while a demand call waits for one,
  and background calls hold at most `background_max` threads at once, so a
  demand miss always finds a thread within one request's time of asking;
- demand calls are served first come, first served among themselves; a
  running call is never interrupted (priority acts only at the queue).

Used on the trio thread only (the limiter has no locks).
"""

import copy
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import trio

from objmount.backends.base import BackendError

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
        while (self.demand_waiting or self.background_in_use >= self.background_max
               or self._threads.available_tokens < 1):
            await self._parked.park()
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

    def release_on_behalf_of(self, borrower: object) -> None:
        self._limiter._release(borrower, self._background)


class Runner:
    """Runs blocking callables in threads: at most `max_threads` at once, bounded retries.

    `background` is the same runner at background priority (same threads, same retries).
    """

    def __init__(self, max_threads: int, retries: int = 3, first_backoff_s: float = 0.2) -> None:
        self.retries = retries
        self.first_backoff_s = first_backoff_s
        self.priority = PriorityLimiter(max_threads)
        self.limiter: _Side = self.priority.demand
        self.background: Runner = copy.copy(self)
        self.background.limiter = self.priority.background
        self.background.background = self.background

    async def call_once(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args)` in a worker thread, without retries (fail-fast checks)."""
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self.limiter)

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args)` in a worker thread; retry transient BackendErrors, then re-raise."""
        backoff_s = self.first_backoff_s
        attempt = 0
        while True:
            try:
                return await self.call_once(fn, *args, **kwargs)
            except BackendError as exc:
                attempt += 1
                if not exc.transient or attempt > self.retries:
                    raise
                log.warning(
                    "%s (attempt %d of %d, retrying in %.1fs)",
                    exc, attempt, self.retries + 1, backoff_s,
                )
            await trio.sleep(backoff_s)
            backoff_s *= 4
