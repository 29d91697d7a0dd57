"""Upper bounds on time, asserted, and the measured times reported at the end of the run.

`within(bound_s, what)` times its body and fails the test if it took longer; every
measurement (the fault suite's time to error, time to recovery, time for a signal
to take effect) is listed in the terminal summary, so a run shows the figures
(tests/conftest.py carries them there in the test reports: under xdist, the
measurements are made in the workers and the table is printed by the controller).
"""

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class Measured:
    test: str
    what: str
    seconds: float
    bound_s: float


MEASURED: list[Measured] = []


@contextlib.contextmanager
def within(bound_s: float, what: str) -> Iterator[None]:
    """Run the body; record how long it took as `what`; fail if longer than `bound_s`."""
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0].rsplit("::", 1)[-1]
    MEASURED.append(Measured(test, what, elapsed, bound_s))
    assert elapsed <= bound_s, f"{what}: took {elapsed:.1f}s, bound {bound_s:.1f}s"


def take_new() -> list[Measured]:
    """The measurements made in this process since the last call (each is taken once)."""
    taken = MEASURED[:]
    del MEASURED[: len(taken)]  # not what a thread appended meanwhile
    return taken


def summary(measured: list[Measured]) -> list[str]:
    """`measured` as lines of a table (empty if none)."""
    if not measured:
        return []
    width = max(len(m.test) for m in measured)
    lines = [f"{'test':<{width}}  {'measured':>8}  {'bound':>6}  what"]
    lines += [f"{m.test:<{width}}  {m.seconds:>7.2f}s  {m.bound_s:>5.1f}s  {m.what}"
              for m in measured]
    return lines
