"""A user-space TCP relay that adds network latency: `python -m bench.relay`.

This machine's kernel has no netem, so the benchmark puts its S3 server behind
this relay. Every chunk read from one side is written to the other side half
the round-trip time after it arrived, in each direction, so a request and its
answer cost one RTT more than without the relay. A new connection costs one
more RTT before its first byte reaches the server, like a TCP handshake.

Invariants: bytes keep their order in each direction (one FIFO per direction,
flushed only from its head); a direction holding more than `max_queued_bytes`
stops reading its source until it drains, so memory stays bounded whatever the
peers do; EOF and close travel with the same delay as the bytes before them.
"""

import argparse
import asyncio
import collections
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

# A long fat pipe: 64 MiB in flight per direction is 3 GB/s at 20 ms, far
# above what one Python process relays, so the queue never sets the pace.
MAX_QUEUED_BYTES = 64 << 20
PR_SET_PDEATHSIG = 1


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

    def __init__(self, outgoing: DelayLine, incoming: DelayLine, pair: "Pair") -> None:
        self.outgoing = outgoing
        self.incoming = incoming
        self.pair = pair
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.outgoing.source = transport
        self.incoming.attach_sink(transport)

    def data_received(self, data: bytes) -> None:
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

    def accept(self) -> Side:
        """Protocol factory for the listening socket: opens the upstream leg behind it."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        # The first request byte reaches the server one handshake RTT plus half an RTT late.
        pair = Pair()
        up = DelayLine(loop, self.delay_s, now + self.connect_delay_s + self.delay_s,
                       pair.direction_finished)
        down = DelayLine(loop, self.delay_s, now, pair.direction_finished)
        pair.client = Side(up, down, pair)
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
        pair.server = Side(down, up, pair)
        return pair.server


async def serve(listen_port: int, relay: Relay, ready_fd: int | None) -> None:
    """Serve until SIGTERM/SIGINT; write the bound port to `ready_fd` (or stdout) once listening."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(relay.accept, "127.0.0.1", listen_port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    message = f"{port}\n".encode()
    if ready_fd is None:
        sys.stdout.write(message.decode())
        sys.stdout.flush()
    else:
        os.write(ready_fd, message)
        os.close(ready_fd)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def start_relay(upstream_port: int, rtt_ms: float, connect_rtts: float = 1.0,
                log_path: str | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """Start the relay in its own process (its own GIL and core); return it and its port.

    Blocks until the relay listens. The relay gets SIGTERM if this process dies.
    """
    args = [sys.executable, "-m", "bench.relay", "--upstream", f"127.0.0.1:{upstream_port}",
            "--rtt-ms", str(rtt_ms), "--connect-rtts", str(connect_rtts)]
    log = open(log_path or os.devnull, "wb")  # noqa: SIM115 - handed to the child
    with log:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log,
                                start_new_session=True, preexec_fn=die_with_parent)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip():
        proc.wait()
        raise RuntimeError(f"relay did not start (exit {proc.returncode})")
    return proc, int(line)


def die_with_parent() -> None:
    """In a child, before exec: ask Linux to SIGTERM it when the parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relay",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", required=True, help="HOST:PORT to relay to (loopback)")
    parser.add_argument("--listen-port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="added round-trip time")
    parser.add_argument("--connect-rtts", type=float, default=1.0,
                        help="extra RTTs before a new connection's first byte (TCP handshake)")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        parser.error("the benchmark relays to 127.0.0.1 only")
    relay = Relay("127.0.0.1", int(port), args.rtt_ms / 1000, args.connect_rtts)
    asyncio.run(serve(args.listen_port, relay, None))


if __name__ == "__main__":
    main()
