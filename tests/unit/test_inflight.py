"""InFlight: a deadline per store request, and requests dropped when their caller is signalled."""

import os
import signal
import subprocess
import sys
import time

import pytest
import trio
import trio.testing

from objmount.backends.deadline import DeadlineExceeded, current
from objmount.inflight import (
    MARGIN_S,
    MIN_AGE_S,
    POLL_S,
    InFlight,
    Interrupted,
    caller_signalled,
    interrupting_signal,
)


def status(pending: int = 0, shared: int = 0, blocked: int = 0, ignored: int = 0,
           caught: int = 0) -> str:
    return "".join(f"{name}:\t{value:016x}\n" for name, value in (
        ("SigPnd", pending), ("ShdPnd", shared), ("SigBlk", blocked), ("SigIgn", ignored),
        ("SigCgt", caught)))


def bit(sig: int) -> int:
    return 1 << (sig - 1)


@pytest.mark.parametrize(("fields", "interrupts"), [
    ({}, False),
    ({"pending": bit(signal.SIGKILL)}, True),
    ({"shared": bit(signal.SIGINT), "caught": bit(signal.SIGINT)}, True),  # Python's Ctrl-C
    ({"shared": bit(signal.SIGTERM)}, True),  # fatal by default
    ({"shared": bit(signal.SIGINT), "blocked": bit(signal.SIGINT)}, False),
    ({"shared": bit(signal.SIGINT), "ignored": bit(signal.SIGINT)}, False),
    ({"shared": bit(signal.SIGTSTP)}, False),  # Ctrl-Z stops, then the call goes on
    ({"shared": bit(signal.SIGTSTP), "caught": bit(signal.SIGTSTP)}, True),
])
def test_which_pending_signals_interrupt_a_call(fields: dict[str, int], interrupts: bool) -> None:
    assert interrupting_signal(status(**fields)) is interrupts


def test_a_live_process_with_nothing_pending_is_not_signalled_nor_a_missing_one() -> None:
    assert not caller_signalled(os.getpid())
    assert not caller_signalled(2**22 + 12345)  # no such pid


def test_a_blocked_caller_with_a_pending_sigint_is_seen_signalled() -> None:
    child = subprocess.Popen([sys.executable, "-c",
                              "import signal, time; signal.pthread_sigmask(signal.SIG_BLOCK, "
                              "[signal.SIGUSR1]); print('ready', flush=True); time.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        os.kill(child.pid, signal.SIGUSR1)  # pending, as while a FUSE request blocks it
        assert not caller_signalled(child.pid)  # blocked: it would not interrupt
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()


def run_clocked(fn):
    return trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_request_past_its_deadline_is_answered_deadline_exceeded() -> None:
    async def main() -> float:
        in_flight = InFlight(budget_s=3)
        started = trio.current_time()
        with pytest.raises(DeadlineExceeded, match="3s deadline"):
            await in_flight.run(1234, trio.sleep_forever)
        assert len(in_flight) == 0
        return trio.current_time() - started

    assert run_clocked(main) == pytest.approx(3 + MARGIN_S)


def test_a_request_runs_under_its_deadline() -> None:
    async def main() -> float | None:
        async def body() -> float | None:
            found = current()
            return found.budget_s if found else None

        return await InFlight(budget_s=9).run(1, body)

    assert run_clocked(main) == 9


def test_a_request_whose_caller_is_signalled_is_interrupted_soon() -> None:
    signalled: set[int] = set()

    async def main() -> float:
        in_flight = InFlight(budget_s=60, signalled=lambda pid: pid in signalled)
        async with trio.open_nursery() as nursery:
            await nursery.start(in_flight.serve)

            async def other() -> None:  # another caller's request is left alone
                await in_flight.run(8, trio.sleep, 5)

            nursery.start_soon(other)
            await trio.sleep(2)
            signalled.add(7)
            started = trio.current_time()
            with pytest.raises(Interrupted):
                await in_flight.run(7, trio.sleep_forever)
            elapsed = trio.current_time() - started
            assert in_flight.interrupted == 1
            # Its next request (a read retried by the kernel) goes at the next poll.
            started = trio.current_time()
            with pytest.raises(Interrupted):
                await in_flight.run(7, trio.sleep_forever)
            assert trio.current_time() - started <= POLL_S + 1e-9
            nursery.cancel_scope.cancel()
        return elapsed

    assert run_clocked(main) <= MIN_AGE_S + POLL_S + 1e-9


def test_a_quick_request_is_never_looked_at() -> None:
    looked: list[int] = []

    async def main() -> None:
        in_flight = InFlight(budget_s=60, signalled=lambda pid: looked.append(pid) or False)
        async with trio.open_nursery() as nursery:
            await nursery.start(in_flight.serve)
            for _ in range(20):
                await in_flight.run(5, trio.sleep, 0.1)
            nursery.cancel_scope.cancel()

    run_clocked(main)
    assert looked == []


def test_the_watchdog_costs_nothing_measurable_per_request() -> None:
    """The wrapper around every store request (a cancel scope, a context variable)."""
    async def main() -> float:
        in_flight = InFlight(budget_s=60)

        async def noop() -> None:
            return None

        started = time.perf_counter()
        for _ in range(2000):
            await in_flight.run(1, noop)
        return (time.perf_counter() - started) / 2000

    assert trio.run(main) < 200e-6  # measured ~5 us; a loose bound for a loaded machine
