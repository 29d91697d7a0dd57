"""The mount's side of the control channel: a Unix socket served on the trio thread.

control.py defines the protocol; this module accepts connections, checks who
is asking, reads one bounded request and hands it to the handler of its op.

Invariants:
- only a peer whose uid (SO_PEERCRED, as the kernel saw it at connect) is the
  mount's effective uid or root's is served; anyone else gets "forbidden"
  before a byte of theirs is read, and one log line per uid. The socket itself
  is 0600 in a 0700 directory of the user's (private.py), so this is the second
  lock, not the first;
- every request is bounded: its header by MAX_HEADER_BYTES, its payload by
  MAX_PAYLOAD_BYTES, all of it (and its handler) by REQUEST_DEADLINE_S from the
  accept; at most MAX_CONNECTIONS are served at once and MAX_PAYLOAD_IN_FLIGHT
  bytes of payloads received at once (beyond: "busy");
- a malformed, oversized, slow or unknown request gets an error reply and one log
  line per kind and uid; a handler's failure is an error reply too: nothing a
  client sends ends the mount. A client that disconnects mid-message is dropped;
- after an error reply the rest of the request is read and discarded (for at
  most DRAIN_S), so the client reads the reply instead of a reset connection;
- the socket file is removed when serving ends.
"""

import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import trio

from objmount import log as logs
from objmount.control import (
    MAX_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_REPLY_BYTES,
    MAX_SOCKET_PATH_BYTES,
    OPS,
    REQUEST_DEADLINE_S,
    VERSION,
    ControlError,
    error_reply,
    reply_line,
    socket_dir,
)
from objmount.errors import ConfigError
from objmount.private import private_dir

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16
# Two epochs of 1M paths being received at once, with room to spare.
MAX_PAYLOAD_IN_FLIGHT = 512 << 20
DRAIN_S = 2.0
RECEIVE_BYTES = 1 << 20
_PEERCRED = struct.Struct("3i")


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a connection, as the kernel says (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True)
class Request:
    """One request: its op, its whole header, its payload and who sent it."""

    op: str
    header: Mapping[str, object]
    payload: bytes
    peer: Peer


# A handler returns the reply's fields ("ok" is added); it raises ControlError to refuse.
Handler = Callable[[Request], Awaitable[dict]]


def control_socket_path(env: Mapping[str, str] | None = None) -> Path:
    """Return the path of this process's control socket, its directory made private to the
    user (created 0700 if missing). Raises ConfigError. Blocks (a few stat calls)."""
    directory = private_dir(socket_dir(env), "control socket directory",
                            "set XDG_RUNTIME_DIR to a directory of yours")
    path = directory / f"mount-{os.getpid()}.sock"
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise ConfigError(f"control socket path {path} is longer than a Unix socket allows "
                          f"({MAX_SOCKET_PATH_BYTES} bytes): set XDG_RUNTIME_DIR to a "
                          "shorter directory")
    return path


class _Refused(Exception):
    """A request answered with an error: `code`, `message` (see control.py)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Dropped(Exception):
    """The client went away: there is nobody to answer."""


class ControlServer:
    """Serves `handlers` (op -> Handler) on the Unix socket `socket_path`."""

    def __init__(self, socket_path: Path, handlers: Mapping[str, Handler],
                 owner_uid: int | None = None) -> None:
        self.socket_path = socket_path
        self.handlers = {"hello": self._hello, **handlers}
        self.owner_uid = os.geteuid() if owner_uid is None else owner_uid
        self.requests = 0
        self.refused = 0
        self._connections = 0
        self._payload_in_flight = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; the socket file is removed on the way out."""
        path = str(self.socket_path)
        listening = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a stale socket of a crashed process with our pid
            await listening.bind(path)
            os.chmod(path, 0o600)
            listening.listen(MAX_CONNECTIONS)
        except BaseException:
            listening.close()
            raise
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._connection,
                                    [trio.SocketListener(listening)])
                log.info("control channel on %s", path)
                task_status.started()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    async def _hello(self, request: Request) -> dict:
        return {"version": VERSION, "ops": sorted(self.handlers)}

    async def _connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                peer = Peer(*_PEERCRED.unpack(stream.socket.getsockopt(
                    socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)))
            except OSError:
                return
            try:
                reply = await self._answer(stream, peer)
            except _Dropped as exc:
                log.debug("control channel: pid %d left mid-request (%s)", peer.pid, exc)
                return
            line = reply_line(reply)
            if len(line) > MAX_REPLY_BYTES:
                line = reply_line(error_reply("internal", "the reply was too long"))
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(line)
                if not reply.get("ok"):
                    await stream.send_eof()
                    await _drain(stream)

    async def _answer(self, stream: trio.SocketStream, peer: Peer) -> dict:
        """Return the reply to the connection's request (never raises but _Dropped)."""
        if peer.uid not in (self.owner_uid, 0):
            self.refused += 1
            logs.once(log, logging.WARNING, f"control-forbidden:{peer.uid}",
                      "control channel: refused pid %d of uid %d (only uid %d and root may "
                      "use it)", peer.pid, peer.uid, self.owner_uid)
            return error_reply("forbidden", f"only uid {self.owner_uid} and root may use "
                               "this mount's control channel")
        if self._connections >= MAX_CONNECTIONS:
            return self._refuse(peer, _Refused("busy", f"more than {MAX_CONNECTIONS} requests "
                                               "at once; try again"))
        self._connections += 1
        try:
            with trio.move_on_after(REQUEST_DEADLINE_S):
                return await self._read_and_handle(stream, peer)
            return self._refuse(peer, _Refused(
                "timeout", f"the request was not complete within {REQUEST_DEADLINE_S:g}s"))
        except _Refused as exc:
            return self._refuse(peer, exc)
        finally:
            self._connections -= 1

    def _refuse(self, peer: Peer, exc: _Refused) -> dict:
        self.refused += 1
        logs.once(log, logging.WARNING, f"control-{exc.code}:{peer.uid}",
                  "control channel: request of pid %d answered %r: %s", peer.pid, exc.code,
                  exc.message)
        return error_reply(exc.code, exc.message)

    async def _read_and_handle(self, stream: trio.SocketStream, peer: Peer) -> dict:
        buffer = bytearray()
        while (end := buffer.find(b"\n")) < 0:
            if len(buffer) > MAX_HEADER_BYTES:
                raise _Refused("too_large", f"no header within {MAX_HEADER_BYTES} bytes")
            buffer += await _receive(stream, RECEIVE_BYTES, "before the header's end")
        if end > MAX_HEADER_BYTES:
            raise _Refused("too_large", f"a header of {end} bytes (at most {MAX_HEADER_BYTES})")
        header = _parse_header(bytes(buffer[:end]))
        op, size = header["op"], header.get("bytes", 0)
        if op not in self.handlers:
            raise _Refused("unknown_op", f"unknown op {op!r} (this mount knows: "
                           f"{', '.join(sorted(self.handlers))})")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _Refused("bad_request", "'bytes' must be a non-negative integer")
        if size > MAX_PAYLOAD_BYTES:
            raise _Refused("too_large", f"a payload of {size} bytes (at most "
                           f"{MAX_PAYLOAD_BYTES})")
        if self._payload_in_flight + size > MAX_PAYLOAD_IN_FLIGHT:
            raise _Refused("busy", "too many large requests at once; try again")
        self._payload_in_flight += size
        try:
            payload = await _read_payload(stream, buffer[end + 1:], size)
            self.requests += 1
            log.debug("control channel: %s from pid %d, %d bytes", op, peer.pid, size)
            return await self._handle(Request(op, header, payload, peer))
        finally:
            self._payload_in_flight -= size

    async def _handle(self, request: Request) -> dict:
        try:
            reply = await self.handlers[request.op](request)
        except ControlError as exc:
            raise _Refused(exc.code, str(exc)) from None
        except Exception as exc:  # a handler's bug must not end the mount
            logs.once(log, logging.ERROR, f"control-bug:{type(exc).__name__}",
                      "control channel: internal error in %r: %r", request.op, exc,
                      exc_info=True)
            raise _Refused("internal", f"internal error ({type(exc).__name__})") from None
        return {"ok": True, **reply}


def _parse_header(line: bytes) -> dict:
    try:
        header = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _Refused("bad_request", "the header is not a JSON object in UTF-8") from None
    if not isinstance(header, dict):
        raise _Refused("bad_request", "the header is not a JSON object")
    version = header.get("v")
    if version != VERSION:
        raise _Refused("unsupported_version", f"protocol version {version!r}: this mount "
                       f"speaks version {VERSION}")
    if not isinstance(header.get("op"), str):
        raise _Refused("bad_request", f"'op' must be one of {', '.join(OPS)}")
    return header


async def _receive(stream: trio.SocketStream, max_bytes: int, where: str) -> bytes:
    try:
        chunk = await stream.receive_some(max_bytes)
    except trio.BrokenResourceError as exc:
        raise _Dropped(f"connection broken {where}") from exc
    if not chunk:
        raise _Dropped(f"end of stream {where}")
    return chunk


async def _read_payload(stream: trio.SocketStream, start: bytearray, size: int) -> bytes:
    """Return exactly `size` bytes: `start` (already received), then the rest. Raises
    _Refused if more was sent than announced before the end of it."""
    if len(start) > size:
        raise _Refused("bad_request", f"more than the announced {size} bytes")
    parts, received = [bytes(start)], len(start)
    while received < size:
        chunk = await _receive(stream, min(RECEIVE_BYTES, size - received), "in the payload")
        parts.append(chunk)
        received += len(chunk)
    return b"".join(parts)


async def _drain(stream: trio.SocketStream) -> None:
    """Read and discard what the client still sends, for at most DRAIN_S."""
    with trio.move_on_after(DRAIN_S), contextlib.suppress(trio.BrokenResourceError):
        while await stream.receive_some(RECEIVE_BYTES):
            pass
