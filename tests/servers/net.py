"""Small helpers for test servers: free loopback ports and readiness polling."""

import os
import random
import socket
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


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now, outside the ephemeral range."""
    for _ in range(200):
        port = random.choice(SERVER_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {SERVER_PORTS.start}-{SERVER_PORTS.stop - 1}")


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
