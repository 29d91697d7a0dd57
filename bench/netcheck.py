"""Checks of the injected network: the relay adds one RTT per request, and how fast it can go.

`request_latency` times the same small GET with curl, direct and through the
relay, on a new and on a kept-alive connection. `relay_ceiling` measures the
relay alone: a plain TCP source in this process, streamed through a second
relay with the same RTT, so the figure is the relay's and not the S3 server's.
"""

import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

from bench.relay import start_relay

CEILING_BYTES = 512 << 20
_CHUNK = memoryview(bytes(1 << 20))


@dataclass
class Latency:
    """Seconds of a GET on a new connection and on a reused one, direct and through the relay."""

    direct_new_s: float
    direct_reused_s: float
    relay_new_s: float
    relay_reused_s: float


def _curl_twice(url: str) -> tuple[float, float]:
    """GET `url` twice on one connection; return both total times."""
    out = subprocess.run(
        ["curl", "-s", "-f", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{time_total}\\n",
         url, url], capture_output=True, text=True, check=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def request_latency(direct_url: str, relay_url: str, tries: int = 5) -> Latency | None:
    """Median curl times for `tries` runs; None when curl is not installed."""
    if shutil.which("curl") is None:
        return None
    direct = sorted(_curl_twice(direct_url) for _ in range(tries))
    relay = sorted(_curl_twice(relay_url) for _ in range(tries))

    def median(rows: list[tuple[float, float]], i: int) -> float:
        return sorted(r[i] for r in rows)[len(rows) // 2]

    return Latency(median(direct, 0), median(direct, 1), median(relay, 0), median(relay, 1))


def _source_server() -> tuple[socket.socket, int]:
    """A TCP server that sends as many zero bytes as the first line asks for."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)

    def handle(conn: socket.socket) -> None:
        with conn:
            remaining = int(conn.recv(64).strip() or b"0")
            while remaining > 0:
                n = min(remaining, len(_CHUNK))
                conn.sendall(_CHUNK[:n])
                remaining -= n

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server, server.getsockname()[1]


def _pull(port: int, nbytes: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"%d\n" % nbytes)
        buf = bytearray(1 << 20)
        got = 0
        while got < nbytes and (n := sock.recv_into(buf)):
            got += n


def relay_ceiling(rtt_ms: float, streams: int) -> float:
    """MB/s that one relay process moves with `streams` connections at `rtt_ms`."""
    server, port = _source_server()
    relay = start_relay(port, rtt_ms)
    try:
        threads = [threading.Thread(target=_pull, args=(relay.port, CEILING_BYTES // streams))
                   for _ in range(streams)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return CEILING_BYTES / (time.perf_counter() - started) / 1e6
    finally:
        relay.stop()
        server.close()
