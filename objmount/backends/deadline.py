"""Deadlines of the work a request does at the store, and how an abandoned thread learns it.

A FUSE request that needs the store (lookup, opendir, open, read) runs under a
Deadline: the trio time by which it must be answered (--timeout after it
arrived). It is held in a context variable, so everything the request awaits
sees it, tasks it starts included (trio copies the context into a task started
from it: a block fetch, a read-ahead). The runner (runner.py) reads it: every
attempt runs under it, a retry starts only while time remains, and a worker
thread still blocked when it passes is abandoned.

An abandoned thread keeps its runner token until it ends (trio's rule), so
abandoned threads never number more than --max-parallel, and it ends soon: its
sockets obey the stall rule (backends/__init__.py; a retry's wait for the first
byte of an answer, Timeouts.head_s, at most --timeout/2), and the lean HTTP path
(http_get.py) asks `abandoned()` between the chunks of a body and gives the
connection up.

Pure bookkeeping: no I/O, no trio calls beyond reading the clock.
"""

import contextvars
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import trio

from objmount.backends.base import BackendError

P = ParamSpec("P")
T = TypeVar("T")


class Deadline:
    """Answer by trio time `at`; `budget_s` is what the request was given (for messages).
    Not to be changed once made (a plain class: one is made per FUSE request)."""

    __slots__ = ("at", "budget_s")

    def __init__(self, at: float, budget_s: float) -> None:
        self.at = at
        self.budget_s = budget_s


class DeadlineExceeded(BackendError):
    """The store did not answer within the request's deadline (retries included)."""


_deadline: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "objmount_deadline", default=None)


def current() -> Deadline | None:
    """The deadline of the request this task works for; None outside any request."""
    return _deadline.get()


def enter(deadline: Deadline) -> contextvars.Token:
    """Put `deadline` in force for this task (and what it starts) until `leave(token)`: the
    cheap form of `deadline_in`, for the wrapper of every FUSE request (no nesting)."""
    return _deadline.set(deadline)


def leave(token: contextvars.Token) -> None:
    _deadline.reset(token)


class deadline_in:
    """Run the body (and what it starts) under a deadline `budget_s` from now (trio time).

    A deadline already in force that ends sooner is kept: a request's work never
    outlives the request. A class, not a generator: it wraps every FUSE request.
    """

    __slots__ = ("_token", "deadline")

    def __init__(self, budget_s: float, now: float | None = None) -> None:
        deadline = Deadline((trio.current_time() if now is None else now) + budget_s, budget_s)
        outer = _deadline.get()
        self.deadline = outer if outer is not None and outer.at <= deadline.at else deadline

    def __enter__(self) -> Deadline:
        self._token = _deadline.set(self.deadline)
        return self.deadline

    def __exit__(self, *_exc: object) -> None:
        _deadline.reset(self._token)


class Attempt:
    """One attempt of a blocking call in a worker thread; `abandoned` is set (from the trio
    thread) once nobody waits for its result any more. `number`: 0 for the first try of a
    call, n for its n-th retry; `final`: no retry follows it whatever it meets (a call
    made once)."""

    __slots__ = ("abandoned", "final", "number")

    def __init__(self, number: int = 0, final: bool = False) -> None:
        self.abandoned = False
        self.number = number
        self.final = final


# Set in the worker thread for the length of one call (run_attempt), never in a trio task.
_attempt: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar(
    "objmount_attempt", default=None)


def run_attempt(attempt: Attempt, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `fn(*args, **kwargs)` as `attempt` (in a worker thread: see runner.py). The
    threads are pooled (threads.py), so the attempt is unset when the call ends."""
    token = _attempt.set(attempt)
    try:
        return fn(*args, **kwargs)
    finally:
        _attempt.reset(token)


def patient() -> bool:
    """True in a worker thread whose attempt may wait long for a first byte (Timeouts.head_s):
    a retry of a call (its attempt 1 or later), or an attempt no retry follows."""
    attempt = _attempt.get()
    return attempt is not None and (attempt.number > 0 or attempt.final)


def abandoned() -> bool:
    """True in a worker thread whose call was abandoned (deadline, interrupt, unmount)."""
    attempt = _attempt.get()
    return attempt is not None and attempt.abandoned
