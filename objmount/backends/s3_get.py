"""Lean S3 GETs: botocore's own SigV4 signer over one pooled urllib3 client.

boto3's get_object spends ~2 ms of CPU per request in parameter validation,
event hooks and response parsing, which caps small-file reads near 430 GETs/s
on two cores. A GET needs none of it: this module signs with the same
credentials and signer (S3SigV4Auth), sends with urllib3 and reads the body
whole, for ~10x less CPU per request (bench/gets.py measures both). LIST
(ListObjectsV2) is a GET too: boto3 spends ~55 µs of CPU per listed object,
mostly parsing each LastModified with dateutil; s3_list.py parses the XML
this module returns.

Invariants: it raises the botocore exceptions boto3 would raise for the same
failure (ClientError carrying the S3 error code and HTTP status, and the
connection/timeout errors), so S3Backend translates both paths the same way;
no retries here (the runner retries); a body shorter than its Content-Length
is an error, never a short read.
"""

import contextlib
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator

import botocore.exceptions
import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.httpsession import get_cert_path
from botocore.utils import check_dns_name

from objmount.backends import Timeouts

_ERROR_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_ERROR_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")
# Answers boto3 handles by itself (its region redirector re-sends to the bucket's
# region): the caller falls back to boto3 rather than fail.
_REDIRECT_STATUSES = frozenset({301, 302, 307})
_REDIRECT_CODES = frozenset({b"AuthorizationHeaderMalformed", b"PermanentRedirect"})


class LeanGetUnsupported(Exception):
    """This bucket needs what only boto3 does (a region redirect): use get_object instead."""


def lean_get_supported(endpoint_url: str) -> bool:
    """Return False where this path would differ from boto3's: a proxy is configured."""
    host = urllib.parse.urlsplit(endpoint_url).hostname or ""
    proxies = urllib.request.getproxies()
    return not (proxies and not urllib.request.proxy_bypass(host))


class S3Getter:
    """Ranged, conditional GETs of one bucket; thread-safe, one connection pool."""

    def __init__(self, endpoint_url: str, bucket: str, region: str,
                 credentials: Credentials | None, timeouts: Timeouts,
                 path_style: bool) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.region = region
        self.credentials = credentials
        parts = urllib.parse.urlsplit(self.endpoint_url)
        # botocore's "auto" addressing: virtual host when the name allows it.
        virtual = not path_style and check_dns_name(bucket) and "." not in bucket
        if virtual:
            self.base_url = f"{parts.scheme}://{bucket}.{parts.netloc}{parts.path}/"
        else:
            self.base_url = f"{self.endpoint_url}/{urllib.parse.quote(bucket, safe='')}/"
        # The bucket itself, as boto3 addresses it: no '/' after a path-style bucket name.
        self.bucket_url = self.base_url if virtual else self.base_url[:-1]
        self.timeout = urllib3.Timeout(connect=timeouts.connect_s, read=timeouts.read_s)
        self.http = urllib3.PoolManager(
            num_pools=4, maxsize=timeouts.pool_size, block=False, retries=False,
            ca_certs=get_cert_path(True) if parts.scheme == "https" else None,
        )

    def get(self, key: str, start: int, end: int, etag: str | None) -> bytes:
        """Return bytes [start, end) of `key`; with `etag`, only of that version.

        Blocks for one request. Raises botocore.exceptions.ClientError for an
        S3 error answer, botocore's connection and timeout errors, and
        LeanGetUnsupported for a redirect to another region.
        """
        url = self.base_url + urllib.parse.quote(key, safe="/~")
        headers = {"Range": f"bytes={start}-{end - 1}"}
        if etag:
            headers["If-Match"] = f'"{etag}"'
        return self._request(url, headers, "GetObject")

    def list_objects(self, prefix: str, delimiter: str | None, token: str | None,
                     max_keys: int) -> bytes:
        """Return the XML of one ListObjectsV2 page (keys URL-encoded: encoding-type=url).

        Blocks for one request; raises as `get` does.
        """
        params = {"list-type": "2", "encoding-type": "url", "max-keys": str(max_keys),
                  "prefix": prefix}
        if delimiter:
            params["delimiter"] = delimiter
        if token:
            params["continuation-token"] = token
        # SigV4 signs the query string as sent: sorted, each value percent-encoded.
        query = "&".join(f"{name}={urllib.parse.quote(value, safe='-_.~')}"
                         for name, value in sorted(params.items()))
        return self._request(f"{self.bucket_url}?{query}", {}, "ListObjectsV2")

    def _request(self, url: str, headers: dict[str, str], operation: str) -> bytes:
        """Send one signed GET of `url`; return the body of a 200 or 206 answer."""
        if self.credentials is not None:
            request = AWSRequest("GET", url, headers=headers)
            S3SigV4Auth(self.credentials.get_frozen_credentials(), "s3",
                        self.region).add_auth(request)
            headers = dict(request.headers.items())
        with botocore_errors(self.endpoint_url):
            response = self.http.request("GET", url, headers=headers, timeout=self.timeout,
                                         redirect=False, preload_content=True)
        if response.status in (200, 206):
            return response.data
        raise error_of(response, operation)


@contextlib.contextmanager
def botocore_errors(endpoint_url: str) -> Iterator[None]:
    """Raise urllib3's connection and timeout errors as the botocore ones boto3 would."""
    try:
        yield
    except urllib3.exceptions.ConnectTimeoutError:
        raise botocore.exceptions.ConnectTimeoutError(endpoint_url=endpoint_url) from None
    except urllib3.exceptions.NewConnectionError:
        raise botocore.exceptions.EndpointConnectionError(endpoint_url=endpoint_url) from None
    except urllib3.exceptions.ReadTimeoutError:
        raise botocore.exceptions.ReadTimeoutError(endpoint_url=endpoint_url) from None
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError) as exc:
        raise botocore.exceptions.ResponseStreamingError(error=exc) from None
    except urllib3.exceptions.HTTPError:
        raise botocore.exceptions.ConnectionClosedError(endpoint_url=endpoint_url) from None


def error_of(response: urllib3.BaseHTTPResponse, operation: str) -> Exception:
    """The exception for an S3 error answer: LeanGetUnsupported for a redirect, else ClientError."""
    code = _ERROR_CODE.search(response.data or b"")
    if response.status in _REDIRECT_STATUSES or (code and code.group(1) in _REDIRECT_CODES):
        return LeanGetUnsupported(f"HTTP {response.status}")
    return _client_error(response.status, response.data, operation)


def _client_error(status: int, body: bytes, operation: str) -> botocore.exceptions.ClientError:
    """The ClientError boto3 raises for an S3 error answer: code from the XML, else the status."""
    code = _ERROR_CODE.search(body or b"")
    message = _ERROR_MESSAGE.search(body or b"")
    return botocore.exceptions.ClientError(
        {
            "Error": {
                "Code": code.group(1).decode(errors="replace") if code else str(status),
                "Message": message.group(1).decode(errors="replace") if message else "",
            },
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )
