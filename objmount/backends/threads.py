"""Worker threads for trio: run one blocking call in a thread and hand its outcome back, cheaply.

`trio.to_thread.run_sync` costs ~180 us of CPU per call on these machines
(measured: 5,000 empty calls, 8 at once), most of it its generality: a thread
cache that renames the OS thread at every job, a copied context, a limiter
round trip with its own checkpoints, `from_thread` plumbing. A mount makes one
to four such hops per file. `run_sync` keeps only what a hop needs: one queue
put wakes an idle thread, one `run_sync_soon` wakes the waiting task (~35 us
for the same calls).

Invariants:
- the caller's limiter (trio.CapacityLimiter, or anything with its
  `acquire_on_behalf_of` / `release_on_behalf_of`) bounds the calls running at
  once; the token is held from before the job is queued until its outcome is
  back on the trio thread;
- a queued job never waits for a thread: the pool starts a thread whenever the
  jobs in progress outnumber its threads. Threads are daemons kept for the
  life of the process, blocked on the queue when idle: their number is the
  peak of calls at once, which the limiters bound;
- like trio.to_thread.run_sync: a caller cancelled before it holds a token
  raises Cancelled and runs nothing; once its job is queued it waits for the
  outcome (a thread cannot be interrupted), unless it asked to `abandon` it;
- `fn`'s exception (any BaseException) is raised in the caller.
"""

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

import outcome
import trio

T = TypeVar("T")


class Limiter(Protocol):
    """What run_sync needs of a limiter (trio.CapacityLimiter has it)."""

    async def acquire_on_behalf_of(self, borrower: object) -> None: ...
    def release_on_behalf_of(self, borrower: object) -> None: ...


class _Pool:
    """Daemon threads taking jobs from one queue; grown so that no job waits for a thread."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._busy = 0  # jobs queued or running

    @property
    def threads(self) -> int:
        return self._threads

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            self._busy += 1
            grow = self._busy > self._threads
            if grow:
                self._threads += 1
        if grow:
            threading.Thread(target=self._work, name="objmount-worker", daemon=True).start()
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            job()
            del job

    def finished(self) -> None:
        with self._lock:
            self._busy -= 1


_POOL = _Pool()


def pool_threads() -> int:
    """Threads the pool has started (tests, stats)."""
    return _POOL.threads


async def _acquire(limiter: Limiter, borrower: object) -> None:
    """Take a token: at once if one is free (no yield: the hop itself is the schedule
    point), else wait for one. Raises Cancelled if the caller is cancelled."""
    nowait = getattr(limiter, "acquire_on_behalf_of_nowait", None)
    if nowait is not None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            nowait(borrower)
            return
        except trio.WouldBlock:
            pass
    await limiter.acquire_on_behalf_of(borrower)


async def run_sync(fn: Callable[[], T], limiter: Limiter, abandon: bool = False) -> T:
    """Run `fn()` in a worker thread under `limiter`; return its result or raise its error.

    Blocks (the calling task) until a token of `limiter` is free and `fn` has run.
    Raises trio.Cancelled before `fn` is queued; after, only with `abandon`: the
    caller then returns at once, and the thread, left to finish, keeps its token
    until it does (so abandoned threads stay bounded by the limiter).
    """
    borrower = object()
    await _acquire(limiter, borrower)
    abandoned = False
    try:
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()

        def deliver(result: outcome.Outcome[T]) -> None:  # on the trio thread
            if abandoned:
                limiter.release_on_behalf_of(borrower)
            else:
                trio.lowlevel.reschedule(task, result)

        def job() -> None:
            result = outcome.capture(fn)
            _POOL.finished()
            # RunFinishedError: the run was torn down under us (nobody waits any more).
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(deliver, result)

        def abort(_raise_cancel: object) -> trio.lowlevel.Abort:  # on the trio thread
            nonlocal abandoned
            if not abandon:
                return trio.lowlevel.Abort.FAILED
            abandoned = True
            return trio.lowlevel.Abort.SUCCEEDED

        _POOL.submit(job)
        # Unwrapped by trio: the result, or fn's exception raised here.
        return await trio.lowlevel.wait_task_rescheduled(abort)
    finally:
        if not abandoned:
            limiter.release_on_behalf_of(borrower)
