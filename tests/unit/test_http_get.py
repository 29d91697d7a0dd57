"""http_get: exact byte ranges or an error, whatever the server answers.

Answers are canned by a FaultProxy that answers from its rules alone
(forward=False), on loopback: no object store needed.
"""

import gzip
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import trio

from objmount.backends import Timeouts
from objmount.backends.base import BackendError, ETagMismatch, ObjectInfo, Unreachable
from objmount.backends.deadline import Attempt, run_attempt
from objmount.backends.http_get import (
    PooledHTTP,
    StatusError,
    part_of_answer,
    range_headers,
    slice_answer,
)
from objmount.backends.runner import Runner
from objmount.readpath_base import DirectReadPath
from tests.servers.fault_proxy import FaultProxy, Rule
from tests.servers.net import free_port
from tests.unit.fake_backend import FakeBackend

OBJECT = bytes(range(256)) * 40  # 10,240 bytes
ETAG = "5d41402abc4b2a76b9719d911017c592"


def test_range_headers_ask_for_the_last_byte_inclusive_and_quote_the_etag() -> None:
    assert range_headers(10, 20, None) == {"Range": "bytes=10-19"}
    assert range_headers(0, 1, "abc") == {"Range": "bytes=0-0", "If-Match": '"abc"'}


def answer(status: int, start: int = 0, end: int = len(OBJECT), **headers: str) -> tuple:
    return status, {k.replace("_", "-"): v for k, v in headers.items()}, OBJECT[start:end]


@pytest.mark.parametrize(
    ("status", "headers", "start", "end", "expected"),
    [
        # A 206 of exactly the range; one short where the object ends.
        (206, {"content-range": "bytes 100-199/10240", "etag": f'"{ETAG}"'}, 100, 200,
         (0, 100)),
        (206, {"content-range": "bytes 10000-10239/10240"}, 10000, 11000, (0, 240)),
        # A 200: the whole object, sliced.
        (200, {"etag": f'"{ETAG}"'}, 100, 200, (100, 100)),
        (200, {"etag": f'W/"{ETAG}"'}, 10000, 11000, (10000, 240)),
        (200, {}, 5, 10, (5, 5)),  # no ETag asked for: nothing to check it against
    ],
)
def test_answers_that_fit_give_the_part_asked_for(status, headers, start, end, expected) -> None:
    etag = ETAG if "etag" in headers else None
    part = part_of_answer(status, headers, len(OBJECT) if status == 200 else expected[1],
                          start, end, etag, "c/k")
    assert (part.skip, part.length) == expected


@pytest.mark.parametrize(
    ("status", "headers", "length", "error", "words"),
    [
        (206, {"content-range": "bytes 0-99/10240"}, 100, BackendError,
         "answered bytes 0-99 (of 10240, 100 sent) when asked for bytes 100-199"),
        (206, {"content-range": "bytes 100-149/10240"}, 50, BackendError, "asked for bytes"),
        (206, {"content-range": "bytes 100-199/10240"}, 99, BackendError, "99 sent"),
        (206, {}, 100, BackendError, "without a usable Content-Range"),
        (206, {"content-range": "bytes 100-199/10240", "etag": '"other"'}, 100, ETagMismatch,
         "changed since it was opened"),
        (200, {"etag": '"other"'}, 10240, ETagMismatch, "changed since it was opened"),
        (200, {}, 10240, BackendError, "no ETag"),
        (200, {"etag": f'"{ETAG}"'}, None, BackendError, "no Content-Length"),
    ],
)
def test_answers_that_do_not_fit_are_errors(status, headers, length, error, words) -> None:
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        part_of_answer(status, headers, length, 100, 200, ETAG, "c/k")


def test_slice_answer_checks_an_sdk_body_against_its_content_length() -> None:
    headers = {"etag": f'"{ETAG}"', "content-length": str(len(OBJECT))}
    assert slice_answer(200, headers, OBJECT, 100, 200, ETAG, "c/k") == OBJECT[100:200]
    with pytest.raises(BackendError, match="sent 10 bytes of 10240") as raised:
        slice_answer(200, headers, OBJECT[:10], 100, 200, ETAG, "c/k")
    assert raised.value.transient


@pytest.fixture
def server() -> Iterator[FaultProxy]:
    """A canned-answer HTTP server (rules with forward=False); no upstream behind it."""
    with FaultProxy(upstream_port=free_port()) as proxy:
        yield proxy


@pytest.fixture
def http() -> PooledHTTP:
    return PooledHTTP(Timeouts(connect_s=2, read_s=5, pool_size=2), "Test")


def get(http: PooledHTTP, server: FaultProxy, start: int, end: int,
        etag: str | None = ETAG) -> bytes:
    return http.get_range(f"{server.url}/c/k", range_headers(start, end, etag), start, end,
                          etag, "c/k")


def test_a_gzip_encoded_body_is_returned_as_stored(http: PooledHTTP, server: FaultProxy) -> None:
    stored = gzip.compress(b"".join(b"%d," % (i * i) for i in range(10_000)))
    assert len(stored) > 1000
    server.add(Rule(forward=False, status=206, body=stored[:1000], set_headers={
        "Content-Encoding": "gzip", "Content-Range": f"bytes 0-999/{len(stored)}",
        "ETag": f'"{ETAG}"'}))
    assert get(http, server, 0, 1000) == stored[:1000]
    (exchange,) = server.exchanges
    assert exchange.headers["accept-encoding"] == "identity"
    assert exchange.headers["range"] == "bytes=0-999"
    assert exchange.headers["if-match"] == f'"{ETAG}"'


def test_a_200_is_sliced_and_its_connection_not_reused(
    http: PooledHTTP, server: FaultProxy
) -> None:
    server.add(Rule(forward=False, status=200, body=OBJECT, set_headers={"ETag": f'"{ETAG}"'}))
    assert get(http, server, 3000, 3100) == OBJECT[3000:3100]
    assert get(http, server, 10_000, 20_000) == OBJECT[10_000:]  # short: the object ends
    assert get(http, server, 0, len(OBJECT)) == OBJECT
    assert len(server.exchanges) == 3


def test_a_body_cut_short_is_a_transient_error(http: PooledHTTP, server: FaultProxy) -> None:
    server.add(Rule(forward=False, status=206, body=OBJECT[:4000], cut_after=1500, times=1,
                    set_headers={"Content-Range": "bytes 0-3999/10240"}))
    server.add(Rule(forward=False, status=206, body=OBJECT[:4000],
                    set_headers={"Content-Range": "bytes 0-3999/10240"}))
    with pytest.raises(BackendError) as raised:
        get(http, server, 0, 4000)
    assert raised.value.transient
    assert get(http, server, 0, 4000) == OBJECT[:4000]  # the next connection is clean


def test_an_error_status_carries_the_answer(http: PooledHTTP, server: FaultProxy) -> None:
    server.add(Rule(forward=False, status=404, body=b"<Code>NoSuchKey</Code>", times=1))
    server.add(Rule(forward=False, status=206, body=OBJECT[:10],
                    set_headers={"Content-Range": "bytes 0-9/10240"}))
    with pytest.raises(StatusError) as raised:
        get(http, server, 0, 10)
    assert (raised.value.status, raised.value.body) == (404, b"<Code>NoSuchKey</Code>")
    assert get(http, server, 0, 10) == OBJECT[:10]  # the pooled connection still works


def test_a_refused_connection_is_unreachable(http: PooledHTTP) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(Unreachable, match=f"cannot reach Test at http://127.0.0.1:{port}: "
                                              "connection refused"):
            http.get_range(f"http://127.0.0.1:{port}/c/k", {}, 0, 10, None, "c/k")


class ShortBackend(FakeBackend):
    """Answers one byte less than asked for, as a server that cut a body might."""

    def read(self, key: str, start: int, end: int, etag: str | None) -> bytes:
        return super().read(key, start, end, etag)[:-1]


def test_a_direct_read_never_returns_fewer_bytes_than_asked_for() -> None:
    backend = ShortBackend({"k": OBJECT})
    handle_path = DirectReadPath(backend, Runner(2, retries=0))
    obj = backend.info("k")
    assert isinstance(obj, ObjectInfo)

    async def read() -> bytes:
        handle = await handle_path.open(obj)
        return await handle.read(100, 4096)

    with pytest.raises(BackendError, match="returned 4095 bytes for a range of 4096"):
        trio.run(read)


# -- the stall rule and dead pooled connections --------------------------------

BIG = bytes(range(256)) * 1024  # 256 KiB: several LOW_SPEED_BYTES
STALL_S = 0.5


@pytest.fixture
def stalling_http() -> PooledHTTP:
    """A pool with the stall rule on: no byte for 0.5 s, or < 64 KiB per 0.5 s, is a stall."""
    return PooledHTTP(Timeouts.for_reads(connect_s=2 * STALL_S, read_s=10, pool_size=4),
                      "Test")


def big_answer(**fault: object) -> Rule:
    return Rule(forward=False, status=206, body=BIG,
                set_headers={"Content-Range": f"bytes 0-{len(BIG) - 1}/{len(BIG)}"}, **fault)


def timed_get(http: PooledHTTP, server: FaultProxy) -> tuple[bytes | BackendError, float]:
    started = time.monotonic()
    try:
        result: bytes | BackendError = get(http, server, 0, len(BIG), None)
    except BackendError as exc:
        result = exc
    return result, time.monotonic() - started


def test_a_server_that_never_answers_is_a_stall_after_the_idle_window(
    stalling_http: PooledHTTP, server: FaultProxy
) -> None:
    server.add(big_answer(hold=True))
    result, elapsed = timed_get(stalling_http, server)
    assert isinstance(result, BackendError) and result.transient
    assert "stalled" in str(result)
    assert STALL_S <= elapsed < STALL_S + 2  # not the 10 s read timeout


def test_a_body_trickling_below_the_low_speed_rule_is_a_stall(
    stalling_http: PooledHTTP, server: FaultProxy
) -> None:
    """8 KiB/s: a byte every 0.1 s, so the idle timeout never fires; the rate rule does."""
    server.add(big_answer(rate_bytes_per_s=8 << 10))
    result, elapsed = timed_get(stalling_http, server)
    assert isinstance(result, BackendError) and result.transient
    assert "stalled" in str(result) and "fewer than 65536" in str(result)
    assert elapsed < 2 * STALL_S + 2  # within two windows


def test_a_body_above_the_low_speed_rule_is_read_whole(
    stalling_http: PooledHTTP, server: FaultProxy
) -> None:
    server.add(big_answer(rate_bytes_per_s=512 << 10))  # 0.5 s for 256 KiB: slow, not stalled
    result, _ = timed_get(stalling_http, server)
    assert result == BIG


def test_a_stall_discards_the_idle_pooled_connections(
    stalling_http: PooledHTTP, server: FaultProxy
) -> None:
    """After an outage, pooled connections are dead without knowing it: a failure on one
    makes the next request connect afresh instead of waiting out another stall."""
    server.add(big_answer(times=2))
    for _ in range(2):
        assert get(stalling_http, server, 0, len(BIG), None) == BIG
    assert server.connections == 1  # kept alive, pooled
    held = server.add(big_answer(hold=True))
    assert isinstance(timed_get(stalling_http, server)[0], BackendError)
    server.remove(held)
    server.add(big_answer())
    before = server.connections
    result, elapsed = timed_get(stalling_http, server)
    assert result == BIG and elapsed < STALL_S
    assert server.connections == before + 1


def test_a_reset_discards_the_idle_pooled_connections(
    stalling_http: PooledHTTP, server: FaultProxy
) -> None:
    server.add(big_answer(times=1))
    assert get(stalling_http, server, 0, len(BIG), None) == BIG
    server.add(big_answer(cut_after=1000, reset=True, times=1))
    assert isinstance(timed_get(stalling_http, server)[0], BackendError)
    server.add(big_answer())
    before = server.connections
    assert get(stalling_http, server, 0, len(BIG), None) == BIG
    assert server.connections == before + 1


def test_an_abandoned_read_gives_its_connection_up_at_the_next_chunk(
    stalling_http: PooledHTTP, server: FaultProxy
) -> None:
    """A runner attempt abandoned at its deadline stops reading (the thread ends soon)."""
    server.add(big_answer(rate_bytes_per_s=256 << 10))  # 1 s for the whole body
    attempt = Attempt()
    threading.Timer(0.2, lambda: setattr(attempt, "abandoned", True)).start()
    started = time.monotonic()
    with pytest.raises(BackendError, match="abandoned"):
        run_attempt(attempt, get, stalling_http, server, 0, len(BIG), None)
    assert time.monotonic() - started < 0.8


# -- the wait for the first byte: a stall on a first attempt, patience on a retry ------

PATIENT = Timeouts.for_reads(connect_s=2 * STALL_S, read_s=4, pool_size=4)  # head_s: 2 s


def timed_attempt(http: PooledHTTP, server: FaultProxy,
                  number: int) -> tuple[bytes | BackendError, float]:
    """`timed_get` as attempt `number` of a runner call (0: its first try)."""
    return run_attempt(Attempt(number), timed_get, http, server)


def test_a_first_byte_slower_than_the_stall_window_fails_a_first_attempt_not_a_retry(
    server: FaultProxy,
) -> None:
    """A store that takes 1 s (two stall windows) to start its answer (a large listing
    page under load): the first try gives it up as a stall, a retry waits for it."""
    http = PooledHTTP(PATIENT, "Test")
    assert PATIENT.head_s(patient=True) == 2.0
    server.add(big_answer(delay_s=2 * STALL_S))
    result, elapsed = timed_attempt(http, server, 0)
    assert isinstance(result, BackendError) and "stalled" in str(result)
    assert STALL_S <= elapsed < 2 * STALL_S
    result, elapsed = timed_attempt(http, server, 1)
    assert result == BIG
    assert 2 * STALL_S <= elapsed < PATIENT.head_s(patient=True)


def test_a_retry_waits_for_a_first_byte_no_longer_than_its_head_limit(
    server: FaultProxy,
) -> None:
    http = PooledHTTP(PATIENT, "Test")
    server.add(big_answer(hold=True))
    result, elapsed = timed_attempt(http, server, 1)
    assert isinstance(result, BackendError) and result.transient
    assert "no data from Test at" in str(result) and "for 2s (stalled)" in str(result)
    assert 2.0 <= elapsed < 2.0 + 1.5  # its head limit, not the 4 s --timeout


def test_a_retry_keeps_the_stall_rule_mid_body(server: FaultProxy) -> None:
    """The first byte may come late on a retry; after it, gaps and trickles are stalls."""
    http = PooledHTTP(PATIENT, "Test")
    server.add(big_answer(rate_bytes_per_s=8 << 10))
    result, elapsed = timed_attempt(http, server, 2)
    assert isinstance(result, BackendError) and "fewer than 65536" in str(result)
    assert elapsed < 2 * STALL_S + 1


def test_a_runner_call_to_a_slow_starting_store_succeeds_on_its_retry(
    server: FaultProxy,
) -> None:
    """Through the runner: the first attempt is given up after a stall window, the retry
    (on a new connection) waits for the first byte, within the call's deadline."""
    http = PooledHTTP(PATIENT, "Test")
    server.add(big_answer(delay_s=3 * STALL_S))

    async def call() -> bytes:
        return await Runner(2, first_backoff_s=0.05, deadline_s=4).call(
            get, http, server, 0, len(BIG), None)

    assert trio.run(call) == BIG
    assert [e.status for e in server.exchanges] == [206, 206]
