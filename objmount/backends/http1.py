"""HTTP/1.1 over kept-alive sockets for the lean GETs and PUTs (http_get.py): the wire, no more.

urllib3 over http.client cost ~0.5-0.8 ms of CPU per small GET here (one thread,
SeaweedFS on the same machine at load ~8: 1.1 ms per signed GET through urllib3,
0.33 ms for the same GET written on a socket), most of it beside the bytes: the
URL parsed and re-encoded, header containers, http.client's email-based header
parser, response wrappers, a body read in small chunks. A GET needs a request
written in one send, a head split into lines, and a body read into one buffer.

Invariants (RFC 9112):
- a request whose method, target, header names or values hold CR, LF or NUL is
  refused (ValueError) before anything is sent: an ETag or a key cannot inject
  headers;
- an answer's head is at most MAX_HEAD_BYTES; interim (1xx) answers are skipped;
- a body is framed by chunked coding, else by Content-Length (one value, digits
  only), else it is empty (HEAD, 204, 304), else it ends with the connection.
  A body shorter than its frame raises IncompleteBody: never a short read;
- a connection goes back to its pool only once its answer was read to the end,
  when neither side asked to close it and the answer was HTTP/1.1 (or 1.0 with
  keep-alive); a pooled connection that became readable while idle (the server
  closed it, or sent stray bytes) is discarded unused;
- a request sent on a reused connection that fails before any byte of its answer
  arrived is sent once more, on a new connection, if its body can be sent again
  (none, bytes, or a seekable file): the server closed the idle connection under
  us. Nothing else is retried here (the runner retries, with backoff);
- a body upload cut by the server (broken pipe, reset) still returns the answer
  the server sent before closing, if it sent one (its error says why);
- time is bounded: connect within `connect_s`, the first byte of an answer within
  the request's `head_s` (read_s if none), every other wait for the socket (send or
  receive) within `read_s`; a slower body is for the caller's `watch`
  (told every receive) to cut short.

Errors: ConnectFailed (no connection could be made), TLSFailed (no TLS session),
TimeoutError (no progress for read_s), ProtocolError (not an HTTP/1.x answer),
IncompleteBody, other OSErrors (a broken connection; ssl.SSLError included).
http_get.py maps them to objmount's.
"""

import contextlib
import errno
import re
import select
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

MAX_HEAD_BYTES = 64 << 10
# One receive: a small answer (head and a 100 KiB body) takes two or three.
RECV_BYTES = 256 << 10
# The longest chunk-size line of a chunked body (hex digits and extensions).
MAX_CHUNK_LINE_BYTES = 4096
_BAD_CHARS = re.compile(r"[\r\n\0]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) (\d{3})(?: (.*))?")
# One header field per line: a token, a colon, the value without surrounding blanks.
_FIELD = re.compile(r"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*\r?$", re.M)
# Header names joined by "\x01": all tokens.
_TOKENS = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:\x01[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Told the size of each receive of a body (http_get.py's low-speed rule); may raise.
Watch = Callable[[int], None]


class ConnectFailed(OSError):
    """No connection could be made (refused, no route, DNS, connect timeout)."""


class TLSFailed(OSError):
    """The TLS handshake failed (a certificate not trusted, no common protocol)."""


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.x answer."""


class IncompleteBody(Exception):
    """The connection ended before the body's announced end."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: scheme, host (for connecting; IPv6 without brackets), port."""

    scheme: str
    host: str
    port: int


def split_url(url: str) -> tuple[Origin, str, str]:
    """Return the origin of `url`, its Host header value and its request target."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    default = _DEFAULT_PORTS[parts.scheme]
    port = parts.port or default
    host = parts.hostname
    host_header = f"[{host}]" if ":" in host else host
    if port != default:
        host_header = f"{host_header}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Origin(parts.scheme, host, port), host_header, target


class Connection:
    """One socket to one origin, with the bytes received but not yet consumed
    (`buffer` from `pos`: consumed bytes are skipped, not copied away)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.pos = 0
        self.reused = False

    @property
    def buffered(self) -> int:
        return len(self.buffer) - self.pos

    def fill(self) -> bool:
        """Receive more bytes into the buffer; False at the end of the stream."""
        data = self.sock.recv(RECV_BYTES)
        if not data:
            return False
        self.buffer = self.buffer[self.pos:] + data if self.pos < len(self.buffer) else data
        self.pos = 0
        return True

    def read_until(self, marker: bytes, limit: int) -> bytes:
        """Return the bytes up to the next `marker` (consumed with it); raise past `limit`."""
        while True:
            end = self.buffer.find(marker, self.pos)
            if end - self.pos > limit:
                raise ProtocolError(f"more than {limit} bytes without a line end")
            if end >= 0:
                found = self.buffer[self.pos:end]
                self.pos = end + len(marker)
                return found
            if self.buffered > limit:
                raise ProtocolError(f"more than {limit} bytes without a line end")
            if not self.fill():
                raise IncompleteBody("the connection closed within a line")

    def read_into(self, view: memoryview, watch: Watch | None = None) -> int:
        """Fill `view` from the buffer, then the socket; return the bytes got (fewer only
        if the stream ended). `watch` is told every receive's size (it may raise)."""
        got = min(self.buffered, len(view))
        if got:
            view[:got] = memoryview(self.buffer)[self.pos:self.pos + got]
            self.pos += got
        recv_into = self.sock.recv_into
        while got < len(view):
            n = recv_into(view[got:])
            if n == 0:
                break
            got += n
            if watch is not None:
                watch(n)
        return got

    def idle_and_open(self) -> bool:
        """True if nothing arrived while the connection sat in the pool (no EOF, no
        stray bytes): it may carry a request."""
        if self.buffered or (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
            return False
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return not poller.poll(0)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Answer:
    """An answer whose head was read; read its body with `read`/`read_all`, then `release`."""

    def __init__(self, pool: "Pool", origin: Origin, conn: Connection, status: int,
                 reason: str, headers: dict[str, str], keep_alive: bool, method: str) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case names; repeated headers joined with ", "
        self._pool = pool
        self._origin = origin
        self._conn: Connection | None = conn
        self._keep_alive = keep_alive
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._chunk_left = 0  # chunked: bytes left in the current chunk
        self._ended = False
        self.length_remaining: int | None = None  # None: unknown (chunked, or to the end)
        if self._chunked:
            if "content-length" in headers:  # both: chunked wins, the connection goes
                self._keep_alive = False
            return
        if method == "HEAD" or status in (204, 304):
            self.length_remaining = 0
        elif "content-length" in headers:
            values = {v.strip() for v in headers["content-length"].split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise ProtocolError(f"bad Content-Length {headers['content-length']!r}")
            self.length_remaining = int(values.pop())
        else:
            self._keep_alive = False  # the body ends with the connection

    @property
    def complete(self) -> bool:
        return self._ended or self.length_remaining == 0

    def read(self, length: int, watch: Watch | None = None) -> bytes | bytearray:
        """Return exactly the next `length` bytes of the body (fewer if it ends first:
        only where its frame says it ends); raise IncompleteBody if it is cut short.
        `watch` is told the size of every receive from the socket (and may raise)."""
        if length <= 0 or self.complete:
            return b""
        conn = self._live()
        if self._chunked:
            return self._read_chunked(conn, length, watch)
        if self.length_remaining is not None:
            length = min(length, self.length_remaining)
        out = bytearray(length)
        got = conn.read_into(memoryview(out), watch)
        if self.length_remaining is not None:
            self.length_remaining -= got
            if got < length:
                raise IncompleteBody(f"the connection closed {self.length_remaining} bytes "
                                     "before the end of the body")
        elif got < length:
            self._ended = True
            del out[got:]
        return out  # not copied into bytes: a block can be megabytes

    def read_all(self, limit: int | None = None) -> bytes:
        """Return the rest of the body (at most `limit` bytes: the rest is left unread)."""
        if self.length_remaining is not None:
            want = self.length_remaining if limit is None else min(limit, self.length_remaining)
            return self.read(want)
        parts = []
        got = 0
        while not self.complete and (limit is None or got < limit):
            part = self.read(RECV_BYTES if limit is None else min(RECV_BYTES, limit - got))
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def release(self) -> None:
        """Give the connection back to the pool if the body was read to its end and it may
        be kept, else close it. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self.complete and self._keep_alive:
            self._pool.put(self._origin, conn)
        else:
            conn.close()

    def close(self) -> None:
        """Close the connection whatever the state of the body (it is not reused)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _live(self) -> Connection:
        if self._conn is None:
            raise ProtocolError("the answer was already released")
        return self._conn

    def _read_chunked(self, conn: Connection, length: int, watch: Watch | None) -> bytes:
        parts = []
        want = length
        while want and not self._ended:
            if self._chunk_left == 0:
                line = conn.read_until(b"\r\n", MAX_CHUNK_LINE_BYTES)
                size = line.split(b";", 1)[0].strip()
                if not size or not all(c in b"0123456789abcdefABCDEF" for c in size):
                    raise ProtocolError(f"bad chunk size {line[:40]!r}")
                self._chunk_left = int(size, 16)
                if self._chunk_left == 0:
                    while conn.read_until(b"\r\n", MAX_HEAD_BYTES):  # trailers, to the blank line
                        pass
                    self._ended = True
                    break
            take = min(want, self._chunk_left)
            out = bytearray(take)
            got = conn.read_into(memoryview(out), watch)
            if got < take:
                raise IncompleteBody("the connection closed within a chunk")
            parts.append(bytes(out))
            want -= take
            self._chunk_left -= take
            if self._chunk_left == 0 and conn.read_until(b"\r\n", 2) != b"":
                raise ProtocolError("a chunk not followed by CRLF")
        return b"".join(parts)


class Pool:
    """Kept-alive connections per origin (at most `max_idle` idle ones each); thread-safe."""

    def __init__(self, connect_s: float, read_s: float, max_idle: int,
                 ca_certs: str | None = None, send_block_bytes: int = 16384) -> None:
        self.connect_s = connect_s
        self.read_s = read_s
        self.max_idle = max_idle
        self.send_block_bytes = send_block_bytes
        self._ca_certs = ca_certs
        self._tls: ssl.SSLContext | None = None
        self._idle: dict[Origin, list[Connection]] = {}
        self._lock = threading.Lock()

    def request(self, method: str, url: str, headers: Mapping[str, str],
                body: bytes | BinaryIO | None = None, head_s: float | None = None) -> Answer:
        """Send one request; return its answer with the body unread (see Answer).

        Blocks on the network (bounded, see the module docstring); the wait for the
        first byte of the answer lasts up to `head_s` (None: read_s). Raises ValueError
        for a request that cannot be written, else the errors the module docstring lists.
        """
        if _BAD_CHARS.search(url):  # urlsplit would drop them silently
            raise ValueError(f"cannot send {method!r} {url!r}")
        origin, host, target = split_url(url)
        head = _request_head(method, target, host, headers, body)
        rewind = body.tell() if body is not None and not isinstance(body, bytes) \
            and body.seekable() else None
        conn = self._take(origin)
        while True:
            try:
                _send(conn, head, body, self.send_block_bytes)
                return self._answer(origin, conn, method, head_s)
            except _Stale:
                conn.close()
                if not isinstance(body, bytes | None) and rewind is None:
                    raise ConnectionResetError(errno.ECONNRESET, "the server closed the "
                                               "connection before answering") from None
                if rewind is not None:
                    body.seek(rewind)  # type: ignore[union-attr]
                conn = self._connect(origin)
            except BaseException:
                conn.close()
                raise

    def put(self, origin: Origin, conn: Connection) -> None:
        conn.reused = True
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _take(self, origin: Origin) -> Connection:
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                conn = idle.pop() if idle else None
            if conn is None:
                return self._connect(origin)
            if conn.idle_and_open():
                return conn
            conn.close()

    def _connect(self, origin: Origin) -> Connection:
        try:
            sock = socket.create_connection((origin.host, origin.port), timeout=self.connect_s)
        except TimeoutError:
            raise ConnectFailed(errno.ETIMEDOUT, "no answer to connect within "
                                f"{self.connect_s:g}s") from None
        except OSError as exc:  # refused, unreachable, DNS (socket.gaierror)
            raise ConnectFailed(exc.errno or errno.EHOSTUNREACH, str(exc)) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.read_s)
            if origin.scheme == "https":
                try:
                    sock = self._tls_context().wrap_socket(sock, server_hostname=origin.host)
                except ssl.SSLError as exc:
                    raise TLSFailed(errno.EPROTO, exc.reason or str(exc)) from None
        except BaseException:
            sock.close()
            raise
        return Connection(sock)

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=self._ca_certs)
        return self._tls

    def _answer(self, origin: Origin, conn: Connection, method: str,
                head_s: float | None) -> Answer:
        """Read the head of the answer (skipping 1xx ones), its first byte within `head_s`."""
        while True:
            try:
                if head_s is not None and head_s != self.read_s and not conn.buffered:
                    conn.sock.settimeout(head_s)
                    try:
                        if not conn.fill():
                            raise IncompleteBody("the connection closed before an answer")
                    finally:
                        conn.sock.settimeout(self.read_s)
                head = conn.read_until(b"\r\n\r\n", MAX_HEAD_BYTES)
            except (IncompleteBody, ConnectionResetError) as exc:
                if conn.reused and not conn.buffered:
                    raise _Stale from exc
                raise IncompleteBody("the connection closed before an answer") from exc
            conn.reused = False  # bytes arrived: whatever fails now is not a stale socket
            line, _, rest = head.partition(b"\r\n")
            match = _STATUS_LINE.fullmatch(line)
            if match is None:
                raise ProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
            minor, status = int(match[1]), int(match[2])
            reason = (match[3] or b"").decode("latin-1")
            headers = _parse_headers(rest)
            if 100 <= status < 200:
                continue
            tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
            keep_alive = "close" not in tokens and (minor == 1 or "keep-alive" in tokens)
            return Answer(self, origin, conn, status, reason, headers, keep_alive, method)


class _Stale(Exception):
    """A reused connection failed before any byte of the answer: send again."""


def _request_head(method: str, target: str, host: str, headers: Mapping[str, str],
                  body: bytes | BinaryIO | None) -> bytes:
    fields = {"Host": host, **headers}
    if isinstance(body, bytes) and not any(k.lower() == "content-length" for k in fields):
        fields["Content-Length"] = str(len(body))
    if not _TOKEN.fullmatch(method) or _BAD_CHARS.search(target) or " " in target:
        raise ValueError(f"cannot send {method!r} {target!r}")
    if not _TOKENS.fullmatch("\x01".join(fields)) or _BAD_CHARS.search("".join(fields.values())):
        bad = [n for n, v in fields.items() if not _TOKEN.fullmatch(n) or _BAD_CHARS.search(v)]
        raise ValueError(f"invalid header {bad[0]!r}")
    head = "".join([f"{method} {target} HTTP/1.1\r\n",
                    *(f"{name}: {value}\r\n" for name, value in fields.items()), "\r\n"])
    return head.encode("latin-1")


def _send(conn: Connection, head: bytes, body: bytes | BinaryIO | None, block: int) -> None:
    """Write the request. A reused connection found broken is _Stale; a body cut by the
    server is not an error here (its answer, if it sent one, says why)."""
    try:
        conn.sock.sendall(head if not isinstance(body, bytes) else head + body)
    except (BrokenPipeError, ConnectionResetError) as exc:
        if conn.reused:
            raise _Stale from exc
        raise
    if body is None or isinstance(body, bytes):
        return
    try:
        for piece in _blocks(body, block):
            conn.sock.sendall(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server stopped reading: its answer (next) says why, or it closed


def _blocks(body: BinaryIO, block: int) -> Iterable[bytes]:
    while piece := body.read(block):
        yield piece


def _parse_headers(block: bytes) -> dict[str, str]:
    """The header fields of a head (without its status line and final CRLF)."""
    text = block.decode("latin-1")
    if "\n " in text or "\n\t" in text:  # obsolete line folding: a value goes on
        text = re.sub(r"\r\n[ \t]+", " ", text)
    fields = _FIELD.findall(text)
    if len(fields) != (text.count("\r\n") + 1 if text else 0):
        raise ProtocolError(f"bad header line in {block[:200]!r}")
    headers: dict[str, str] = {}
    for name, value in fields:
        name = name.lower()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers
