"""The runner: blocking calls in threads, transient failures retried with a bounded backoff."""

import threading
import time

import pytest
import trio
import trio.testing

from objmount.backends.base import AuthFailed, Unreachable
from objmount.backends.deadline import DeadlineExceeded, abandoned, current, deadline_in
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
        self.abandoned_seen: bool | None = None

    def __call__(self) -> str:
        self.release.wait(30)
        self.abandoned_seen = abandoned()
        return "late"


def test_a_call_that_hangs_fails_at_the_deadline_and_its_thread_is_abandoned() -> None:
    hanging = Hanging()

    async def within_a_request() -> None:
        with deadline_in(60):
            await Runner(2).call(hanging)

    with pytest.raises(DeadlineExceeded, match=r"gave up at the 60s deadline"):
        run_with_clock(within_a_request)
    hanging.release.set()
    deadline = time.monotonic() + 10
    while hanging.abandoned_seen is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hanging.abandoned_seen is True  # the thread learns it is no longer waited for


def test_retries_stop_when_the_next_backoff_would_pass_the_deadline() -> None:
    flaky = Flaky(100, Unreachable("store down"))

    async def within_a_request() -> float:
        with deadline_in(1.5):
            started = trio.current_time()
            with pytest.raises(DeadlineExceeded, match="after: store down"):
                await Runner(2, retries=10, first_backoff_s=0.2).call(flaky)
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
        seen: list[float | None] = []

        async def child() -> None:
            found = current()
            seen.append(found.budget_s if found else None)

        async with trio.open_nursery() as nursery:
            with deadline_in(7):
                nursery.start_soon(child)  # a fetch a read starts
            nursery.start_soon(child)  # background work
        return seen[0], seen[1]

    assert trio.run(main) == (7, None)


def test_a_nested_deadline_never_outlives_the_outer_one() -> None:
    async def main() -> float:
        with deadline_in(2), deadline_in(60) as inner:
            return inner.budget_s

    assert trio.run(main) == 2
