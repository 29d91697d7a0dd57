"""Raw bytes on a mount's control socket (control.py's protocol), for tests of its bounds."""

import json
import socket
from pathlib import Path


def raw_request(socket_path: str | Path, data: bytes, *, close: bool = False,
                timeout_s: float = 60) -> dict | None:
    """Send `data` and return the reply's JSON (None if the mount closed without one); with
    `close`, leave at once without waiting for a reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(socket_path))
        sock.sendall(data)
        if close:
            return None
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return json.loads(reply) if reply else None
