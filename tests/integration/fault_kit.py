"""What the fault suite (tests/integration/test_faults_*.py) shares: data, relay, flags, checks.

Every fault test mounts a container (conftest.py's fault_data) through a
FaultProxy (conftest.py's relay) in front of the real
server (moto's S3, the Swift proxy), injects its fault with a relay rule, and
asserts with `within` (bounds.py) how long the mount took to answer, and that
every byte it served is right.

FAST: short --timeout and --contimeout, so that the bounds (which scale with
them) keep the suite fast: a 5 s deadline per request, a 1 s stall window.
"""

import errno
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from objmount.inflight import MARGIN_S
from tests.integration.bounds import within
from tests.integration.stores import TestStore
from tests.servers.fault_proxy import Rule

CONTAINER = "faults"
TIMEOUT_S, CONTIMEOUT_S = 5.0, 2.0
STALL_S = CONTIMEOUT_S / 2
FAST = ("--timeout", f"{TIMEOUT_S:g}s", "--contimeout", f"{CONTIMEOUT_S:g}s",
        "--block-size", "1M")
# Slack on every bound for 2 shared cores at a load of 4+ (a mount's reply, a retry's
# thread, the relay's threads all wait for a core).
SLACK_S = 3.0
# EIO within the deadline (--timeout) and the request's own margin.
EIO_BOUND_S = TIMEOUT_S + MARGIN_S + SLACK_S
# Transient failures retried: backoffs 0.2 + 0.8 + 3.2 s before the 4th attempt.
RETRIED_BOUND_S = 0.2 + 0.8 + 3.2 + SLACK_S
# Reads work again after the fault ends: one stall window on a connection that died
# with it (usually none: they were discarded), then a fresh one.
RECOVERY_BOUND_S = 2 * STALL_S + SLACK_S

MiB = 1 << 20
# Container `faults` (conftest.py's fault_data): a few files in three directories.
FILES = {
    "a/big.bin": 3 * MiB + 5,
    "a/small.bin": 100_000,
    "a/other.bin": 200_000,
    "b/one.bin": 150_000,
    "b/two.bin": 2 * MiB + 1,
    "c/deep/never-listed.bin": 1000,
}


def gets_of(store: TestStore, key: str, **fault: object) -> Rule:
    """A rule for the GETs of `key` in `faults`."""
    return Rule(method="GET", path=re.escape(store.object_path(CONTAINER, key)) + "$", **fault)


def listings_of(store: TestStore, **fault: object) -> Rule:
    """A rule for the listings of `faults` (S3's ListObjectsV2, Swift's container GET)."""
    container_path = store.object_path(CONTAINER, "").rstrip("/")
    return Rule(method="GET", path=re.escape(container_path) + "$", **fault)


def slow_down(store: TestStore) -> dict[str, object]:
    """The fields of a rule answering what each store says when it sheds load."""
    if store.kind == "s3":
        return {"forward": False, "status": 503, "body": b"<Error><Code>SlowDown</Code>"
                b"<Message>Please reduce your request rate.</Message></Error>"}
    return {"forward": False, "status": 503, "body": b"<html><h1>Service Unavailable</h1>"
            b"<p>The server is currently unavailable.</p></html>"}


def fails_with(call: Callable[[], object], *errnos: int) -> int:
    """Run `call`, which must raise OSError with one of `errnos` (EIO if none given)."""
    try:
        call()
    except OSError as exc:
        assert exc.errno in (errnos or (errno.EIO,)), exc
        return exc.errno
    raise AssertionError("no error: the read should have failed")


def eio_within(bound_s: float, what: str, *paths: Path) -> None:
    """Reading each of `paths` (at once, one thread each) fails with EIO, each within the
    bound; never with other bytes."""
    def timed(path: Path) -> None:
        with within(bound_s, f"{what}: EIO for {path.name}"):
            fails_with(path.read_bytes)

    with ThreadPoolExecutor(len(paths)) as pool:
        list(pool.map(timed, paths))


def reads_within(bound_s: float, what: str, mount_path: Path, objects: dict[str, bytes],
                 *keys: str) -> None:
    """Each of `keys` reads byte-exact through the mount, all within the bound."""
    with within(bound_s, what):
        for key in keys:
            assert (mount_path / key).read_bytes() == objects[key], key


def preads_exact(path: Path, content: bytes, offsets: list[int], size: int) -> None:
    """Ranged reads at `offsets` are exactly the stored bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in offsets:
            assert os.pread(fd, size, offset) == content[offset : offset + size], offset
    finally:
        os.close(fd)
