"""Backends by remote type: `open_backend` builds the one a Target names."""

from collections.abc import Callable
from dataclasses import dataclass

from objmount.backends.base import Backend
from objmount.config import Remote, Target
from objmount.errors import ConfigError


@dataclass(frozen=True)
class Timeouts:
    """Network bounds shared by every backend, and the HTTP connection pool size."""

    connect_s: float = 10.0
    read_s: float = 60.0
    pool_size: int = 16


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
