"""A TCP relay in front of a test server that holds back chosen requests (fault injection).

Each connection's first request line is inspected; if it contains `marker`,
the request is forwarded only after `delay_s`. moto answers with
`Connection: close`, so every request arrives on a connection of its own.
"""

import socket
import threading
import time

from tests.servers.net import free_port


class SlowProxy:
    """Relays 127.0.0.1:`port` to `upstream_port`, delaying requests whose line has `marker`."""

    def __init__(self, upstream_port: int, marker: bytes, delay_s: float) -> None:
        self.upstream_port = upstream_port
        self.marker = marker
        self.delay_s = delay_s
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stopped = threading.Event()

    def start(self) -> "SlowProxy":
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            head = client.recv(65536)
            if self.marker in head.split(b"\r\n", 1)[0]:
                time.sleep(self.delay_s)
            upstream.sendall(head)
            back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
            back.start()
            _pump(client, upstream)
            back.join()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass
