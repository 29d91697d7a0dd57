"""A user-space TCP relay that adds network latency: `python -m bench.relay`.

This machine's kernel has no netem, so the benchmark puts its S3 server behind
this relay. Every chunk read from one side is written to the other side half
the round-trip time after it arrived, in each direction, so a request and its
answer cost one RTT more than without the relay. A new connection costs one
more RTT before its first byte reaches the server, like a TCP handshake.

It also counts what passes: connections, bytes each way, and the HTTP
requests in the client-to-server bytes (object GETs, listings, HEADs, others),
so a benchmark can count the requests of a tool that reports none (rclone) and
check that a tool's data path goes through the relay at all. With
--stats-on-stdin, each line "stats" on stdin is answered with the counters as
one JSON line on stdout, and EOF on stdin (the benchmark is gone) stops it.

Invariants: bytes keep their order in each direction (one FIFO per direction,
flushed only from its head); a direction holding more than `max_queued_bytes`
stops reading its source until it drains, so memory stays bounded whatever the
peers do; EOF and close travel with the same delay as the bytes before them.
Counting never changes the bytes, and a request it cannot frame (a header over
64 KiB, a chunked body) stops the counting on that connection only.
"""

import argparse
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from bench.procs import die_with_parent

# A long fat pipe: 64 MiB in flight per direction is 3 GB/s at 20 ms, far
# above what one Python process relays, so the queue never sets the pace.
MAX_QUEUED_BYTES = 64 << 20
# A request head longer than this is not HTTP as the mounts speak it: stop counting.
MAX_HEAD_BYTES = 64 << 10
COUNTERS = ("connections", "get", "list", "head", "other", "unframed", "bytes_up", "bytes_down")
# Query parameters of a listing, S3 (ListObjects v1/v2) and Swift (container GET).
LISTING_PARAMS = frozenset({"list-type", "prefix", "delimiter", "marker", "format", "limit",
                            "continuation-token", "start-after", "max-keys", "end_marker"})


def request_kind(method: str, target: str) -> str:
    """Which counter a request line goes to: get (an object), list, head or other."""
    if method == "HEAD":
        return "head"
    if method != "GET":
        return "other"
    params = {name for name, _ in parse_qsl(urlsplit(target).query, keep_blank_values=True)}
    return "list" if params & LISTING_PARAMS else "get"


class RequestCounter:
    """Frames the HTTP/1.1 requests of one connection's client-to-server bytes and counts them.

    Bodies are skipped by Content-Length; a chunked body or an endless head
    makes the connection `unframed` (counted once, then ignored).
    """

    def __init__(self, counters: dict[str, int]) -> None:
        self.counters = counters
        self.head = bytearray()
        self.body_left = 0
        self.lost = False

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.lost:
            if self.body_left:
                skipped = min(self.body_left, len(view))
                self.body_left -= skipped
                view = view[skipped:]
                continue
            searched_from = max(0, len(self.head) - 3)
            self.head += view
            view = memoryview(b"")
            end = self.head.find(b"\r\n\r\n", searched_from)
            if end < 0:
                if len(self.head) > MAX_HEAD_BYTES:
                    self._lose()
                return
            rest = bytes(self.head[end + 4:])
            self._count(bytes(self.head[:end]))
            self.head.clear()
            view = memoryview(rest)

    def _count(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            self._lose()
            return
        self.counters[request_kind(parts[0], parts[1])] += 1
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length" and value.strip().isdigit():
                self.body_left = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                self._lose()

    def _lose(self) -> None:
        self.lost = True
        self.counters["unframed"] += 1
        self.head.clear()


class DelayLine:
    """One direction of one connection: chunks leave `delay_s` after they arrived, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay_s: float, not_before: float,
                 on_finished: Callable[[], None]) -> None:
        self.loop = loop
        self.on_finished = on_finished
        self.delay_s = delay_s
        self.not_before = not_before
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.queued_bytes = 0
        self.source: asyncio.Transport | None = None
        self.sink: asyncio.Transport | None = None
        self.sink_paused = False
        self.source_paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.finished = False

    def push(self, data: bytes | None) -> None:
        """Queue `data` (None for EOF) to leave after the delay."""
        deadline = max(self.loop.time() + self.delay_s, self.not_before)
        self.queue.append((deadline, data))
        if data:
            self.queued_bytes += len(data)
        self._schedule()
        self._throttle()

    def attach_sink(self, sink: asyncio.Transport) -> None:
        self.sink = sink
        self._schedule()

    def _schedule(self) -> None:
        if self.timer is None and self.queue and self.sink is not None:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def _flush(self) -> None:
        self.timer = None
        if self.sink is None or self.sink.is_closing():
            self.queue.clear()
            self.finish()
            return
        now = self.loop.time()
        ready: list[bytes] = []
        eof = False
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if data is None:
                eof = True
                break
            ready.append(data)
            self.queued_bytes -= len(data)
        if ready:
            self.sink.write(b"".join(ready) if len(ready) > 1 else ready[0])
        if eof:
            if self.sink.can_write_eof():
                self.sink.write_eof()
            self.finish()
            return
        self._schedule()
        self._throttle()

    def finish(self) -> None:
        """Mark this direction done (EOF passed on, or its sink is gone)."""
        if not self.finished:
            self.finished = True
            self.on_finished()

    def _throttle(self) -> None:
        """Pause the source while this direction holds too much; resume once it drained."""
        if self.source is None or self.source.is_closing():
            return
        full = self.queued_bytes > MAX_QUEUED_BYTES or self.sink_paused
        if full and not self.source_paused:
            self.source.pause_reading()
            self.source_paused = True
        elif not full and self.source_paused:
            self.source.resume_reading()
            self.source_paused = False

    def set_sink_paused(self, paused: bool) -> None:
        self.sink_paused = paused
        self._throttle()


class Side(asyncio.Protocol):
    """One socket of a relayed connection: reads feed `outgoing`, writes come from `incoming`."""

    def __init__(self, outgoing: DelayLine, incoming: DelayLine, pair: "Pair",
                 on_data: Callable[[bytes], None]) -> None:
        self.outgoing = outgoing
        self.incoming = incoming
        self.pair = pair
        self.on_data = on_data
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.outgoing.source = transport
        self.incoming.attach_sink(transport)

    def data_received(self, data: bytes) -> None:
        self.on_data(data)
        self.outgoing.push(data)

    def eof_received(self) -> bool:
        self.outgoing.push(None)
        return True  # keep the write half open: the answer may still be on its way

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.outgoing.finished and not (self.outgoing.queue and
                                               self.outgoing.queue[-1][1] is None):
            self.outgoing.push(None)
        # Nothing more can be written here: what the other side still sends is dropped.
        self.incoming.queue.clear()
        self.incoming.finish()

    def pause_writing(self) -> None:
        self.incoming.set_sink_paused(True)

    def resume_writing(self) -> None:
        self.incoming.set_sink_paused(False)


@dataclass
class Pair:
    """Both sockets of one relayed connection; closes both once both directions are done."""

    client: Side | None = None
    server: Side | None = None

    def direction_finished(self) -> None:
        sides = [s for s in (self.client, self.server) if s is not None]
        if all(s.outgoing.finished and s.incoming.finished for s in sides):
            for side in sides:
                if side.transport is not None:
                    side.transport.close()


class Relay:
    """Accepts on `listen_port` and relays each connection to `upstream` with added latency."""

    def __init__(self, upstream_host: str, upstream_port: int, rtt_s: float,
                 connect_rtts: float = 1.0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay_s = rtt_s / 2
        self.connect_delay_s = rtt_s * connect_rtts
        self.connecting: set[asyncio.Task[None]] = set()
        self.counters = dict.fromkeys(COUNTERS, 0)

    def accept(self) -> Side:
        """Protocol factory for the listening socket: opens the upstream leg behind it."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        # The first request byte reaches the server one handshake RTT plus half an RTT late.
        pair = Pair()
        up = DelayLine(loop, self.delay_s, now + self.connect_delay_s + self.delay_s,
                       pair.direction_finished)
        down = DelayLine(loop, self.delay_s, now, pair.direction_finished)
        self.counters["connections"] += 1
        requests = RequestCounter(self.counters)

        def upward(data: bytes) -> None:
            self.counters["bytes_up"] += len(data)
            requests.feed(data)

        pair.client = Side(up, down, pair, upward)
        task = loop.create_task(self._connect_upstream(pair, up, down))
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)
        return pair.client

    async def _connect_upstream(self, pair: Pair, up: DelayLine, down: DelayLine) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: self._server_side(pair, up, down), *self.upstream)
        except OSError:
            if pair.client and pair.client.transport:
                pair.client.transport.abort()
            up.finish()
            down.finish()

    def _server_side(self, pair: Pair, up: DelayLine, down: DelayLine) -> Side:
        def downward(data: bytes) -> None:
            self.counters["bytes_down"] += len(data)

        pair.server = Side(down, up, pair, downward)
        return pair.server


class StatsOnStdin(asyncio.Protocol):
    """Answers each "stats" line on stdin with the counters as a JSON line; EOF stops the relay."""

    def __init__(self, relay: Relay, stop: asyncio.Event) -> None:
        self.relay = relay
        self.stop = stop
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            if line.strip() == b"stats":
                sys.stdout.write(json.dumps(self.relay.counters) + "\n")
                sys.stdout.flush()

    def eof_received(self) -> None:
        self.stop.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop.set()


async def serve(listen_port: int, relay: Relay, stats_on_stdin: bool = False) -> None:
    """Serve until SIGTERM/SIGINT (or EOF on stdin); print the bound port once listening."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(relay.accept, "127.0.0.1", listen_port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if stats_on_stdin:
        await loop.connect_read_pipe(lambda: StatsOnStdin(relay, stop), sys.stdin)
    async with server:
        await stop.wait()


class RelayProcess:
    """A relay running in its own process: its port, its counters, and how to stop it."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.port = port

    def counters(self) -> dict[str, int]:
        """The relay's counters so far (connections, requests by kind, bytes each way)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"stats\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"relay exited (status {self.proc.poll()})")
        return json.loads(line)

    def stop(self) -> None:
        """SIGTERM the relay, SIGKILL it if it is still there after 10 s; reap it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def start_relay(upstream_port: int, rtt_ms: float, connect_rtts: float = 1.0,
                log_path: str | None = None) -> RelayProcess:
    """Start the relay in its own process (its own GIL and core) and return it.

    Blocks until the relay listens. The relay gets SIGTERM if this process dies,
    and stops when its stdin (a pipe from this process) closes.
    """
    args = [sys.executable, "-m", "bench.relay", "--upstream", f"127.0.0.1:{upstream_port}",
            "--rtt-ms", str(rtt_ms), "--connect-rtts", str(connect_rtts), "--stats-on-stdin"]
    log = open(log_path or os.devnull, "wb")  # noqa: SIM115 - handed to the child
    with log:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                start_new_session=True, preexec_fn=die_with_parent)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip():
        proc.wait()
        raise RuntimeError(f"relay did not start (exit {proc.returncode})")
    return RelayProcess(proc, int(line))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relay",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", required=True, help="HOST:PORT to relay to (loopback)")
    parser.add_argument("--listen-port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="added round-trip time")
    parser.add_argument("--connect-rtts", type=float, default=1.0,
                        help="extra RTTs before a new connection's first byte (TCP handshake)")
    parser.add_argument("--stats-on-stdin", action="store_true",
                        help='answer each line "stats" on stdin with the counters (JSON); '
                        "stop at EOF on stdin")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        parser.error("the benchmark relays to 127.0.0.1 only")
    relay = Relay("127.0.0.1", int(port), args.rtt_ms / 1000, args.connect_rtts)
    asyncio.run(serve(args.listen_port, relay, args.stats_on_stdin))


if __name__ == "__main__":
    main()
