"""S3 backend (boto3), for AWS and S3-compatible servers (MinIO, Ceph, SeaweedFS, moto).

Reads rclone's s3 keys: provider, access_key_id, secret_access_key,
session_token, region, endpoint, env_auth, location_constraint (for bucket
creation). With env_auth, boto3's default credential chain applies; with no keys
and no env_auth, requests are unsigned (public buckets), as in rclone. boto3's
own retries are off: the runner (or the ETL loader) retries. GETs, LISTs and
PUTs go the lean way (s3_get.py, s3_put.py) unless a proxy or a region redirect
calls for boto3; either way, a read returns exactly the stored bytes asked for.
With static keys (or none) at an endpoint, boto3's client is made at its first
use only, and the start-up check is a lean HEAD: a mount that needs nothing else
never imports boto3 (~0.3 s of start-up); with env_auth or AWS's own endpoints,
boto3 resolves credentials and endpoint at once, as before.

Files above the segment size go up as multipart uploads, SEGMENT_STREAMS parts
at a time, each part streamed from the file (memory stays at a few buffers per
part); a failed upload is aborted so its parts are not billed.
"""

import base64
import contextlib
import hashlib
import io
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, TypeVar

import botocore.exceptions
from botocore import UNSIGNED
from botocore.config import Config
from botocore.credentials import Credentials

from objmount import log as logsetup
from objmount.backends import Timeouts
from objmount.backends.base import (
    SEGMENT_STREAMS,
    AuthFailed,
    BackendError,
    ContainerNotFound,
    ETagMismatch,
    ListPage,
    NotFound,
    ObjectInfo,
    Retry,
    Unreachable,
    call_once,
    cut_page,
    listing_page_size_override,
)
from objmount.backends.http_get import lean_get_supported, slice_answer
from objmount.backends.s3_get import LeanGetUnsupported, S3Getter
from objmount.backends.s3_list import parse_list_page
from objmount.backends.s3_put import S3Putter
from objmount.config import Remote

log = logging.getLogger(__name__)
T = TypeVar("T")

_AUTH_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
     "ExpiredToken", "403", "401"}
)
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "503", "500", "502",
     "504"}
)
# S3's largest page (and boto3's default): fewer round trips per directory.
_LIST_MAX_KEYS = 1000
# S3's multipart limits: every part but the last is at least 5 MiB; at most 10,000 parts.
_MIN_PART_BYTES = 5 << 20
_MAX_PARTS = 10_000


def _boto3() -> ModuleType:
    """boto3, imported at its first use (~0.1 s a mount from a snapshot may not need)."""
    import boto3

    return boto3


def _register_credentials(credentials: Credentials | None) -> None:
    """Register the secret key and session token boto3 resolved (env_auth: from the
    environment, a profile, an assumed role...) for log redaction.

    The access key id stays readable: it only names the key (every request carries
    it in clear, in its Authorization header), and which key was used is worth
    seeing in a log. Tokens that botocore refreshes later are masked by log.py's field rules.
    Blocks while an assumed role's first credentials are fetched (before any mount
    is live); a failure is left for the first request to report, translated.
    """
    if credentials is None:
        return
    try:
        frozen = credentials.get_frozen_credentials()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        return
    logsetup.register_secret(frozen.secret_key)
    logsetup.register_secret(frozen.token)


class S3Backend:
    """One S3 bucket; methods block and raise only objmount.backends.base errors."""

    def __init__(self, remote: Remote, bucket: str, timeouts: Timeouts) -> None:
        self.container = bucket
        self.remote_name = remote.name
        self.endpoint = remote.get("endpoint") or None
        if self.endpoint and "://" not in self.endpoint:
            self.endpoint = f"https://{self.endpoint}"
        self.region = remote.get("region", "us-east-1")
        self.location_constraint = remote.get("location_constraint")
        env_auth = remote.flag("env_auth")
        signed = env_auth or bool(remote.get("access_key_id"))
        config = Config(
            region_name=self.region,
            connect_timeout=timeouts.connect_s,
            read_timeout=timeouts.idle_s,
            retries={"total_max_attempts": 1},
            max_pool_connections=timeouts.pool_size,
            # rclone's default (force_path_style): custom endpoints rarely do virtual hosts.
            s3={"addressing_style": "path" if self.endpoint else "auto"},
            signature_version=None if signed else UNSIGNED,
        )
        keys = {} if env_auth else {
            "aws_access_key_id": remote.get("access_key_id") or None,
            "aws_secret_access_key": remote.get("secret_access_key") or None,
            "aws_session_token": remote.get("session_token") or None,
        }
        self._client_lock = threading.Lock()
        self._session = lambda: _boto3().session.Session(**keys)
        self._client_of = lambda session: session.client(
            "s3", endpoint_url=self.endpoint, config=config)
        self._client = None
        self.page_size = min(_LIST_MAX_KEYS, listing_page_size_override() or _LIST_MAX_KEYS)
        # GETs skip boto3's ~1 ms of CPU per request (s3_get.py); None: boto3 for all.
        self.getter: S3Getter | None = None
        if self.endpoint and not env_auth:
            # Static keys (or none) at a given endpoint: what the lean paths need is known
            # without boto3, whose client (~0.3 s to import and build) waits for a call
            # only it makes: a mount from a snapshot may never make one.
            endpoint_url = self.endpoint
            credentials = Credentials(keys["aws_access_key_id"], keys["aws_secret_access_key"],
                                      keys["aws_session_token"]) if signed else None
        else:  # boto3 resolves them: the credential chain, AWS's endpoints
            session = self._session()
            self._client = self._client_of(session)
            endpoint_url = self._client.meta.endpoint_url
            credentials = session.get_credentials() if signed else None
        _register_credentials(credentials)
        if (credentials or not signed) and lean_get_supported(endpoint_url):
            self.getter = S3Getter(endpoint_url, bucket, self.region,
                                   credentials, timeouts, path_style=bool(self.endpoint))
        # PUTs likewise (s3_put.py): one MD5 instead of three hashes, 1 MiB socket writes.
        self.putter = S3Putter(self.getter, timeouts) if self.getter else None

    @property
    def client(self) -> Any:  # boto3's S3 client: its class is generated at run time
        """boto3's S3 client, made at its first use (thread-safe)."""
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._client_of(self._session())
                client = self._client
        return client

    def describe(self) -> str:
        where = logsetup.redact_url(self.endpoint) if self.endpoint else f"AWS region {self.region}"
        return f"s3 bucket {self.container!r} at {where}"

    def check(self, prefix: str) -> None:
        # A HEAD, not a listing: a mount from a listing snapshot lists nothing. A HEAD's
        # error has no body (a refused token reads "400 Bad Request"), so a refusal is
        # asked again as a one-key listing, whose error carries the store's reason
        # (InvalidToken, AccessDenied, NoSuchBucket).
        # Lean while boto3's client is not made (static keys at an endpoint: a mount from a
        # snapshot then never makes it); where it is, through it, as every other call.
        if self._client is None and self.getter is not None:
            try:
                if self._call(self.getter.bucket_answers, key=None):
                    return
            except LeanGetUnsupported:
                self.getter = None  # a region redirect: boto3 follows those
        try:
            self._call(lambda: self.client.head_bucket(Bucket=self.container), key=None)
        except BackendError as refused:
            if refused.transient or isinstance(refused, Unreachable):
                raise
            self._call(
                lambda: self.client.list_objects_v2(
                    Bucket=self.container, Prefix=prefix, Delimiter="/", MaxKeys=1),
                key=None,
            )
            raise

    def list_page(self, prefix: str, delimiter: str | None, token: str | None, *,
                  after: str | None = None, upto: str | None = None,
                  reverse: bool = False) -> ListPage:
        if reverse:
            raise BackendError("S3 cannot list keys in reverse order")
        page = self._call(
            lambda: self._lean_or_boto3(
                lambda getter: parse_list_page(
                    getter.list_objects(prefix, delimiter, token, self.page_size, after)),
                lambda: self._boto3_list_page(prefix, delimiter, token, after),
            ),
            key=None,
        )
        return page if upto is None else cut_page(page, upto)

    def container_version(self) -> str | None:
        return None  # S3 has no container-level change token

    def _boto3_list_page(self, prefix: str, delimiter: str | None, token: str | None,
                         after: str | None) -> ListPage:
        args: dict[str, object] = {
            "Bucket": self.container, "Prefix": prefix, "MaxKeys": self.page_size}
        if delimiter:
            args["Delimiter"] = delimiter
        if token:
            args["ContinuationToken"] = token
        if after:
            args["StartAfter"] = after
        reply = self.client.list_objects_v2(**args)
        return ListPage(
            objects=[
                ObjectInfo(
                    key=o["Key"],
                    size=o["Size"],
                    etag=o.get("ETag", "").strip('"'),
                    mtime_ns=int(o["LastModified"].timestamp() * 1e9),
                )
                for o in reply.get("Contents", ())
            ],
            prefixes=[p["Prefix"] for p in reply.get("CommonPrefixes", ())],
            next_token=reply.get("NextContinuationToken") if reply.get("IsTruncated") else None,
        )

    def stat(self, key: str) -> ObjectInfo:
        reply = self._call(lambda: self.client.head_object(Bucket=self.container, Key=key), key)
        return ObjectInfo(
            key=key,
            size=reply["ContentLength"],
            etag=reply.get("ETag", "").strip('"'),
            mtime_ns=int(reply["LastModified"].timestamp() * 1e9),
        )

    def read(self, key: str, start: int, end: int, etag: str | None) -> bytes | bytearray:
        if end <= start:
            return b""
        return self._call(
            lambda: self._lean_or_boto3(
                lambda getter: getter.get(key, start, end, etag),
                lambda: self._boto3_read(key, start, end, etag),
            ),
            key,
        )

    def _boto3_read(self, key: str, start: int, end: int, etag: str | None) -> bytes:
        """The same GET through boto3, its answer checked as the lean path checks its own."""
        args = {"Bucket": self.container, "Key": key, "Range": f"bytes={start}-{end - 1}"}
        if etag:
            args["IfMatch"] = f'"{etag}"'
        reply = self.client.get_object(**args)
        meta = reply["ResponseMetadata"]
        return slice_answer(meta["HTTPStatusCode"], meta.get("HTTPHeaders", {}),
                            reply["Body"].read(), start, end, etag, f"{self.container}/{key}")

    def _lean_or_boto3(self, lean: Callable[[S3Getter], T], boto3_call: Callable[[], T]) -> T:
        """Run `lean` on the lean GET path if it is usable, else `boto3_call` (blocking)."""
        if self.getter is not None:
            try:
                return lean(self.getter)
            except LeanGetUnsupported:
                self.getter = None  # a region redirect: boto3 follows those
        return boto3_call()

    def create_container(self) -> None:
        args: dict[str, object] = {"Bucket": self.container}
        if self.location_constraint:
            args["CreateBucketConfiguration"] = {"LocationConstraint": self.location_constraint}

        def create() -> None:
            try:
                self.client.create_bucket(**args)
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise

        self._call(create, key=None)

    def put_file(self, key: str, path: Path, segment_size: int, *, md5: str | None = None,
                 absent: bool = False, retry: Retry = call_once) -> None:
        size = path.stat().st_size
        if size <= segment_size:
            with open(path, "rb") as body:
                retry(lambda: self._call(lambda: self._put(key, body, size, md5, None), key))
            return
        part_bytes = max(segment_size, _MIN_PART_BYTES, -(-size // _MAX_PARTS))
        upload_id = retry(lambda: self._call(
            lambda: self.client.create_multipart_upload(Bucket=self.container, Key=key)[
                "UploadId"
            ],
            key,
        ))
        try:
            parts = self._put_parts(key, upload_id, path, size, part_bytes, retry)
            retry(lambda: self._call(
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.container, Key=key, UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                ),
                key,
            ))
        except BaseException:
            self._abort(key, upload_id)
            raise

    def delete(self, key: str) -> None:
        # S3 answers 204 for a missing key; some compatible servers answer 404.
        with contextlib.suppress(NotFound):
            self._call(lambda: self.client.delete_object(Bucket=self.container, Key=key), key)

    def _put_parts(
        self, key: str, upload_id: str, path: Path, size: int, part_bytes: int, retry: Retry
    ) -> list[dict[str, object]]:
        """Upload every part, SEGMENT_STREAMS at a time, each retried by `retry`; on the
        first lasting failure cancel the rest."""
        offsets = range(0, size, part_bytes)
        pool = ThreadPoolExecutor(min(SEGMENT_STREAMS, len(offsets)), "s3-part")

        def put_part(number: int, offset: int) -> str:
            with _FileSlice(path, offset, min(part_bytes, size - offset)) as body:
                return retry(lambda: self._call(
                    lambda: self._put(key, body, body.length, None, (upload_id, number)), key))

        try:
            futures = [pool.submit(put_part, number, offset)
                       for number, offset in enumerate(offsets, start=1)]
            return [{"PartNumber": n, "ETag": f'"{f.result()}"'}
                    for n, f in enumerate(futures, 1)]
        finally:
            pool.shutdown(cancel_futures=True)

    def _put(self, key: str, body: BinaryIO, length: int, md5: str | None,
             part: tuple[str, int] | None) -> str:
        """PUT `body` from its start as `key` or as part (upload id, number) of it; return
        the ETag (unquoted). Lean (s3_put.py) unless a redirect called for boto3."""
        if md5 is None:
            md5 = hashlib.file_digest(body, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()
        body.seek(0)
        if self.putter is not None:
            try:
                return self.putter.put(key, body, length, md5, part)
            except LeanGetUnsupported:
                self.putter = None  # a region redirect: boto3 follows those
                body.seek(0)
        args = {"Bucket": self.container, "Key": key, "Body": body,
                "ContentMD5": base64.b64encode(bytes.fromhex(md5)).decode()}
        if part is None:
            return self.client.put_object(**args)["ETag"].strip('"')
        upload_id, number = part
        return self.client.upload_part(**args, UploadId=upload_id,
                                       PartNumber=number)["ETag"].strip('"')

    def _abort(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload so its parts are freed; a failure is only logged."""
        try:
            self._call(
                lambda: self.client.abort_multipart_upload(
                    Bucket=self.container, Key=key, UploadId=upload_id
                ),
                key,
            )
        except BackendError as exc:
            log.warning("could not abort the multipart upload of %s (%s): its parts stay "
                        "until a lifecycle rule expires them", key, exc)

    def _call(self, fn: Callable[[], T], key: str | None) -> T:
        """Run one request, translating the SDK's exceptions into backend errors (the lean
        paths raise backend errors of their own, which pass unchanged)."""
        what = f"{self.container}/{key}" if key is not None else self.describe()
        try:
            return fn()
        except botocore.exceptions.ClientError as exc:
            raise self._translate(exc, what, key) from None
        # A transport failure discards boto3's idle connections too (see http_get.py).
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectTimeoutError,
        ) as exc:
            self.client.close()
            raise Unreachable(f"cannot reach {self.endpoint or 'S3'}: {_reason(exc)}") from None
        except (
            botocore.exceptions.ReadTimeoutError,
            botocore.exceptions.ResponseStreamingError,
            botocore.exceptions.ConnectionClosedError,
            botocore.exceptions.IncompleteReadError,
        ) as exc:
            self.client.close()
            raise BackendError(f"{what}: {exc}", transient=True) from None
        except botocore.exceptions.NoCredentialsError:
            raise AuthFailed(
                f"remote {self.remote_name!r}: env_auth is set but no AWS credentials were found"
            ) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise BackendError(f"{what}: {exc}") from None

    def _translate(
        self, exc: botocore.exceptions.ClientError, what: str, key: str | None
    ) -> BackendError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code == "NoSuchBucket" or (key is None and status == 404):
            return ContainerNotFound(
                f"bucket {self.container!r} does not exist ({self.describe()})"
            )
        if code in ("NoSuchKey", "404") or status == 404:
            return NotFound(f"{what}: no such object")
        if code in ("PreconditionFailed", "412") or status == 412:
            return ETagMismatch(f"{what}: object changed since it was opened (ETag differs)")
        if code in _AUTH_CODES or status in (401, 403):
            return AuthFailed(
                f"access denied to {self.describe()} ({code}): check the credentials of "
                f"remote {self.remote_name!r}"
            )
        transient = code in _TRANSIENT_CODES or status >= 500
        return BackendError(f"{what}: {code or status} {error.get('Message', '')}".rstrip(),
                            transient=transient)


class _FileSlice(io.RawIOBase):
    """Bytes [start, start + length) of a file as a seekable stream: botocore reads a
    part body to sign it, then rewinds it to send it."""

    def __init__(self, path: Path, start: int, length: int) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY)
        self._start = start
        self.length = length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.length}[whence]
        self._pos = min(max(base + offset, 0), self.length)
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self.length - self._pos)
        if count <= 0:
            return 0
        data = os.pread(self._fd, count, self._start + self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def _reason(exc: botocore.exceptions.BotoCoreError) -> str:
    """Return the root cause of a connection failure in a few words ('Connection refused')."""
    if isinstance(exc, botocore.exceptions.ConnectTimeoutError):
        return "connection timed out"
    cause = str(exc.kwargs.get("error", exc))
    return cause.rsplit("] ", 1)[-1].strip() or "connection failed"
