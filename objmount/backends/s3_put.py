"""Lean S3 PUTs (whole objects and multipart parts): signed and sent as s3_get.py does.

Profiled on `objmount etl load` of 5,000 files of 60-120 KiB, boto3's
put_object costs ~2 ms of CPU per file: parameter validation, event hooks, a
SHA-256 of the body (SigV4 signs the payload over plain HTTP) and a CRC32 (its
default flexible checksum), then http.client sends the body in 8 KiB blocks,
each taking the GIL again, which 48 loader threads contend for. Here the body
goes unsigned (UNSIGNED-PAYLOAD) with a Content-MD5, which the loader has
computed anyway and the server checks: the same integrity for one hash instead
of three; and the body is sent in 1 MiB blocks.

Invariants: as s3_get.py, an S3 error answer raises the ClientError boto3 would
raise (S3Backend translates both paths alike), LeanGetUnsupported for a
redirect, objmount's errors for transport failures; it retries nothing.
"""

import base64
import urllib.parse
from typing import BinaryIO

from objmount.backends import Timeouts
from objmount.backends.http_get import PooledHTTP
from objmount.backends.s3_get import S3Getter, ca_certs_for, error_of
from objmount.backends.sigv4 import UNSIGNED_PAYLOAD

# Bytes per socket write of a body: 128 writes per 128 MiB, not 16,384.
SEND_BLOCK_BYTES = 1 << 20


class S3Putter:
    """PUTs into one bucket, addressed and signed as `getter` does; thread-safe."""

    def __init__(self, getter: S3Getter, timeouts: Timeouts) -> None:
        self.getter = getter
        self.http = PooledHTTP(timeouts, "S3", ca_certs=ca_certs_for(getter.endpoint_url),
                               send_block_bytes=SEND_BLOCK_BYTES)

    def put(self, key: str, body: BinaryIO, length: int, md5_hex: str,
            part: tuple[str, int] | None = None) -> str:
        """PUT `length` bytes of `body` as `key`, or as part (upload id, number) of it.

        Blocks for one request; returns the ETag (unquoted). The server refuses
        a body whose MD5 is not `md5_hex` (BadDigest). Raises as S3Getter.get.
        """
        url = self.getter.object_url(key)
        if part is not None:
            upload_id, number = part
            # SigV4 signs the query string as sent: sorted, each value percent-encoded.
            url += f"?partNumber={number}&uploadId={urllib.parse.quote(upload_id, safe='-_.~')}"
        headers = self.getter.signed(
            "PUT", url, {"Content-Length": str(length),
                         "Content-MD5": base64.b64encode(bytes.fromhex(md5_hex)).decode()},
            payload_sha256=UNSIGNED_PAYLOAD)  # Content-MD5 guards the body
        what = f"{self.getter.bucket}/{key}"
        response = self.http.send("PUT", url, headers, what, body=body)
        if response.status != 200:
            raise error_of(self.http.status_error(response), "UploadPart" if part else "PutObject")
        self.http.read_all(response, what)
        return (response.headers.get("etag") or "").strip('"')
