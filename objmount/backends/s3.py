"""S3 backend (boto3), for AWS and S3-compatible servers (MinIO, Ceph, SeaweedFS, moto).

Reads rclone's s3 keys: provider, access_key_id, secret_access_key,
session_token, region, endpoint, env_auth. With env_auth, boto3's default
credential chain applies; with no keys and no env_auth, requests are unsigned
(public buckets), as in rclone. boto3's own retries are off: the runner retries.
"""

import logging
from collections.abc import Callable
from typing import TypeVar

import boto3
import botocore.exceptions
from botocore import UNSIGNED
from botocore.config import Config

from objmount.backends import Timeouts
from objmount.backends.base import (
    AuthFailed,
    BackendError,
    ContainerNotFound,
    ETagMismatch,
    ListPage,
    NotFound,
    ObjectInfo,
    Unreachable,
)
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


class S3Backend:
    """One S3 bucket; methods block and raise only objmount.backends.base errors."""

    def __init__(self, remote: Remote, bucket: str, timeouts: Timeouts) -> None:
        self.container = bucket
        self.remote_name = remote.name
        self.endpoint = remote.get("endpoint") or None
        if self.endpoint and "://" not in self.endpoint:
            self.endpoint = f"https://{self.endpoint}"
        self.region = remote.get("region", "us-east-1")
        signed = remote.flag("env_auth") or bool(remote.get("access_key_id"))
        config = Config(
            region_name=self.region,
            connect_timeout=timeouts.connect_s,
            read_timeout=timeouts.read_s,
            retries={"total_max_attempts": 1},
            max_pool_connections=timeouts.pool_size,
            # rclone's default (force_path_style): custom endpoints rarely do virtual hosts.
            s3={"addressing_style": "path" if self.endpoint else "auto"},
            signature_version=None if signed else UNSIGNED,
        )
        if remote.flag("env_auth"):
            session = boto3.session.Session()
        else:
            session = boto3.session.Session(
                aws_access_key_id=remote.get("access_key_id") or None,
                aws_secret_access_key=remote.get("secret_access_key") or None,
                aws_session_token=remote.get("session_token") or None,
            )
        self.client = session.client("s3", endpoint_url=self.endpoint, config=config)

    def describe(self) -> str:
        where = self.endpoint or f"AWS region {self.region}"
        return f"s3 bucket {self.container!r} at {where}"

    def check(self, prefix: str) -> None:
        self._call(
            lambda: self.client.list_objects_v2(
                Bucket=self.container, Prefix=prefix, Delimiter="/", MaxKeys=1
            ),
            key=None,
        )

    def list_page(self, prefix: str, delimiter: str | None, token: str | None) -> ListPage:
        args: dict[str, object] = {"Bucket": self.container, "Prefix": prefix, "MaxKeys": 1000}
        if delimiter:
            args["Delimiter"] = delimiter
        if token:
            args["ContinuationToken"] = token
        reply = self._call(lambda: self.client.list_objects_v2(**args), key=None)
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

    def read(self, key: str, start: int, end: int, etag: str | None) -> bytes:
        if end <= start:
            return b""
        args = {"Bucket": self.container, "Key": key, "Range": f"bytes={start}-{end - 1}"}
        if etag:
            args["IfMatch"] = f'"{etag}"'

        def get() -> bytes:
            return self.client.get_object(**args)["Body"].read()

        return self._call(get, key)

    def _call(self, fn: Callable[[], T], key: str | None) -> T:
        """Run one SDK request, translating its exceptions into backend errors."""
        what = f"{self.container}/{key}" if key is not None else self.describe()
        try:
            return fn()
        except botocore.exceptions.ClientError as exc:
            raise self._translate(exc, what, key) from None
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectTimeoutError,
        ) as exc:
            raise Unreachable(f"cannot reach {self.endpoint or 'S3'}: {exc}") from None
        except (
            botocore.exceptions.ReadTimeoutError,
            botocore.exceptions.ResponseStreamingError,
            botocore.exceptions.ConnectionClosedError,
        ) as exc:
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
