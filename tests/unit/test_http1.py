"""http1.py: requests written whole, answers framed exactly, connections kept or dropped right."""

import contextlib
import io
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from objmount.backends import http1

Script = Callable[[socket.socket, bytes], bool]  # (connection, request head) -> keep going


class ScriptedServer:
    """A loopback server answering each request with the next script; records requests.

    A script writes whatever bytes it likes (valid HTTP or not) and returns False to
    close the connection after it.
    """

    def __init__(self, scripts: list[Script]) -> None:
        self.scripts = list(scripts)
        self.requests: list[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while self.scripts:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = _content_length(head)
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                body, buffer = buffer[:length], buffer[length:]
                self.requests.append(head + b"\r\n\r\n" + body)
                if not self.scripts.pop(0)(conn, head):
                    return

    def close(self) -> None:
        self._listener.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def answer(raw: bytes, keep: bool = True) -> Script:
    def script(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(raw)
        return keep
    return script


def ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


@contextlib.contextmanager
def serving(*scripts: Script) -> Iterator[ScriptedServer]:
    server = ScriptedServer(list(scripts))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pool() -> Iterator[http1.Pool]:
    pool = http1.Pool(connect_s=2, read_s=5, max_idle=2)
    yield pool
    pool.close()


def get(pool: http1.Pool, url: str, headers: dict[str, str] | None = None) -> http1.Answer:
    return pool.request("GET", url + "/c/k", headers or {})


def test_a_body_by_content_length_is_read_whole_and_the_connection_kept(pool: http1.Pool) -> None:
    body = bytes(range(256)) * 1000
    with serving(answer(ok(body)), answer(ok(b"again"))) as server:
        first = get(pool, server.url)
        assert (first.status, first.reason) == (200, "OK")
        assert first.read(len(body) + 10) == body
        first.release()
        second = get(pool, server.url)
        assert second.read_all() == b"again"
        second.release()
        assert server.connections == 1
        assert server.requests[0].startswith(b"GET /c/k HTTP/1.1\r\nHost: 127.0.0.1:")


def test_a_chunked_body_is_decoded_with_its_trailers(pool: http1.Pool) -> None:
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n")
    with serving(answer(raw), answer(ok(b"next"))) as server:
        first = get(pool, server.url)
        assert first.length_remaining is None
        assert first.read_all() == b"hello world"
        first.release()
        assert get(pool, server.url).read_all() == b"next"
        assert server.connections == 1


def test_a_body_cut_short_raises_and_its_connection_is_dropped(pool: http1.Pool) -> None:
    with serving(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", keep=False),
                 answer(ok(b"fresh"))) as server:
        first = get(pool, server.url)
        with pytest.raises(http1.IncompleteBody):
            first.read(10)
        first.close()
        assert get(pool, server.url).read_all() == b"fresh"
        assert server.connections == 2


def test_a_server_that_closed_an_idle_connection_gets_the_request_again(
    pool: http1.Pool
) -> None:
    with serving(answer(ok(b"one"), keep=False), answer(ok(b"two"))) as server:
        first = get(pool, server.url)
        assert first.read_all() == b"one"
        first.release()  # pooled: the server closes it meanwhile
        assert get(pool, server.url).read_all() == b"two"
        assert server.connections == 2
        assert len(server.requests) == 2


def test_connection_close_and_http_1_0_answers_are_not_pooled(pool: http1.Pool) -> None:
    with serving(answer(ok(b"a", "Connection: close\r\n"), keep=False),
                 answer(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb", keep=False),
                 answer(b"HTTP/1.0 200 OK\r\n\r\nto the end", keep=False),
                 answer(ok(b"d"))) as server:
        for expected in (b"a", b"b", b"to the end", b"d"):
            response = get(pool, server.url)
            assert response.read_all() == expected
            response.release()
        assert server.connections == 4


def test_interim_answers_are_skipped(pool: http1.Pool) -> None:
    with serving(answer(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final"))) as server:
        response = get(pool, server.url)
        assert (response.status, response.read_all()) == (200, b"final")


def test_headers_are_lower_cased_joined_and_unfolded(pool: http1.Pool) -> None:
    raw = (b"HTTP/1.1 206 Partial Content\r\nETag: \"abc\"\r\nX-Multi: 1\r\nx-multi: 2\r\n"
           b"X-Folded: first\r\n  second\r\nContent-Length: 0\r\n\r\n")
    with serving(answer(raw)) as server:
        headers = get(pool, server.url).headers
    assert headers["etag"] == '"abc"'
    assert headers["x-multi"] == "1, 2"
    assert headers["x-folded"] == "first second"


@pytest.mark.parametrize("raw", [
    b"SPDY/3 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * (http1.MAX_HEAD_BYTES + 1) + b"\r\n\r\n",
], ids=["not http", "bad header line", "two lengths", "negative length", "head too big"])
def test_what_is_not_an_http_answer_is_a_protocol_error(pool: http1.Pool, raw: bytes) -> None:
    with serving(answer(raw, keep=False)) as server, pytest.raises(http1.ProtocolError):
        get(pool, server.url).read_all()


@pytest.mark.parametrize("headers", [
    {"If-Match": '"etag"\r\nX-Injected: 1'},
    {"Bad Name": "x"},
    {"X-Nul": "a\0b"},
])
def test_a_header_that_could_inject_another_is_refused_unsent(
    pool: http1.Pool, headers: dict[str, str]
) -> None:
    with serving(answer(ok(b"never"))) as server:
        with pytest.raises(ValueError):
            get(pool, server.url, headers)
        assert server.requests == []


def test_a_target_with_a_line_break_is_refused(pool: http1.Pool) -> None:
    with pytest.raises(ValueError):
        pool.request("GET", "http://127.0.0.1:1/a\r\nb", {})


def test_a_put_sends_its_file_body_in_blocks_and_reads_the_answer(pool: http1.Pool) -> None:
    body = bytes(range(256)) * 300
    with serving(answer(ok(b"", 'ETag: "e"\r\n'))) as server:
        response = pool.request("PUT", server.url + "/c/k",
                                {"Content-Length": str(len(body))}, io.BytesIO(body))
        assert response.status == 200 and response.headers["etag"] == '"e"'
        assert server.requests[0].endswith(b"\r\n\r\n" + body)


def test_a_refused_connection_is_a_connect_failure(pool: http1.Pool) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(http1.ConnectFailed, match="refused"):
            pool.request("GET", f"http://127.0.0.1:{port}/", {})


def test_a_silent_server_times_out() -> None:
    quiet = http1.Pool(connect_s=2, read_s=0.2, max_idle=1)
    done = threading.Event()
    with serving(lambda conn, head: done.wait(10)) as server, pytest.raises(TimeoutError):
        try:
            quiet.request("GET", server.url + "/", {})
        finally:
            done.set()
