"""Servers a test session will need, started in threads at its first test.

Keystone + Swift take 20-40 s to start here and the Docker tier's images minutes, most
of it waiting on other processes, Debian or PyPI. Started ahead, they come up while the
first tests run; the fixture that needs one waits only for what is left.

They start one after the other, in the order asked, in one thread: the tests running
meanwhile keep most of the machine (two cores), and the first server asked for is the
first up. Invariants: each server is started at most once per session, and stopped by
`stop()` whether or not a test used it; the thread that started them lives until then
(the Swift servers die with the thread that started them: PR_SET_PDEATHSIG).
"""

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar


class Server(Protocol):
    def start(self) -> object: ...
    def stop(self) -> None: ...


S = TypeVar("S", bound=Server)


class Ahead:
    """Servers by name, started in turn by one thread that lives until `stop()`."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ahead")
        self._servers: dict[str, tuple[Server, Future | None]] = {}

    def start(self, name: str, server: Server) -> None:
        """Run `server.start()` in the thread, after the starts asked for before."""
        self._servers[name] = (server, self._pool.submit(server.start))

    def get(self, name: str, make: Callable[[], S]) -> S:
        """The server started as `name`, once its start has returned (what it raised is
        raised here); if none was, one made by `make` and started now, in this thread."""
        if name not in self._servers:
            server = make()
            self._servers[name] = (server, None)
            server.start()
            return server
        server, started = self._servers[name]
        if started is not None:
            started.result()
        return server  # type: ignore[return-value]

    def stop(self) -> None:
        """Stop every server, interrupting the starts still under way, and wait for them."""
        for server, started in self._servers.values():
            if started is not None and not started.done():
                server.stop()  # a start under way then fails soon (its processes are gone)
        for server, started in self._servers.values():
            if started is not None:
                started.exception()  # waits; a failed start was reported by its fixture
            server.stop()
        self._pool.shutdown()
