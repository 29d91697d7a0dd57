"""Backends by remote type: `open_backend` builds the one a Target names."""

from collections.abc import Callable
from dataclasses import dataclass

from objmount.backends.base import Backend
from objmount.config import Remote, Target
from objmount.errors import ConfigError

# The stall rule of a mount's connections (set by `Timeouts.for_reads`): a connection
# that brings no byte for stall_s, or in a body fewer than LOW_SPEED_BYTES in a window
# of stall_s, is given up (the attempt fails, transient) and the pool's idle connections
# are discarded with it. stall_s = --contimeout / STALL_DIVISOR: 5 s by default.
# - It must leave the request's deadline (--timeout, 60 s) room for every retry:
#   4 attempts of 5 s plus backoff take 25 s.
# - It bounds the recovery after an outage: the first read after the store's return
#   waits at most one stall window on a connection that died with the outage, then
#   reconnects; with N = 1 (10 s) that alone would exceed the 10 s target.
# - A healthy store is far from it: its first byte comes within milliseconds to a
#   second, and a connect that took --contimeout would have failed anyway, so half of
#   it without one byte is not a live transfer. (Swift's proxy gives up on an object
#   server after its node_timeout, 10 s by default, and tries another: a request stuck
#   that long is retried here a little earlier, on a new connection.)
# LOW_SPEED_BYTES per window: 64 KiB in 5 s is 13 KB/s, a hundredth of the slowest
# link worth reading a data set over; a body trickling below it is a stalled store.
STALL_DIVISOR = 2
LOW_SPEED_BYTES = 64 << 10
# The wait for an answer's head (its first byte) has two limits (`Timeouts.head_s`):
# - a call's first attempt waits stall_s, like any gap: it is most often on a pooled
#   connection, and one that died in an outage must be given up at once (the issue's
#   10 s recovery: a read that started during a blackhole retries on a new connection
#   within one stall window of the store's return);
# - its retries wait up to --timeout / FIRST_BYTE_DIVISOR (30 s by default), still within
#   the request's deadline: a store may take longer than stall_s to produce the first
#   byte of a large listing page under load (it must list the page before it answers),
#   and that is slowness, not a stall. A blackhole is still EIO at the deadline (the
#   last attempt is cut by it), and a thread abandoned there ends within this limit.
# Mid-body, every gap stays bounded by stall_s and the low-speed rule. A call made
# once (the mount's start-up check) and Keystone's (or v1 auth's) answers are not
# retried where they are made: they wait as a retry does (their answers are small).
FIRST_BYTE_DIVISOR = 2


@dataclass(frozen=True)
class Timeouts:
    """Network bounds shared by every backend, and the HTTP connection pool size.

    `read_s` is the socket's idle timeout where `stall_s` is None (writes: the ETL),
    else the deadline of a whole request, and `stall_s` the idle timeout (reads).
    """

    connect_s: float = 10.0
    read_s: float = 60.0
    pool_size: int = 16
    stall_s: float | None = None

    @classmethod
    def for_reads(cls, connect_s: float, read_s: float, pool_size: int) -> "Timeouts":
        """The bounds of a mount or a warm-up: the stall rule on, from `connect_s`."""
        return cls(connect_s, read_s, pool_size, stall_s=connect_s / STALL_DIVISOR)

    @property
    def idle_s(self) -> float:
        """How long a socket may bring no byte before its request fails."""
        return self.read_s if self.stall_s is None else self.stall_s

    def head_s(self, patient: bool) -> float:
        """How long a request may wait for the first byte of its answer: idle_s on a
        call's first attempt, up to read_s / FIRST_BYTE_DIVISOR on its retries and
        where no retry follows (`patient`)."""
        if self.stall_s is None or not patient:
            return self.idle_s
        return max(self.stall_s, self.read_s / FIRST_BYTE_DIVISOR)

    @property
    def reply_s(self) -> float:
        """The read timeout of an authentication request (Keystone, v1 auth): patient."""
        return self.head_s(True)


def _s3(remote: Remote, container: str, timeouts: Timeouts) -> Backend:
    from objmount.backends.s3 import S3Backend

    return S3Backend(remote, container, timeouts)


def _swift(remote: Remote, container: str, timeouts: Timeouts) -> Backend:
    from objmount.backends.swift import SwiftBackend

    return SwiftBackend(remote, container, timeouts)


# Imported lazily: each SDK costs start-up time, and only one is needed.
FACTORIES: dict[str, Callable[[Remote, str, Timeouts], Backend]] = {"s3": _s3, "swift": _swift}


def open_backend(target: Target, timeouts: Timeouts) -> Backend:
    """Build the backend for `target`; raises ConfigError for an unknown remote type."""
    remote = target.remote
    factory = FACTORIES.get(remote.type)
    if factory is None:
        supported = ", ".join(sorted(FACTORIES))
        what = f"type {remote.type!r}" if remote.type else "no type"
        raise ConfigError(f"remote {remote.name!r} has {what}; supported types: {supported}")
    return factory(remote, target.container, timeouts)
