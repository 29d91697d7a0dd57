"""An HTTP-aware relay that injects faults between a client and a test server.

FaultProxy listens on a free loopback port and relays HTTP/1.1 to an upstream
server (moto's S3, the Swift proxy, Keystone), request by request, over
keep-alive connections on both sides. Each request is matched against the
proxy's rules, in order; the first Rule that matches (and has uses left) says
what goes wrong for it:

- before the upstream is asked: `delay_s` (hold the request back), `hold`
  (never answer: a blackhole; the connection stays silent until the relay stops,
  also once the rule is removed, as a flow a dead NAT dropped), `close` (drop the
  connection without an answer), `forward=False` (answer from the rule alone,
  e.g. a 503 storm);
- in the answer: `status`, `set_headers` (None removes a header), `body` (bytes,
  or a function of the upstream body: the relay fixes the framing, Content-Length,
  and nothing else);
- while the body is sent: `rate_bytes_per_s` (a trickle: pieces of a tenth of a
  second's worth, evenly spaced), `cut_after` (send that many body bytes, then
  close, the announced length unchanged: a truncated body), `reset` (with
  `cut_after` or `close`: a TCP reset instead of a clean close).

Rules can be removed (`remove`: the fault ends). `refuse()` closes the listening
socket (connections are refused: a server down) until `accept()`; `connections`
counts the connections accepted.

Every request is recorded in `exchanges` (method, target, request headers, the
status sent, and the rule that applied), so tests assert what the client asked
and what it got. Rules can be added, and `exchanges` read, while the relay runs.

Not supported: HTTP/2, TLS, `Upgrade`. Request bodies (Content-Length or chunked)
are read whole before they are forwarded; `Expect: 100-continue` is answered by
the relay itself.
"""

import contextlib
import http.client
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, Self

from tests.servers.net import listening_socket

# Bytes per socket write of a relayed body; also the unit of `rate_bytes_per_s`.
CHUNK_BYTES = 64 << 10
# Statuses whose answers never have a body (and HEAD's).
_NO_BODY = frozenset({204, 304})


@dataclass
class Rule:
    """Which requests a fault applies to, and the fault. Unset fields change nothing."""

    # Matching: every given field must match.
    method: str | None = None
    path: str | None = None  # regex, searched in the path as sent (percent-encoded)
    query: str | None = None  # regex, searched in the raw query string ("" if none)
    headers: dict[str, str] = field(default_factory=dict)  # name -> regex on the value
    times: int | None = None  # matching requests it applies to; None: every one
    # Before the upstream is asked.
    delay_s: float = 0.0
    hold: bool = False
    close: bool = False
    forward: bool = True
    # The answer.
    status: int | None = None
    reason: str | None = None
    set_headers: dict[str, str | None] = field(default_factory=dict)
    body: bytes | Callable[[bytes], bytes] | None = None
    # Sending the body.
    rate_bytes_per_s: float | None = None
    cut_after: int | None = None
    reset: bool = False
    applied: int = 0  # how many requests it applied to so far

    def matches(self, method: str, path: str, query: str, headers: dict[str, str]) -> bool:
        if self.times is not None and self.applied >= self.times:
            return False
        if self.method is not None and method != self.method:
            return False
        if self.path is not None and not re.search(self.path, path):
            return False
        if self.query is not None and not re.search(self.query, query):
            return False
        return all(re.search(pattern, headers.get(name.lower(), ""))
                   for name, pattern in self.headers.items())


@dataclass
class Exchange:
    """One request through the relay and what was answered (status None: no answer)."""

    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    status: int | None = None
    rule: Rule | None = None


class FaultProxy:
    """Relays 127.0.0.1:`port` to 127.0.0.1:`upstream_port`, applying `rules`."""

    def __init__(self, upstream_port: int, rules: list[Rule] | None = None) -> None:
        self.upstream_port = upstream_port
        self.rules: list[Rule] = list(rules or [])
        self.exchanges: list[Exchange] = []
        self._listener: socket.socket | None = listening_socket()
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._clients: set[socket.socket] = set()
        self.connections = 0

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        assert self._listener is not None
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True,
                         name="fault-proxy").start()
        return self

    def refuse(self) -> None:
        """Close the listening socket: new connections are refused (kept ones go on)."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            # close() alone leaves a thread blocked in accept() accepting (Linux):
            # shutdown() wakes it and unbinds the port.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def accept(self) -> None:
        """Listen again on the same port after `refuse`."""
        with self._lock:
            if self._listener is not None or self._stopped.is_set():
                return
            self._listener = socket.create_server(("127.0.0.1", self.port))
        self.start()

    def stop(self) -> None:
        """Stop accepting, release held requests and close every client connection."""
        self._stopped.set()
        self.go_down()

    def go_down(self) -> None:
        """The server goes away: new connections are refused, kept ones are closed."""
        self.refuse()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        """The fault ends: later requests no longer match `rule` (held ones stay held)."""
        with self._lock:
            self.rules.remove(rule)

    def statuses(self, method: str | None = None, path: str | None = None) -> list[int | None]:
        """Statuses answered so far, in order, for requests with this method and path regex."""
        with self._lock:
            return [e.status for e in self.exchanges
                    if (method is None or e.method == method)
                    and (path is None or re.search(path, e.target.split("?")[0]))]

    # The relay.

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._clients.add(client)
                self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=300)
        reader = client.makefile("rb")
        try:
            while not self._stopped.is_set() and self._relay_one(client, reader, upstream):
                pass
        except (OSError, http.client.HTTPException, ValueError):
            pass  # a peer went away, or spoke something else than HTTP/1.1
        finally:
            upstream.close()
            reader.close()
            with self._lock:
                self._clients.discard(client)
            with contextlib.suppress(OSError):
                client.close()

    def _relay_one(self, client: socket.socket, reader: BinaryIO,
                   upstream: http.client.HTTPConnection) -> bool:
        """Relay one request and its answer; return False when the connection must end."""
        line = reader.readline(65537)
        if not line:
            return False
        method, target, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        header_list = _read_headers(reader)
        headers = {name.lower(): value for name, value in header_list}
        path, _, query = target.partition("?")
        exchange = Exchange(method, target, headers)
        with self._lock:
            self.exchanges.append(exchange)
            rule = next((r for r in self.rules if r.matches(method, path, query, headers)),
                        None)
            if rule is not None:
                rule.applied += 1
                exchange.rule = rule
        if headers.get("expect", "").lower() == "100-continue":
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            header_list = [(n, v) for n, v in header_list if n.lower() != "expect"]
        body = _read_request_body(reader, headers)
        if "transfer-encoding" in headers:  # de-chunked above: send it with a length
            header_list = [(n, v) for n, v in header_list if n.lower() != "transfer-encoding"]
            header_list.append(("Content-Length", str(len(body))))
        rule = rule or Rule()
        if rule.hold:
            self._stopped.wait()
            return False
        if rule.close:
            _close(client, reset=rule.reset)
            return False
        if rule.delay_s:
            time.sleep(rule.delay_s)
        if rule.forward:
            upstream.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in header_list:
                upstream.putheader(name, value)
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            status, reason = response.status, response.reason
            out_headers = [(n, v) for n, v in response.getheaders()]
        else:
            response, status, reason, out_headers = None, 200, "OK", []
        exchange.status = rule.status or status
        keep_alive = self._answer(client, method, rule, response, status, reason, out_headers)
        return keep_alive and headers.get("connection", "").lower() != "close"

    def _answer(self, client: socket.socket, method: str, rule: Rule,
                response: http.client.HTTPResponse | None, status: int, reason: str,
                out_headers: list[tuple[str, str]]) -> bool:
        """Send the (rewritten) answer; return False if the connection must end."""
        has_body = method != "HEAD" and (rule.status or status) not in _NO_BODY
        replaced: bytes | None = None
        if rule.body is not None or response is None:
            upstream_body = response.read() if response is not None else b""
            replaced = (rule.body(upstream_body) if callable(rule.body)
                        else rule.body if rule.body is not None else b"")
            out_headers = [(n, v) for n, v in out_headers
                           if n.lower() not in ("content-length", "transfer-encoding")]
            out_headers.append(("Content-Length", str(len(replaced))))
        for name, value in rule.set_headers.items():
            out_headers = [(n, v) for n, v in out_headers if n.lower() != name.lower()]
            if value is not None:
                out_headers.append((name, value))
        if rule.status is not None:
            status = rule.status
            reason = rule.reason or http.client.responses.get(status, "")
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(
            f"{n}: {v}\r\n" for n, v in out_headers) + "\r\n"
        client.sendall(head.encode("latin-1"))
        chunked = any(n.lower() == "transfer-encoding" and "chunked" in v.lower()
                      for n, v in out_headers)
        sent = 0
        pieces = _pieces(replaced) if replaced is not None else _pieces_of(response)
        if rule.rate_bytes_per_s:
            pieces = _paced(pieces, rule.rate_bytes_per_s)
        if has_body:
            for piece in pieces:
                if rule.cut_after is not None and sent + len(piece) >= rule.cut_after:
                    client.sendall(_frame(piece[: rule.cut_after - sent], chunked))
                    _close(client, reset=rule.reset)
                    return False
                client.sendall(_frame(piece, chunked))
                sent += len(piece)
                if rule.rate_bytes_per_s:
                    time.sleep(len(piece) / rule.rate_bytes_per_s)
            if chunked:
                client.sendall(b"0\r\n\r\n")
        elif response is not None:
            response.read()  # a HEAD's (or 304's) answer is done only once read: reuse after
        if rule.cut_after is not None:  # asked to cut beyond the body's end: close after it
            _close(client, reset=rule.reset)
            return False
        closing = any(n.lower() == "connection" and v.lower() == "close" for n, v in out_headers)
        return not closing


def _read_headers(reader: BinaryIO) -> list[tuple[str, str]]:
    headers = []
    while True:
        line = reader.readline(65537).decode("latin-1").rstrip("\r\n")
        if not line:
            return headers
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))


def _read_request_body(reader: BinaryIO, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while size := int(reader.readline(1024).split(b";")[0], 16):
            parts.append(reader.read(size))
            reader.readline(3)
        _read_headers(reader)  # trailers
        return b"".join(parts)
    return reader.read(int(headers.get("content-length", 0) or 0))


def _pieces(body: bytes) -> list[bytes]:
    return [body[i : i + CHUNK_BYTES] for i in range(0, len(body), CHUNK_BYTES)]


def _pieces_of(response: http.client.HTTPResponse | None):
    """The upstream body, as it arrives (de-chunked by http.client)."""
    while response is not None and (piece := response.read(CHUNK_BYTES)):
        yield piece


def _paced(pieces, rate_bytes_per_s: float):
    """`pieces` cut into a tenth of a second's worth each (at least one byte)."""
    size = max(1, int(rate_bytes_per_s / 10))
    for piece in pieces:
        for i in range(0, len(piece), size):
            yield piece[i : i + size]


def _frame(piece: bytes, chunked: bool) -> bytes:
    if not chunked or not piece:
        return piece
    return f"{len(piece):x}\r\n".encode() + piece + b"\r\n"


def _close(sock: socket.socket, *, reset: bool) -> None:
    if reset:  # SO_LINGER 0: close() sends RST, dropping unsent data
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    else:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
    sock.close()
