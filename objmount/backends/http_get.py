"""Pooled HTTP for the lean S3 and Swift paths: exact byte ranges, or an error.

s3_get.py (SigV4-signed) and swift.py (a token from keystoneauth1) build their
requests; this module sends them over one pool of kept-alive connections
(http1.py), reads the bodies and checks them.

Invariants:
- bytes come back as stored: a body is never decoded, and requests say
  `Accept-Encoding: identity`, so an object stored with Content-Encoding: gzip
  reads as its stored bytes, as boto3 gives them;
- `get_range` returns exactly bytes [start, min(end, size)) of the object, or
  raises. A 206 must carry the Content-Range asked for. A 200 (a server that
  ignored Range) is the whole object: it is sliced only if it is the version
  asked for (its ETag is the If-Match one), else ETagMismatch. A body shorter
  than its Content-Length is a transient error, never a short read;
- a status other than 200/206 is a StatusError for the caller to translate
  (S3 into botocore's ClientError, Swift into its own errors); every transport
  failure is already an objmount BackendError: Unreachable when no connection
  could be made, a transient BackendError when one broke or timed out;
- no retries here (the runner retries, within its bounds), but for the one
  http1.py makes: a request whose reused connection the server had closed.

Time is bounded in one place each: `Timeouts` become http1.Pool's connect and
read (idle) timeouts in `PooledHTTP.__init__`; every request goes out through
`send`; every body comes in through `_read_exactly` (one read into one buffer,
watched receive by receive). With the stall rule on (`Timeouts.stall_s`, see
backends/__init__.py) a socket that brings no byte for stall_s fails (the idle
timeout; a retry's wait for the first byte of its answer may last longer:
`Timeouts.head_s`), and so does a body that brings fewer than LOW_SPEED_BYTES in a window
of stall_s (checked as bytes arrive: a trickle is caught within two windows).
A read whose runner attempt was abandoned (deadline.abandoned) stops at the next
receive. Every transport failure (a stall, a reset, a body cut short, a refused
or timed-out connect) discards the pool's idle connections: they lead to the
same host, and after an outage they are dead without knowing it, so the first
request after the store's return would otherwise wait out a stall on each of them.
"""

import contextlib
import errno
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from objmount import __version__
from objmount.backends import LOW_SPEED_BYTES, Timeouts, http1
from objmount.backends.base import BackendError, ETagMismatch, Unreachable
from objmount.backends.deadline import abandoned, patient

# Bytes skipped per read when a 200 answers a ranged GET (the part before the range).
CHUNK_BYTES = 1 << 20
# Of an error answer's body, what is kept (S3's XML error, Swift's text).
ERROR_BODY_BYTES = 64 << 10
# Servers' access logs show which path a request took (swiftclient's, boto3's or ours).
USER_AGENT = f"objmount/{__version__}"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_REASON_MARKERS = ("Connection refused", "timed out", "Name or service not known",
                   "No route to host", "Network is unreachable", "Connection reset by peer",
                   "Connection aborted", "Read timed out")


class StatusError(Exception):
    """The server answered a status other than 200 or 206 (its body's first bytes kept)."""

    def __init__(self, status: int, reason: str, headers: Mapping[str, str], body: bytes) -> None:
        super().__init__(f"HTTP {status} {reason}".rstrip())
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body


def range_headers(start: int, end: int, etag: str | None) -> dict[str, str]:
    """Range (and If-Match, with an ETag) of a GET of bytes [start, end); end > start."""
    headers = {"Range": f"bytes={start}-{end - 1}"}
    if etag:
        headers["If-Match"] = f'"{etag}"'
    return headers


def lean_get_supported(url: str) -> bool:
    """False where this path would differ from the SDKs': a proxy applies to `url`'s host
    (boto3 and requests honour HTTP(S)_PROXY; this pool does not)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    proxies = urllib.request.getproxies()
    return not (proxies and not urllib.request.proxy_bypass(host))


def short_reason(exc: BaseException) -> str:
    """The gist of a connection error ("connection refused"), without the stack of wrappers."""
    text = str(exc)
    for marker in _REASON_MARKERS:
        if marker in text:
            return marker.lower()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:200]


@dataclass(frozen=True, slots=True)
class _Part:
    """Which bytes of an answer's body are the ones asked for."""

    skip: int
    length: int


class PooledHTTP:
    """Kept-alive connections for one service (http1.py); thread-safe. `service` ("S3",
    "Swift") names it in errors, with the origin of the URL: "cannot reach Swift at
    http://host:8080"."""

    def __init__(self, timeouts: Timeouts, service: str, ca_certs: str | None = None,
                 send_block_bytes: int = 16384) -> None:
        """`send_block_bytes`: bytes per socket write of a request body read from a file."""
        self.service = service
        self.timeouts = timeouts
        self.pool = http1.Pool(timeouts.connect_s, timeouts.idle_s, timeouts.pool_size,
                               ca_certs=ca_certs, send_block_bytes=send_block_bytes)

    def send(self, method: str, url: str, headers: Mapping[str, str], what: str,
             body: BinaryIO | bytes | None = None) -> http1.Answer:
        """Send one request; return the answer with its body unread (blocking).

        The caller reads the body with `read_all`, or gets a `status_error`, or
        gives the answer up with `close`. Raises Unreachable or a transient
        BackendError (see the module docstring).
        """
        headers = {**headers, "Accept-Encoding": "identity", "User-Agent": USER_AGENT}
        head_s = self.timeouts.head_s(patient())
        with self._transport_errors(what, url, head_s):
            return self.pool.request(method, url, headers, body, head_s)

    def get(self, url: str, headers: Mapping[str, str], what: str) -> bytes:
        """GET `url` whole: the body of a 200; raises StatusError for any other status."""
        response = self.send("GET", url, headers, what)
        if response.status != 200:
            raise self.status_error(response)
        return self.read_all(response, what)

    def get_range(self, url: str, headers: Mapping[str, str], start: int, end: int,
                  etag: str | None, what: str) -> bytes | bytearray:
        """GET bytes [start, end) with `headers` (from range_headers, signed or not).

        Returns exactly the bytes asked for, fewer only where the object ends
        before `end`. Raises StatusError (not 200/206), ETagMismatch (another
        version answered), BackendError (an answer that does not fit the request,
        or a transport failure). `what` names the object in messages.
        """
        response = self.send("GET", url, headers, what)
        if response.status not in (200, 206):
            raise self.status_error(response)
        try:
            part = part_of_answer(response.status, response.headers, response.length_remaining,
                                  start, end, etag, what)
            if part.skip:
                self._discard(response, part.skip, what)
            data = self._read_exactly(response, part.length, what)
        except BaseException:
            response.close()
            raise
        response.release()  # a 200 of more than the range: the rest unread, so closed
        return data

    def read_all(self, response: http1.Answer, what: str) -> bytes:
        """The whole body of `response` (its framing checked), then the connection goes back."""
        try:
            with self._transport_errors(what, ""):
                data = response.read_all()
        except BaseException:
            response.close()
            raise
        response.release()
        return data

    def status_error(self, response: http1.Answer) -> StatusError:
        """The StatusError of an error answer; reads (a bounded part of) its body."""
        body = b""
        with contextlib.suppress(BackendError), self._transport_errors("an error answer", ""):
            body = response.read_all(ERROR_BODY_BYTES)
        response.release()  # closed unless the body was read to its end
        return StatusError(response.status, response.reason, response.headers, body)

    def close(self, response: http1.Answer) -> None:
        """Give up on `response`: its connection, in an unknown state, is closed, not reused."""
        response.close()

    def _read_exactly(self, response: http1.Answer, length: int, what: str
                      ) -> bytes | bytearray:
        """Read exactly `length` bytes of the body, under the stall rule; fewer, or too
        slowly, is a transient BackendError."""
        with self._transport_errors(what, ""):
            data = response.read(length, _LowSpeed(self, what))
        if len(data) != length:
            raise self._broken(f"{what}: the connection closed after {len(data)} of "
                               f"{length} bytes")
        return data

    def _broken(self, message: str) -> BackendError:
        """The transient error of a transport failure, once the idle connections are gone."""
        self.pool.close()
        return BackendError(message, transient=True)

    def _discard(self, response: http1.Answer, length: int, what: str) -> None:
        """Read and drop `length` bytes of the body (the part of a 200 before the range)."""
        while length > 0:
            length -= len(self._read_exactly(response, min(CHUNK_BYTES, length), what))

    @contextlib.contextmanager
    def _transport_errors(self, what: str, url: str,
                          waited_s: float | None = None) -> Iterator[None]:
        """Raise http1's errors as objmount's: Unreachable if no connection was made.
        `waited_s`: the longest wait for a byte allowed (Timeouts.head_s; idle_s if None)."""
        try:
            yield
        except http1.ConnectFailed as exc:
            self.pool.close()
            reason = (f"no answer to connect within {self.timeouts.connect_s:g}s"
                      if exc.errno == errno.ETIMEDOUT else short_reason(exc))
            raise Unreachable(f"cannot reach {self._where(url)}: {reason}") from None
        except http1.TLSFailed as exc:
            raise BackendError(f"cannot reach {self._where(url)}: TLS: {exc.strerror}") from None
        except TimeoutError:
            waited = self.timeouts.idle_s if waited_s is None else waited_s  # >= idle_s
            raise self._broken(f"{what}: no data from {self._where(url)} for "
                               f"{waited:g}s (stalled)") from None
        except http1.IncompleteBody as exc:
            raise self._broken(f"{what}: connection to {self._where(url)} broken "
                               f"({exc})") from None
        except (http1.ProtocolError, OSError) as exc:  # reset, broken pipe, TLS after the
            raise self._broken(f"{what}: connection to {self._where(url)} broken "  # handshake
                               f"({short_reason(exc)})") from None
        except ValueError as exc:  # a request that cannot be written (a CR in a header)
            raise BackendError(f"{what}: cannot send the request ({exc})") from None

    def _where(self, url: str) -> str:
        """"S3 at http://host:port" (the service alone without a URL), for messages."""
        parts = urllib.parse.urlsplit(url)
        return f"{self.service} at {parts.scheme}://{parts.netloc}" if parts.netloc \
            else self.service


class _LowSpeed:
    """The watch of one body read (http1.Watch): fewer than LOW_SPEED_BYTES in a window
    of stall_s, or an abandoned attempt, ends it with a transient BackendError."""

    def __init__(self, http: PooledHTTP, what: str) -> None:
        self.http = http
        self.what = what
        self.stall_s = http.timeouts.stall_s
        self.window_start = time.monotonic()
        self.window_bytes = 0

    def __call__(self, received: int) -> None:
        if abandoned():
            raise BackendError(f"{self.what}: abandoned (deadline or interrupt)")
        if self.stall_s is None:
            return
        self.window_bytes += received
        now = time.monotonic()
        if now - self.window_start >= self.stall_s:
            if self.window_bytes < LOW_SPEED_BYTES:
                raise self.http._broken(
                    f"{self.what}: stalled: {self.window_bytes} bytes in "
                    f"{now - self.window_start:.1f}s from {self.http.service} (fewer than "
                    f"{LOW_SPEED_BYTES} per {self.stall_s:g}s)")
            self.window_start, self.window_bytes = now, 0


def part_of_answer(status: int, headers: Mapping[str, str], length: int | None, start: int,
                   end: int, etag: str | None, what: str) -> _Part:
    """Which bytes of a 200 or 206 answer with `headers` (lower-case names looked up) and a
    body of `length` bytes (None: unknown) are bytes [start, end); raises if it does not fit."""
    answered = _unquoted(headers.get("etag"))
    if etag and answered is not None and answered != etag:
        raise ETagMismatch(f"{what}: object changed since it was opened (ETag differs)")
    if status == 206:
        match = _CONTENT_RANGE.fullmatch((headers.get("content-range") or "").strip())
        if match is None:
            raise BackendError(f"{what}: the store answered 206 without a usable Content-Range "
                               f"({headers.get('content-range')!r}) when asked for bytes "
                               f"{start}-{end - 1}")
        first, last = int(match[1]), int(match[2])
        total = None if match[3] == "*" else int(match[3])
        # The end may be short of the one asked for only where the object ends.
        fits = first == start and (last == end - 1
                                   or (total is not None and last == total - 1 < end - 1))
        if not fits or (length is not None and length != last - first + 1):
            raise BackendError(f"{what}: the store answered bytes {first}-{last} (of {total}, "
                               f"{length} sent) when asked for bytes {start}-{end - 1}")
        return _Part(0, last - first + 1)
    # 200: the server ignored Range, the body is the whole object. Its ETag must
    # show that it is the version asked for: a server that ignores Range may
    # ignore If-Match as well.
    if etag and answered is None:
        raise BackendError(f"{what}: the store answered a ranged, conditional GET with the "
                           "whole object and no ETag: cannot tell its version")
    if length is None:
        raise BackendError(f"{what}: the store answered a ranged GET with the whole object "
                           "and no Content-Length")
    return _Part(min(start, length), max(0, min(end, length) - start))


def slice_answer(status: int, headers: Mapping[str, str], body: bytes, start: int, end: int,
                 etag: str | None, what: str) -> bytes:
    """Bytes [start, end) from a 200 or 206 answer already read whole (an SDK's), checked
    as `get_range` checks its own; raises as `part_of_answer`, and for a short body."""
    announced = headers.get("content-length")
    if announced is not None and announced.isdigit() and int(announced) != len(body):
        raise BackendError(f"{what}: the store sent {len(body)} bytes of {announced}",
                           transient=True)
    part = part_of_answer(status, headers, len(body), start, end, etag, what)
    if part.skip == 0 and part.length == len(body):
        return body
    return body[part.skip : part.skip + part.length]


def _unquoted(etag: str | None) -> str | None:
    """An ETag header's value without W/ and quotes; None if absent."""
    if etag is None:
        return None
    return etag.strip().removeprefix("W/").strip('"')
