"""The control channel: how a client tells a mount the order of an epoch, and asks for stats.

A mount listens on a Unix stream socket (served by controlserver.py) in a
directory private to the user who mounted: `$XDG_RUNTIME_DIR/objmount/` if set,
else `/tmp/objmount-<uid>/` (0700; the socket 0600). It publishes the socket's
path in its root xattr `user.objmount.mount` (JSON, key "control", with
"control_version"). A client starts from any path in the mount (`control_of`),
trusting only a mount that it or root made (mounts.py).

Protocol, version 1. One request per connection, one reply, then the mount
closes the connection:

    request = HEADER LF PAYLOAD
      HEADER   one JSON object in UTF-8, without LF, at most MAX_HEADER_BYTES:
               "v": 1 (required), "op": "hello" | "order" | "stats" (required),
               "bytes": length of PAYLOAD (default 0, at most MAX_PAYLOAD_BYTES),
               and the op's own fields (below); unknown fields are ignored
      PAYLOAD  exactly "bytes" bytes
    reply = one JSON object in UTF-8, then LF, at most MAX_REPLY_BYTES:
      {"v": 1, "ok": true, ...}  or  {"v": 1, "ok": false, "error": CODE, "message": TEXT}

    op "hello"  the mount's version and ops: {"version": 1, "ops": [...]}
    op "order"  PAYLOAD: the paths of one epoch in reading order, relative to the
                mount's root, separated by LF (bytes as the file names have them);
                fields: "client" (a name, at most MAX_CLIENT_CHARS: a new order of
                the same client replaces its previous one; default "pid:<pid>"),
                "until_exit" (true: drop the order when the client process exits).
                An empty PAYLOAD cancels the client's order.
                Reply: {"client": ..., "paths": N}
    op "stats"  the mount's counters: {"stats": {...}, "orders": [...], ...}

    error CODEs: "forbidden" (the peer is neither the mounting user nor root),
    "bad_request" (not the format above), "too_large" (a header or payload over
    its bound), "timeout" (the request was not complete within
    REQUEST_DEADLINE_S), "unsupported_version", "unknown_op", "busy" (too many
    requests at once), "unavailable" (the op needs what this mount lacks, e.g.
    orders without a block cache).

A new version of the protocol is a new "v"; a mount answers a version it does
not speak with "unsupported_version", naming the one it does. Fields may be
added to replies within a version.

This module is the protocol's constants and the blocking client (standard
library only: the training process and the CLI use it).
"""

import errno
import json
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from objmount.errors import ObjmountError
from objmount.mounts import MOUNT_XATTR, innermost_mount, objmount_mounts, root_xattr

VERSION = 1
OPS = ("hello", "order", "stats")
MAX_HEADER_BYTES = 64 << 10
# An epoch of 1M paths of ~60 bytes is ~60 MB: a quarter of this.
MAX_PAYLOAD_BYTES = 256 << 20
MAX_REPLY_BYTES = 1 << 20
MAX_CLIENT_CHARS = 256
# A request must be complete this long after the connection was accepted: 256 MiB over
# a Unix socket take well under a second; only a stalled or hostile client takes longer.
REQUEST_DEADLINE_S = 60.0
# How long a client waits for each step (connect, each send, the reply).
CLIENT_TIMEOUT_S = 30.0
SOCKET_SUBDIR = "objmount"
# sun_path is 108 bytes on Linux, with the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


class ControlError(ObjmountError):
    """A request failed: the mount's error `code` (see the module docstring), or one of the
    client's own: "not_objmount", "untrusted", "unreachable", "bad_reply"."""

    exit_code = 5

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def socket_dir(env: Mapping[str, str] | None = None, uid: int | None = None) -> Path:
    """Return where a mount's control socket lives: $XDG_RUNTIME_DIR/objmount if set,
    else /tmp/objmount-<uid> (made private by the server, private.private_dir)."""
    env = os.environ if env is None else env
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / SOCKET_SUBDIR
    return Path("/tmp") / f"objmount-{os.geteuid() if uid is None else uid}"


def header_line(op: str, payload_bytes: int = 0, **fields: object) -> bytes:
    """Return the request header for `op` (with its LF)."""
    header = {"v": VERSION, "op": op, "bytes": payload_bytes, **fields}
    return json.dumps(header, separators=(",", ":")).encode() + b"\n"


def reply_line(reply: Mapping[str, object]) -> bytes:
    """Return a reply as sent (a JSON object and LF), `v` included."""
    return json.dumps({"v": VERSION, **reply}, separators=(",", ":")).encode() + b"\n"


def error_reply(code: str, message: str) -> dict[str, object]:
    return {"ok": False, "error": code, "message": message}


def order_payload(paths: Iterable[bytes]) -> bytes:
    """Return the payload of an "order": relative paths, LF-separated. Raises ValueError
    for a path with an LF or an empty one (it could not be told apart)."""
    items = list(paths)
    for path in items:
        if not path or b"\n" in path:
            raise ValueError(f"path {path!r} cannot be part of an order")
    return b"\n".join(items)


@dataclass(frozen=True)
class Control:
    """A mount's control channel, as its root xattr names it."""

    mountpoint: str
    socket_path: str
    version: int


def control_of(path: Path, mountinfo: Path | None = None) -> tuple[Control, str]:
    """Return the control channel of the objmount mount `path` is in, and `path` relative to
    the mount's root. Blocks on /proc and one xattr (with a deadline).

    Raises ControlError: "not_objmount" (no objmount mount there), "untrusted" (another
    user made the mount: its xattr could name any socket), "unreachable" (no answer,
    or an objmount without a control channel).
    """
    mounts = objmount_mounts() if mountinfo is None else objmount_mounts(mountinfo)
    found = innermost_mount(path, mounts)
    if found is None:
        raise ControlError("not_objmount", f"{path} is not inside an objmount mount")
    mount, relative = found
    if not mount.trusted():
        raise ControlError("untrusted", f"the objmount mount on {mount.mountpoint} was made "
                           f"by uid {mount.user_id}: only your own mounts and root's are used")
    info = root_xattr(mount.mountpoint, MOUNT_XATTR)
    if info is None or not isinstance(info.get("control"), str):
        raise ControlError("unreachable", f"the objmount mount on {mount.mountpoint} names no "
                           "control channel (not answering, or an older objmount)")
    version = info.get("control_version", VERSION)
    return Control(mount.mountpoint, info["control"],
                   version if isinstance(version, int) else -1), relative


def request(socket_path: str, op: str, payload: bytes = b"",
            timeout_s: float = CLIENT_TIMEOUT_S, **fields: object) -> dict:
    """Send one request and return the mount's reply (ok). Blocks on the socket, each step
    bounded by `timeout_s`.

    Raises ControlError: the mount's error code, or "unreachable" (no socket, refused
    by the system, timed out), "forbidden" (the socket's permissions refuse us), or
    "bad_reply".
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(socket_path)
        except PermissionError:
            raise ControlError("forbidden", f"{socket_path}: permission denied (only the "
                               "user who mounted, or root, may use a mount's control "
                               "channel)") from None
        except OSError as exc:
            raise ControlError("unreachable", f"cannot reach the mount's control channel "
                               f"{socket_path}: {exc.strerror or exc}") from None
        try:
            sock.sendall(header_line(op, len(payload), **fields))
            if payload:
                sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the mount answered before reading everything: its reply says why
        except TimeoutError:
            raise ControlError("unreachable", f"the mount's control channel {socket_path} "
                               f"did not take the request within {timeout_s:g}s") from None
        reply = _read_reply(sock, socket_path, timeout_s)
    finally:
        sock.close()
    if reply.get("ok") is True:
        return reply
    code, message = reply.get("error"), reply.get("message")
    raise ControlError(code if isinstance(code, str) else "bad_reply",
                       f"the mount refused the request: {message}")


def _read_reply(sock: socket.socket, socket_path: str, timeout_s: float) -> dict:
    data = bytearray()
    try:
        while b"\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_REPLY_BYTES:
                raise ControlError("bad_reply", "the mount's reply is too long")
    except TimeoutError:
        raise ControlError("unreachable", f"the mount's control channel {socket_path} did "
                           f"not answer within {timeout_s:g}s") from None
    except OSError as exc:
        if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
            raise ControlError("unreachable", f"{socket_path}: {exc.strerror}") from None
    line, found, _ = bytes(data).partition(b"\n")
    try:
        reply = json.loads(line) if found else None
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise ControlError("bad_reply", f"the mount's control channel {socket_path} closed "
                           "without a valid reply")
    return reply
