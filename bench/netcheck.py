"""Checks of the injected network and the stores' own ceilings, measured with curl.

`request_latency` times the same small GET with curl, direct and through the
relay, on a new and on a kept-alive connection. `store_ceiling` measures what
the store itself serves to curl (small GETs per second with 8 in parallel, MB/s
of one large GET), direct and through the relay: a mount's figure near it
measures the store, not the mount. `relay_ceiling` measures the relay alone: a
plain TCP source in this process, streamed through a second relay with the same
RTT, so the figure is the relay's and not the store's.

curl reads URLs and headers (signed URLs, Swift tokens) from a private config
file, never from its argv.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.relay import start_relay
from bench.servers import Objects

CURL_PARALLEL = 8

CEILING_BYTES = 512 << 20
_CHUNK = memoryview(bytes(1 << 20))


@dataclass
class Latency:
    """Seconds of a GET on a new connection and on a reused one, direct and through the relay."""

    direct_new_s: float
    direct_reused_s: float
    relay_new_s: float
    relay_reused_s: float


Target = tuple[str, list[str]]  # a URL and the headers to send with it


def _curl(targets: list[Target], *args: str) -> list[str]:
    """Run curl over `targets` (each to /dev/null, the first one's headers) with `args`.

    Returns the words curl printed (its -w output).

    The URLs and headers go through a 0600 config file in a private directory.
    Raises CalledProcessError if a transfer fails.
    """
    with tempfile.TemporaryDirectory(prefix="objmount-curl-") as tmp:
        config = Path(tmp) / "curl.conf"
        # One group of URLs (curl's --next would reset -w and the other options):
        # the headers of the first target go with every URL, and all targets of
        # one call are on one store with one token.
        lines = [f'header = "{h}"' for h in targets[0][1]]
        for url, _ in targets:
            lines += [f'url = "{url}"', 'output = "/dev/null"']
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        out = subprocess.run(["curl", "-s", "-f", *args, "-K", str(config)],
                             capture_output=True, text=True, check=True)
    return out.stdout.split()


def _curl_twice(target: Target) -> tuple[float, float]:
    """GET `target` twice on one connection; return both total times."""
    out = _curl([target, target], "-w", "%{time_total}\\n")
    return float(out[0]), float(out[1])


def request_latency(direct: Target, relay: Target, tries: int = 5) -> Latency | None:
    """Median curl times for `tries` runs; None when curl is not installed."""
    if shutil.which("curl") is None:
        return None
    direct_times = sorted(_curl_twice(direct) for _ in range(tries))
    relay_times = sorted(_curl_twice(relay) for _ in range(tries))

    def median(rows: list[tuple[float, float]], i: int) -> float:
        return sorted(r[i] for r in rows)[len(rows) // 2]

    return Latency(median(direct_times, 0), median(direct_times, 1), median(relay_times, 0),
                   median(relay_times, 1))


def small_gets_per_s(targets: list[Target]) -> float:
    """GETs per second curl makes of `targets`, CURL_PARALLEL at once (kept-alive connections)."""
    started = time.perf_counter()
    _curl(targets, "--parallel", "--parallel-max", str(CURL_PARALLEL), "-w", "%{http_code}\\n")
    return len(targets) / (time.perf_counter() - started)


def large_get_mb_per_s(target: Target) -> float:
    """MB/s of one GET of a large object by curl (its own average download speed)."""
    return float(_curl([target], "-w", "%{speed_download}\\n")[0]) / 1e6


def store_ceiling(direct: Objects, relayed: Objects, small_keys: list[str],
                  large_key: str | None) -> str:
    """One line: the store's small GETs/s and large-GET MB/s to curl, direct and via the relay."""
    if shutil.which("curl") is None:
        return "curl not installed"
    parts = []
    for label, objects in (("direct", direct), ("through the relay", relayed)):
        rate = small_gets_per_s([objects.curl_target(k) for k in small_keys])
        part = f"{rate:,.0f} small GETs/s ({CURL_PARALLEL} in parallel)"
        if large_key:
            part += f", {large_get_mb_per_s(objects.curl_target(large_key)):,.0f} MB/s of one GET"
        parts.append(f"{label}: {part}")
    size = f"{len(small_keys)} GETs of 60-120 KiB" + (f"; large: {large_key}" if large_key else "")
    return "; ".join(parts) + f" ({size})"


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
        # shutdown wakes the thread blocked in accept(); close alone would not.
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        server.close()


def site_facts(label: str, store_objects: tuple[Objects, Objects], dataset, rtt_ms: float,
               ceiling_gets: int = 400) -> dict[str, str]:
    """Report lines for one store behind its relay: the relay's added RTT, the store's ceiling.

    `store_objects` is (direct, through the relay); `dataset` a bench.dataset.Dataset.
    """
    direct, relayed = store_objects
    facts: dict[str, str] = {}
    small = dataset.smalls[0].key
    latency = request_latency(direct.curl_target(small), relayed.curl_target(small))
    if latency:
        facts[f"{label} relay check (curl, median of 5)"] = (
            f"small GET on a kept-alive connection {latency.direct_reused_s * 1e3:.1f} ms direct, "
            f"{latency.relay_reused_s * 1e3:.1f} ms through the relay "
            f"(+{(latency.relay_reused_s - latency.direct_reused_s) * 1e3:.1f} ms, RTT {rtt_ms:g}"
            f" ms); on a new connection +"
            f"{(latency.relay_new_s - latency.direct_new_s) * 1e3:.1f} ms (handshake + request)")
    keys = [e.key for e in dataset.smalls[:ceiling_gets]]
    large = dataset.shards[0].key if dataset.shards else None
    facts[f"{label} store ceiling (curl)"] = store_ceiling(direct, relayed, keys, large)
    return facts


def relay_facts(rtt_ms: float) -> dict[str, str]:
    """The relay's own ceiling, as one report line."""
    ceilings = [f"{relay_ceiling(rtt_ms, n):,.0f} MB/s with {n} connection(s)" for n in (1, 4)]
    return {"relay ceiling (relay alone, RTT applied)": ", ".join(ceilings)}
