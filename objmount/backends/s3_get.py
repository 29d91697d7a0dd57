"""Lean S3 GETs: SigV4-signed (sigv4.py) over one pooled HTTP client (http_get.py).

boto3's get_object spends ~2 ms of CPU per request in parameter validation,
event hooks and response parsing, which caps small-file reads near 430 GETs/s
on two cores. A GET needs none of it: this module signs with the same
credentials and the headers botocore's S3SigV4Auth would add (sigv4.py, at a
tenth of botocore's CPU) and sends through http_get.PooledHTTP, for ~10x less
CPU per request (bench/gets.py measures both). LIST
(ListObjectsV2) is a GET too: boto3 spends ~55 µs of CPU per listed object,
mostly parsing each LastModified with dateutil; s3_list.py parses the XML
this module returns.

Invariants: an S3 error answer raises the botocore ClientError boto3 would
raise (carrying the S3 error code and HTTP status), so S3Backend translates
both paths the same way; transport failures and answers that do not fit the
request raise objmount's errors (http_get.py), which S3Backend passes on; bytes
are exactly those stored (never decoded, checked against the range asked for);
no retries here (the runner retries).
"""

import re
import urllib.parse
from collections.abc import Mapping

import botocore.exceptions
from botocore.credentials import Credentials
from botocore.httpsession import get_cert_path
from botocore.utils import check_dns_name

from objmount.backends import Timeouts
from objmount.backends.http_get import PooledHTTP, StatusError, range_headers
from objmount.backends.sigv4 import EMPTY_SHA256, SigV4Signer

_ERROR_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_ERROR_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")
# Answers boto3 handles by itself (its region redirector re-sends to the bucket's
# region): the caller falls back to boto3 rather than fail.
_REDIRECT_STATUSES = frozenset({301, 302, 307})
_REDIRECT_CODES = frozenset({b"AuthorizationHeaderMalformed", b"PermanentRedirect"})


class LeanGetUnsupported(Exception):
    """This bucket needs what only boto3 does (a region redirect): use get_object instead."""


def ca_certs_for(url: str) -> str | None:
    """The CA bundle boto3 would verify `url` with (None for plain HTTP)."""
    return get_cert_path(True) if url.startswith("https:") else None


class S3Getter:
    """Ranged, conditional GETs of one bucket; thread-safe, one connection pool."""

    def __init__(self, endpoint_url: str, bucket: str, region: str,
                 credentials: Credentials | None, timeouts: Timeouts,
                 path_style: bool) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.bucket = bucket
        self.region = region
        self.credentials = credentials
        self.signer = SigV4Signer(credentials, region) if credentials is not None else None
        parts = urllib.parse.urlsplit(self.endpoint_url)
        # botocore's "auto" addressing: virtual host when the name allows it.
        virtual = not path_style and check_dns_name(bucket) and "." not in bucket
        if virtual:
            self.base_url = f"{parts.scheme}://{bucket}.{parts.netloc}{parts.path}/"
        else:
            self.base_url = f"{self.endpoint_url}/{urllib.parse.quote(bucket, safe='')}/"
        # The bucket itself, as boto3 addresses it: no '/' after a path-style bucket name.
        self.bucket_url = self.base_url if virtual else self.base_url[:-1]
        self.http = PooledHTTP(timeouts, "S3", ca_certs=ca_certs_for(self.endpoint_url))

    def object_url(self, key: str) -> str:
        return self.base_url + urllib.parse.quote(key, safe="/~")

    def get(self, key: str, start: int, end: int, etag: str | None) -> bytes | bytearray:
        """Return bytes [start, end) of `key` (fewer only past its end); with `etag`,
        only of that version.

        Blocks for one request. Raises botocore.exceptions.ClientError for an
        S3 error answer, LeanGetUnsupported for a redirect to another region,
        and objmount's errors (http_get.PooledHTTP.get_range) for the rest.
        """
        url = self.object_url(key)
        headers = self.signed("GET", url, range_headers(start, end, etag))
        try:
            return self.http.get_range(url, headers, start, end, etag, f"{self.bucket}/{key}")
        except StatusError as exc:
            raise error_of(exc, "GetObject") from None

    def list_objects(self, prefix: str, delimiter: str | None, token: str | None,
                     max_keys: int, start_after: str | None = None) -> bytes:
        """Return the XML of one ListObjectsV2 page (keys URL-encoded: encoding-type=url),
        of the keys after `start_after` if given (a continuation token wins over it).

        Blocks for one request; raises as `get` does.
        """
        params = {"list-type": "2", "encoding-type": "url", "max-keys": str(max_keys),
                  "prefix": prefix}
        if delimiter:
            params["delimiter"] = delimiter
        if token:
            params["continuation-token"] = token
        if start_after:
            params["start-after"] = start_after
        # SigV4 signs the query string as sent: sorted, each value percent-encoded.
        query = "&".join(f"{name}={urllib.parse.quote(value, safe='-_.~')}"
                         for name, value in sorted(params.items()))
        url = f"{self.bucket_url}?{query}"
        try:
            return self.http.get(url, self.signed("GET", url, {}), f"bucket {self.bucket!r}")
        except StatusError as exc:
            raise error_of(exc, "ListObjectsV2") from None

    def bucket_answers(self) -> bool:
        """HEAD the bucket: True if it answers 200, False for an error answer (a HEAD's
        has no body: the caller asks again where the answer says why).

        Blocks for one request; raises LeanGetUnsupported for a redirect to another
        region and objmount's errors for transport failures, as `get` does.
        """
        url = self.bucket_url
        what = f"bucket {self.bucket!r}"
        response = self.http.send("HEAD", url, self.signed("HEAD", url, {}), what)
        if response.status in _REDIRECT_STATUSES:
            self.http.close(response)
            raise LeanGetUnsupported(f"HTTP {response.status}")
        self.http.read_all(response, what)  # none: the connection goes back to the pool
        return response.status == 200

    def signed(self, method: str, url: str, headers: Mapping[str, str],
               payload_sha256: str = EMPTY_SHA256) -> dict[str, str]:
        """`headers` plus the SigV4 signature of `method url` (unchanged if unsigned);
        `payload_sha256`: the body's SHA-256, or sigv4.UNSIGNED_PAYLOAD."""
        if self.signer is None:
            return dict(headers)
        return self.signer.sign(method, url, headers, payload_sha256)


def error_of(exc: StatusError, operation: str) -> Exception:
    """The exception for an S3 error answer: LeanGetUnsupported for a redirect, else the
    ClientError boto3 raises (code from the XML, else the status)."""
    code = _ERROR_CODE.search(exc.body)
    if exc.status in _REDIRECT_STATUSES or (code and code.group(1) in _REDIRECT_CODES):
        return LeanGetUnsupported(f"HTTP {exc.status}")
    message = _ERROR_MESSAGE.search(exc.body)
    return botocore.exceptions.ClientError(
        {
            "Error": {
                "Code": code.group(1).decode(errors="replace") if code else str(exc.status),
                "Message": message.group(1).decode(errors="replace") if message else "",
            },
            "ResponseMetadata": {"HTTPStatusCode": exc.status},
        },
        operation,
    )
