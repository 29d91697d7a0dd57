"""A static HTTP server on 127.0.0.1 for download tests: byte ranges, and cut-short responses.

It answers `Range: bytes=N-` with 206 and the rest of the file, records the
Range and Authorization headers of every GET, ignores query strings (so a
presigned URL reads like a plain one), and can end its next response after a
given number of bytes (the Content-Length still announcing the whole body), as
a dropped connection would.
"""

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit


class FileServer:
    """Serves the files of `root` on a free loopback port from a background thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ranges: list[str | None] = []
        self.authorizations: list[str | None] = []
        self.cut_next_after: int | None = None
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{name}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def do_GET(self) -> None:
        owner: FileServer = self.server.owner  # type: ignore[attr-defined]
        owner.authorizations.append(self.headers.get("Authorization"))
        path = owner.root / urlsplit(self.path).path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        wanted = self.headers.get("Range")
        owner.ranges.append(wanted)
        start = int(re.fullmatch(r"bytes=(\d+)-", wanted)[1]) if wanted else 0
        if start >= len(data) > 0:
            self.send_error(416)
            return
        self.send_response(206 if wanted else 200)
        if wanted:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        cut, owner.cut_next_after = owner.cut_next_after, None
        self.wfile.write(body if cut is None else body[:cut])

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: pytest shows stderr of failing tests
