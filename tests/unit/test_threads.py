"""threads.run_sync: a blocking call in a worker thread, bounded by a limiter, its outcome back."""

import threading

import pytest
import trio
import trio.testing

from objmount.backends import threads
from tests.unit.trio_test import trio_test


@trio_test
async def test_the_result_comes_back_from_another_thread() -> None:
    assert await threads.run_sync(threading.get_ident, trio.CapacityLimiter(1)) \
        != threading.get_ident()


@trio_test
async def test_the_calls_exception_is_raised_in_the_caller() -> None:
    def fail() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError, match="nope"):
        await threads.run_sync(fail, trio.CapacityLimiter(1))


@trio_test
async def test_the_limiter_bounds_calls_at_once_and_every_call_gets_a_thread() -> None:
    limiter = trio.CapacityLimiter(3)
    lock = threading.Lock()
    running = peak = 0
    three_in = threading.Barrier(3, timeout=10)  # fails if a queued job had no thread

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        three_in.wait()
        with lock:
            running -= 1

    async with trio.open_nursery() as nursery:
        for _ in range(9):
            nursery.start_soon(threads.run_sync, work, limiter)
    assert peak == 3
    assert limiter.borrowed_tokens == 0


@trio_test
async def test_a_caller_cancelled_while_waiting_for_a_token_runs_nothing() -> None:
    limiter = trio.CapacityLimiter(1)
    release = threading.Event()
    ran: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(threads.run_sync, lambda: release.wait(10), limiter)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.05) as scope:
            await threads.run_sync(lambda: ran.append("late"), limiter)
        release.set()
    assert scope.cancelled_caught
    assert ran == []


@trio_test
async def test_a_running_call_is_waited_for_even_when_cancelled() -> None:
    started, release = threading.Event(), threading.Event()
    events: list[str] = []

    def work() -> str:
        started.set()
        release.wait(10)
        events.append("thread done")
        return "result"

    async def cancel_once_running(scope: trio.CancelScope) -> None:
        await trio.to_thread.run_sync(started.wait, 10)
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        events.append("cancelled")
        release.set()

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            nursery.start_soon(cancel_once_running, scope)
            events.append(await threads.run_sync(work, trio.CapacityLimiter(1)))
    assert events == ["cancelled", "thread done", "result"]
