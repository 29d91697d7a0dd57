"""The control channel over a real Unix socket: the protocol, its bounds, who may use it.

The server runs on trio as in a mount; clients are control.request or raw bytes on a
blocking socket, in threads. No FUSE: mounts use the same ControlServer.
"""

import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from objmount import control, controlserver
from objmount.control import ControlError
from objmount.controlserver import ControlServer, Request
from tests.control_raw import raw_request
from tests.crafted_cache import AS_NOBODY, SYSTEM_PYTHON
from tests.unit.trio_test import trio_test

REPO = Path(__file__).parents[2]


@pytest.fixture(autouse=True)
def _fresh_log_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(controlserver.logs, "_logged_once", set())


class Orders:
    """An "order" handler that keeps what it was given."""

    def __init__(self) -> None:
        self.received: list[Request] = []

    async def __call__(self, request: Request) -> dict:
        self.received.append(request)
        return {"client": request.header.get("client"), "paths": request.payload.count(b"\n")
                + bool(request.payload)}


@asynccontextmanager
async def serving(socket_path: Path, handlers: dict | None = None,
                  **kwargs: object) -> AsyncIterator[ControlServer]:
    server = ControlServer(socket_path, handlers or {}, **kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


async def in_thread(fn: Callable, *args: object, **kwargs: object) -> object:
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


@trio_test
async def test_hello_names_the_version_and_the_ops(tmp_path: Path) -> None:
    async with serving(tmp_path / "c.sock", {"order": Orders()}):
        reply = await in_thread(control.request, str(tmp_path / "c.sock"), "hello")
    assert reply == {"v": 1, "ok": True, "version": 1, "ops": ["hello", "order"]}


@trio_test
async def test_an_order_reaches_its_handler_with_its_payload_and_peer(tmp_path: Path) -> None:
    orders = Orders()
    paths = [f"class_{i % 10}/img_{i:07d}.jpg".encode() for i in range(1_000_000)]
    payload = control.order_payload(paths)
    async with serving(tmp_path / "c.sock", {"order": orders}):
        reply = await in_thread(control.request, str(tmp_path / "c.sock"), "order", payload,
                                client="rank0")
    assert reply == {"v": 1, "ok": True, "client": "rank0", "paths": 1_000_000}
    [request] = orders.received
    assert request.payload == payload and len(payload) > 20 << 20
    assert (request.peer.pid, request.peer.uid) == (os.getpid(), os.geteuid())


@trio_test
async def test_the_socket_is_private_and_removed_when_serving_ends(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    path.write_text("stale")  # a crashed process's socket of the same name
    async with serving(path):
        assert path.is_socket() and path.stat().st_mode & 0o777 == 0o600
    assert not path.exists()


@pytest.mark.parametrize("data, code", [
    (b"not json\n", "bad_request"),
    (b"[1, 2]\n", "bad_request"),
    (b'{"op": "hello"}\n', "unsupported_version"),
    (b'{"v": 2, "op": "hello"}\n', "unsupported_version"),
    (b'{"v": 1}\n', "bad_request"),
    (b'{"v": 1, "op": "rm -rf"}\n', "unknown_op"),
    (b'{"v": 1, "op": "order", "bytes": -1}\n', "bad_request"),
    (b'{"v": 1, "op": "order", "bytes": "12"}\n', "bad_request"),
    (b'{"v": 1, "op": "order", "bytes": 268435457}\n', "too_large"),
    (b'{"v": 1, "op": "order", "bytes": 1}\nabc', "bad_request"),
    (b"\xff\xfe\n", "bad_request"),
    (b"x" * (70 << 10), "too_large"),
    (b'{"v": 1, "op": "order", "pad": "' + b"x" * (70 << 10) + b'"}\n', "too_large"),
])
@trio_test
async def test_a_malformed_or_oversized_request_gets_an_error_reply_and_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, data: bytes, code: str
) -> None:
    caplog.set_level(logging.WARNING, "objmount.controlserver")
    async with serving(tmp_path / "c.sock", {"order": Orders()}) as server:
        reply = await in_thread(raw_request, tmp_path / "c.sock", data)
        assert reply is not None and reply["ok"] is False and reply["error"] == code
        assert server.refused == 1
        # The server goes on: the next request is answered.
        assert (await in_thread(control.request, str(tmp_path / "c.sock"), "hello"))["ok"]
    [line] = [r.getMessage() for r in caplog.records]
    assert f"answered {code!r}" in line and f"pid {os.getpid()}" in line


@trio_test
async def test_the_client_raises_the_mounts_error_code(tmp_path: Path) -> None:
    async def refuses(request: Request) -> dict:
        raise ControlError("unavailable", "no block cache here")

    async with serving(tmp_path / "c.sock", {"order": refuses}):
        with pytest.raises(ControlError) as raised:
            await in_thread(control.request, str(tmp_path / "c.sock"), "order", b"a")
    assert raised.value.code == "unavailable"
    assert "no block cache here" in str(raised.value)


@trio_test
async def test_a_handler_that_fails_is_an_internal_error_not_the_end_of_the_mount(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: Request) -> dict:
        raise KeyError("bug")

    async with serving(tmp_path / "c.sock", {"order": broken}):
        with pytest.raises(ControlError) as raised:
            await in_thread(control.request, str(tmp_path / "c.sock"), "order", b"a")
        assert raised.value.code == "internal"
        assert (await in_thread(control.request, str(tmp_path / "c.sock"), "hello"))["ok"]
    assert any("internal error" in r.getMessage() for r in caplog.records)


@trio_test
async def test_a_declared_payload_too_large_is_refused_while_the_client_sends_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply arrives although the mount never reads the payload (it is drained)."""
    monkeypatch.setattr(controlserver, "MAX_PAYLOAD_BYTES", 1 << 20)
    async with serving(tmp_path / "c.sock", {"order": Orders()}):
        with pytest.raises(ControlError) as raised:
            await in_thread(control.request, str(tmp_path / "c.sock"), "order",
                            b"p\n" * (4 << 20))
    assert raised.value.code == "too_large"


@trio_test
async def test_a_request_not_complete_within_the_deadline_is_answered_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(controlserver, "REQUEST_DEADLINE_S", 0.2)
    async with serving(tmp_path / "c.sock", {"order": Orders()}):
        reply = await in_thread(raw_request, tmp_path / "c.sock", b'{"v": 1, "op": "ord')
    assert reply is not None and reply["error"] == "timeout"


@trio_test
async def test_a_client_that_leaves_mid_message_is_dropped(tmp_path: Path) -> None:
    orders = Orders()
    async with serving(tmp_path / "c.sock", {"order": orders}) as server:
        await in_thread(raw_request, tmp_path / "c.sock",
                        control.header_line("order", 1000) + b"only part", close=True)
        await in_thread(raw_request, tmp_path / "c.sock", b'{"v": 1, "op"', close=True)
        assert (await in_thread(control.request, str(tmp_path / "c.sock"), "hello"))["ok"]
        assert orders.received == [] and server.refused == 0


@trio_test
async def test_more_requests_at_once_than_allowed_are_answered_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(controlserver, "MAX_CONNECTIONS", 2)
    path = str(tmp_path / "c.sock")
    async with serving(tmp_path / "c.sock", {"order": Orders()}):
        stalled = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
        try:
            for sock in stalled:
                sock.connect(path)
                sock.sendall(b'{"v"')
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ControlError) as raised:
                await in_thread(control.request, path, "hello")
            assert raised.value.code == "busy"
            for sock in stalled:  # their replies come once they are no longer counted
                sock.sendall(b': 1, "op": "hello"}\n')
                assert json.loads(await in_thread(sock.recv, 65536))["ok"]
        finally:
            for sock in stalled:
                sock.close()
        assert (await in_thread(control.request, path, "hello"))["ok"]


@pytest.fixture
def open_area() -> Iterator[Path]:
    """A fresh directory in /tmp that every user may enter and write."""
    area = Path(tempfile.mkdtemp(prefix="objmount-control-", dir="/tmp"))
    area.chmod(0o777)
    yield area
    shutil.rmtree(area, ignore_errors=True)


def test_a_peer_of_another_user_is_refused_before_anything_is_read(open_area: Path) -> None:
    """The socket is made reachable on purpose (a 0777 directory, a 0666 socket): the peer
    credentials still refuse uid nobody. Spoken by the system Python, as that user."""
    path = open_area / "c.sock"
    client = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from objmount import control\n"
              "try:\n"
              f"    control.request({str(path)!r}, 'hello')\n"
              "except control.ControlError as exc:\n"
              "    print(exc.code, exc)\n")

    async def main() -> subprocess.CompletedProcess[str]:
        async with serving(path, owner_uid=os.geteuid()):
            path.chmod(0o666)
            return await trio.to_thread.run_sync(lambda: subprocess.run(
                [*AS_NOBODY, SYSTEM_PYTHON, "-I", "-c", client], capture_output=True,
                text=True, timeout=60))

    result = trio.run(main)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("forbidden ")
    assert f"only uid {os.geteuid()} and root" in result.stdout


def test_the_socket_directory_is_the_users_runtime_dir_or_a_private_one_in_tmp(
    tmp_path: Path,
) -> None:
    assert control.socket_dir({"XDG_RUNTIME_DIR": "/run/user/1000"}) == Path(
        "/run/user/1000/objmount")
    assert control.socket_dir({}, uid=1000) == Path("/tmp/objmount-1000")
    path = controlserver.control_socket_path({"XDG_RUNTIME_DIR": str(tmp_path)})
    assert path.parent == tmp_path / "objmount" and path.name == f"mount-{os.getpid()}.sock"
    assert path.parent.stat().st_mode & 0o777 == 0o700
