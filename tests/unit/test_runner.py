"""The runner: blocking calls in threads, transient failures retried with a bounded backoff."""

import threading

import pytest
import trio
import trio.testing

from objmount.backends.base import AuthFailed, Unreachable
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
    """Run under trio's autojumping clock; return (result, virtual seconds elapsed)."""
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
