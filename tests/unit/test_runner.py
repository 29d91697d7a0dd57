"""The runner: blocking calls in threads, transient failures retried with a bounded backoff."""

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from objmount.backends.base import AuthFailed, Unreachable
from objmount.backends.deadline import (
    DeadlineExceeded,
    abandoned,
    current,
    deadline_in,
    patient,
)
from objmount.backends.runner import Runner


class Flaky:
    """Fails with `error` the first `failures` calls, then returns 'ok'; records its threads."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0
        self.threads: set[int] = set()

    def __call__(self) -> str:
        self.calls += 1
        self.threads.add(threading.get_ident())
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def run_with_clock(fn, *args):
    """Run under trio's autojumping clock; return (result, virtual seconds elapsed).

    A task waiting on a worker thread counts as blocked: the clock jumps past it.
    """
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def timed():
        started = trio.current_time()
        result = await fn(*args)
        return result, trio.current_time() - started

    return trio.run(timed, clock=clock)


def test_calls_run_off_the_trio_thread() -> None:
    flaky = Flaky(0, Unreachable("x"))
    result, _ = run_with_clock(Runner(2).call, flaky)
    assert result == "ok"
    assert threading.get_ident() not in flaky.threads


def test_transient_errors_are_retried_with_growing_backoff() -> None:
    flaky = Flaky(2, Unreachable("store down"))
    result, elapsed = run_with_clock(Runner(2, retries=3, first_backoff_s=0.2).call, flaky)
    assert result == "ok"
    assert flaky.calls == 3
    assert elapsed == pytest.approx(0.2 + 0.8)


def test_retries_are_bounded() -> None:
    flaky = Flaky(100, Unreachable("store down"))
    with pytest.raises(Unreachable):
        run_with_clock(Runner(2, retries=3).call, flaky)
    assert flaky.calls == 4


def test_permanent_errors_are_not_retried() -> None:
    flaky = Flaky(100, AuthFailed("denied"))
    with pytest.raises(AuthFailed):
        run_with_clock(Runner(2, retries=3).call, flaky)
    assert flaky.calls == 1


def test_call_once_never_retries() -> None:
    flaky = Flaky(1, Unreachable("down"))
    with pytest.raises(Unreachable):
        run_with_clock(Runner(2, retries=3).call_once, flaky)
    assert flaky.calls == 1


# -- deadlines -----------------------------------------------------------------


class Hanging:
    """Blocks until released (a blackholed request); records whether it was abandoned."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.ended = threading.Event()
        self.abandoned_seen: bool | None = None

    def __call__(self) -> str:
        self.release.wait(30)
        self.abandoned_seen = abandoned()
        self.ended.set()
        return "late"


def test_a_call_that_hangs_fails_at_the_deadline_and_its_thread_is_abandoned() -> None:
    hanging = Hanging()

    async def within_a_request() -> None:
        with deadline_in(60):
            await Runner(2).call(hanging)

    with pytest.raises(DeadlineExceeded, match=r"gave up at the 60s deadline"):
        run_with_clock(within_a_request)
    hanging.release.set()
    assert hanging.ended.wait(10)
    assert hanging.abandoned_seen is True  # the thread learns it is no longer waited for


class InlineRunner(Runner):
    """A Runner whose attempts run on the trio thread: under the autojumping clock a
    worker thread counts as blocked, so the clock could jump to the deadline while an
    attempt runs (that case: the Hanging tests)."""

    async def _call_once(self, attempt, fn, *args, **kwargs):  # every attempt of `call`
        await trio.lowlevel.checkpoint()
        return fn(*args, **kwargs)


def test_retries_stop_when_the_next_backoff_would_pass_the_deadline() -> None:
    flaky = Flaky(100, Unreachable("store down"))

    async def within_a_request() -> float:
        with deadline_in(1.5):
            started = trio.current_time()
            with pytest.raises(DeadlineExceeded, match="after: store down"):
                await InlineRunner(2, retries=10, first_backoff_s=0.2).call(flaky)
            return trio.current_time() - started

    elapsed, _ = run_with_clock(within_a_request)
    assert flaky.calls == 3  # after 0.2 + 0.8 s, the 3.2 s backoff would end past 1.5 s
    assert elapsed < 1.5


def test_a_call_outside_any_request_gets_the_runners_own_deadline() -> None:
    hanging = Hanging()
    try:
        with pytest.raises(DeadlineExceeded, match="at the 5s deadline"):
            run_with_clock(Runner(2, deadline_s=5).call, hanging)
    finally:
        hanging.release.set()


def test_tasks_started_within_a_request_inherit_its_deadline() -> None:
    async def main() -> tuple[float | None, float | None]:
        seen: dict[str, float | None] = {}

        async def child(name: str) -> None:
            found = current()
            seen[name] = found.budget_s if found else None

        async with trio.open_nursery() as nursery:
            with deadline_in(7):
                nursery.start_soon(child, "fetch")  # a fetch a read starts
            nursery.start_soon(child, "background")  # background work
        return seen["fetch"], seen["background"]

    assert trio.run(main) == (7, None)


def test_a_nested_deadline_never_outlives_the_outer_one() -> None:
    async def main() -> float:
        with deadline_in(2), deadline_in(60) as inner:
            return inner.budget_s

    assert trio.run(main) == 2


class Calls:
    """Blocking calls that say when they start (in order) and return once released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self._lock = threading.Lock()
        self._starts = threading.Semaphore(0)
        self._release: dict[str, threading.Event] = {}

    def make(self, name: str) -> Callable[[], str]:
        self._release[name] = threading.Event()

        def call() -> str:
            with self._lock:
                self.started.append(name)
            self._starts.release()
            assert self._release[name].wait(10)
            return name

        return call

    def release(self, name: str) -> None:
        self._release[name].set()

    @asynccontextmanager
    async def nursery(self) -> AsyncIterator[trio.Nursery]:
        """A nursery for the calls; on leaving it, every call is let return (also when an
        assertion failed: the test must not wait for blocked threads)."""
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            finally:
                for event in self._release.values():
                    event.set()

    async def wait_started(self, count: int) -> None:
        """Wait (in a thread of trio's own limiter) until `count` more calls have started."""
        for _ in range(count):
            assert await trio.to_thread.run_sync(self._starts.acquire, True, 10)


def test_a_waiting_demand_call_gets_the_next_thread_before_any_background_call() -> None:
    calls = Calls()
    runner = Runner(2)

    async def main() -> None:
        async with calls.nursery() as nursery:
            for name in ("d1", "d2"):  # one at a time: threads start in any order
                nursery.start_soon(runner.call, calls.make(name))
                await calls.wait_started(1)
            nursery.start_soon(runner.background.call, calls.make("b1"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(runner.call, calls.make("d3"))
            await trio.testing.wait_all_tasks_blocked()
            calls.release("d1")
            await calls.wait_started(1)
            assert calls.started == ["d1", "d2", "d3"]
            calls.release("d2")
            await calls.wait_started(1)
            assert calls.started == ["d1", "d2", "d3", "b1"]

    trio.run(main)


def test_background_calls_leave_a_quarter_of_the_threads_to_demand() -> None:
    calls = Calls()
    runner = Runner(4)
    assert runner.background.limiter.total_tokens == 3

    async def main() -> None:
        async with calls.nursery() as nursery:
            for i in range(5):
                nursery.start_soon(runner.background.call, calls.make(f"b{i}"))
            await calls.wait_started(3)
            await trio.testing.wait_all_tasks_blocked()
            assert len(calls.started) == 3
            nursery.start_soon(runner.call, calls.make("demand"))
            await calls.wait_started(1)  # at once: the fourth thread was kept for it
            assert calls.started[-1] == "demand"
            for name in ["demand", *calls.started[:3]]:
                calls.release(name)
            await calls.wait_started(2)
            assert sorted(calls.started) == sorted(["demand", *(f"b{i}" for i in range(5))])

    trio.run(main)


def test_a_cancelled_background_caller_leaves_no_thread_taken() -> None:
    calls = Calls()
    runner = Runner(2)

    async def main() -> None:
        async with calls.nursery() as nursery:
            nursery.start_soon(runner.call, calls.make("d1"))
            nursery.start_soon(runner.call, calls.make("d2"))
            await calls.wait_started(2)
            with trio.move_on_after(0.01):
                await runner.background.call(calls.make("never"))
            calls.release("d1")
            calls.release("d2")
        assert runner.priority.borrowed_tokens == 0
        assert runner.priority.background_in_use == 0
        assert await runner.background.call(lambda: "ok") == "ok"

    trio.run(main)


def test_an_abandoned_thread_keeps_its_token_until_it_ends_and_demand_still_comes_first(
) -> None:
    """Abandoned threads are bounded by the pool: each holds its thread until it ends."""
    hanging = Hanging()
    calls = Calls()
    runner = Runner(2)

    async def main() -> None:
        with deadline_in(1), pytest.raises(DeadlineExceeded):
            await runner.call(hanging)
        assert runner.priority.borrowed_tokens == 1  # the abandoned thread still runs
        async with calls.nursery() as nursery:
            nursery.start_soon(runner.call, calls.make("d1"))
            await calls.wait_started(1)
            nursery.start_soon(runner.background.call, calls.make("b1"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(runner.call, calls.make("d2"))
            await trio.testing.wait_all_tasks_blocked()
            assert calls.started == ["d1"]  # no thread free: both wait
            hanging.release.set()  # the abandoned thread ends: its token goes to demand
            await calls.wait_started(1)
            assert calls.started == ["d1", "d2"]
            calls.release("d1")
            await calls.wait_started(1)
            assert calls.started == ["d1", "d2", "b1"]
        assert runner.priority.borrowed_tokens == 0

    try:
        trio.run(main)
    finally:
        hanging.release.set()


def test_a_call_made_once_waits_for_a_first_byte_as_a_retry_does_a_first_attempt_does_not(
) -> None:
    runner = Runner(2)

    async def main() -> tuple[bool, bool]:
        return await runner.call_once(patient), await runner.call(patient)

    assert trio.run(main) == (True, False)

