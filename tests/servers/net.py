"""Small helpers for test servers: free loopback ports and readiness polling."""

import os
import random
import socket
import threading
import time
from collections.abc import Callable

# Ports handed to servers the tests start: below Linux's ephemeral range (32768-60999 by
# default), from which every outgoing connection takes its local port. A port taken
# from that range (bind to port 0) can be taken again by a connection between this
# check and the server's own bind: a server then fails to start ("could not bind").
ALL_SERVER_PORTS = range(20000, 32000)


def worker_ports(ports: range, env: dict[str, str]) -> range:
    """The slice of `ports` of this pytest-xdist worker (`env`'s PYTEST_XDIST_WORKER gwN
    of PYTEST_XDIST_WORKER_COUNT), all of them outside xdist: two workers never pick
    the same port, so one cannot take another's between its check and its bind."""
    worker, count = env.get("PYTEST_XDIST_WORKER"), env.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count:
        return ports
    size = len(ports) // int(count)
    first = ports.start + int(worker.removeprefix("gw")) % int(count) * size
    return range(first, first + size)


SERVER_PORTS = worker_ports(ALL_SERVER_PORTS, dict(os.environ))


# Ports this process has handed out: never handed out twice, so two threads (or a relay
# that stopped listening for a while, and means to listen again) cannot both count on one.
_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now, outside the ephemeral range,
    and that this process has not handed out before."""
    return free_port_run(1)


def free_port_run(length: int) -> int:
    """First port of `length` consecutive ports as `free_port` returns them."""
    with _HANDED_OUT_LOCK:
        for _ in range(200):
            first = random.randrange(SERVER_PORTS.start, SERVER_PORTS.stop - length + 1)
            run = range(first, first + length)
            if not _HANDED_OUT.isdisjoint(run) or not all(map(_bindable, run)):
                continue
            _HANDED_OUT.update(run)
            return first
    raise RuntimeError(f"no {length} free consecutive ports in "
                       f"{SERVER_PORTS.start}-{SERVER_PORTS.stop - 1}")


def listening_socket() -> socket.socket:
    """A TCP socket listening on 127.0.0.1, on a port `free_port` would hand out, bound at
    once. For servers in this process: a port checked free and bound later can be held
    in between by a child another thread forks (it has a copy of the checking socket
    until it execs), and the bind then fails with EADDRINUSE."""
    with _HANDED_OUT_LOCK:
        for _ in range(200):
            port = random.choice(SERVER_PORTS)
            if port in _HANDED_OUT:
                continue
            try:
                sock = socket.create_server(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return sock
    raise RuntimeError(f"no free port in {SERVER_PORTS.start}-{SERVER_PORTS.stop - 1}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(ready: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `ready` every 0.1 s until it returns True; raise TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout_s:.0f}s")
        time.sleep(0.1)


def port_open(port: int) -> bool:
    """Return True if something accepts TCP connections on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
