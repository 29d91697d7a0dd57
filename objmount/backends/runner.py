"""The only bridge from trio to blocking backend calls.

Every SDK call runs in a worker thread (threads.run_sync: trio.to_thread.run_sync's
job for a fraction of its CPU), under one CapacityLimiter shared by the whole
mount, so a slow request never blocks the trio thread that serves FUSE.
Transient failures are retried here, with exponential backoff and a bound,
sleeping on trio (no thread held while waiting).
"""

import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import trio

from objmount.backends import threads
from objmount.backends.base import BackendError

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class Runner:
    """Runs blocking callables in threads: at most `max_threads` at once, bounded retries."""

    def __init__(
        self, max_threads: int, retries: int = 3, first_backoff_s: float = 0.2
    ) -> None:
        self.limiter = trio.CapacityLimiter(max_threads)
        self.retries = retries
        self.first_backoff_s = first_backoff_s

    async def call_once(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args)` in a worker thread, without retries (fail-fast checks)."""
        return await threads.run_sync(lambda: fn(*args, **kwargs), self.limiter)

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
