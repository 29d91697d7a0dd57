"""The suite's own port handout (tests/servers/net.py): servers started at once by
threads of one worker never count on one port."""

import socket
from concurrent.futures import ThreadPoolExecutor

from tests.servers.net import SERVER_PORTS, free_port, free_port_run, listening_socket


def test_ports_handed_out_at_once_by_many_threads_are_all_different() -> None:
    with ThreadPoolExecutor(16) as pool:
        ports = list(pool.map(lambda _: free_port(), range(400)))
    assert len(set(ports)) == len(ports)
    assert all(port in SERVER_PORTS for port in ports)


def test_a_port_let_go_for_a_while_is_not_handed_to_another_server() -> None:
    """A relay that stops listening (to refuse connections) and listens again later."""
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        pass
    assert port not in {free_port() for _ in range(200)}


def test_a_run_of_ports_is_consecutive_free_and_never_overlaps_a_handed_out_port() -> None:
    first = free_port_run(5)
    for port in range(first, first + 5):
        with socket.create_server(("127.0.0.1", port)):
            pass
    assert not set(range(first, first + 5)) & {free_port() for _ in range(200)}


def test_a_listening_socket_is_bound_on_a_port_never_handed_out_again() -> None:
    with ThreadPoolExecutor(8) as pool:
        sockets = list(pool.map(lambda _: listening_socket(), range(40)))
    try:
        ports = [sock.getsockname()[1] for sock in sockets]
        assert len(set(ports)) == len(ports) and all(p in SERVER_PORTS for p in ports)
        assert not set(ports) & {free_port() for _ in range(200)}
    finally:
        for sock in sockets:
            sock.close()
