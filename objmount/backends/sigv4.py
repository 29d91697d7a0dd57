"""AWS Signature Version 4 for S3 requests: the headers botocore's S3SigV4Auth adds, cheaply.

botocore signs a request by building an AWSRequest, parsing its URL again,
copying its headers into an HTTPHeaders, and deriving the signing key (four
HMACs) every time: ~250 us of CPU per GET here, a sixth of what a cold small
file cost the mount. The signing key depends only on the secret, the day, the
region and the service, so it is derived once a day; the rest is a few string
joins, one SHA-256 and one HMAC (~15 us).

Invariant: for the same request, credentials and time, `sign` returns exactly
the headers S3SigV4Auth.add_auth sets (X-Amz-Date, X-Amz-Security-Token,
X-Amz-Content-SHA256, Authorization), with the same header set signed (every
header given, but botocore's unsigned ones, plus host) and the S3 rules (the
path as sent, never normalised; the query string as sent, its pairs sorted).
tests/unit/test_sigv4.py checks that against botocore itself.
"""

import functools
import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Mapping

from botocore.auth import SIGNED_HEADERS_BLACKLIST, UNSIGNED_PAYLOAD
from botocore.credentials import Credentials
from botocore.utils import is_valid_ipv6_endpoint_url

__all__ = ["EMPTY_SHA256", "UNSIGNED_PAYLOAD", "SigV4Signer", "host_of"]

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNSIGNED = frozenset(SIGNED_HEADERS_BLACKLIST)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_of(url: str) -> str:
    """The Host header botocore signs for `url` (lower-case, no default port, no userinfo);
    a client sending requests signed by SigV4Signer must send this very value."""
    parts = urllib.parse.urlsplit(url)
    return _host(parts.scheme, parts.netloc)


@functools.lru_cache(maxsize=64)
def _host(scheme: str, netloc: str) -> str:
    """host_of for one origin (botocore's IPv6 test alone costs ~40 us: done once)."""
    origin = f"{scheme}://{netloc}"
    parts = urllib.parse.urlsplit(origin)
    host = parts.hostname or ""
    if is_valid_ipv6_endpoint_url(origin):
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{parts.port}"
    return host


class SigV4Signer:
    """Signs requests to one region's S3 with one set of (maybe refreshing) credentials.

    Thread-safe (its two caches are tuples, swapped whole). `credentials` may be
    botocore's refreshable kind: they are frozen once per request, as botocore does.
    """

    def __init__(self, credentials: Credentials, region: str, service: str = "s3") -> None:
        self.credentials = credentials
        self.region = region
        self.service = service
        self._key: tuple[str, str, bytes] = ("", "", b"")  # (secret, day, signing key)
        self._stamp: tuple[int, str] = (-1, "")  # (second, its SigV4 timestamp)

    def sign(self, method: str, url: str, headers: Mapping[str, str],
             payload_sha256: str = EMPTY_SHA256, now: float | None = None) -> dict[str, str]:
        """Return `headers` plus the SigV4 headers of `method url` at `now` (default: the
        current time). `payload_sha256`: the body's SHA-256 (hex), or UNSIGNED_PAYLOAD."""
        frozen = self.credentials.get_frozen_credentials()
        stamp = self._timestamp(time.time() if now is None else now)
        parts = urllib.parse.urlsplit(url)
        signed = dict(headers)
        signed["X-Amz-Date"] = stamp
        if frozen.token:
            signed["X-Amz-Security-Token"] = frozen.token
        signed["X-Amz-Content-SHA256"] = payload_sha256
        canonical: dict[str, str] = {}
        for name, value in signed.items():
            lower = name.lower()
            if lower not in _UNSIGNED:
                canonical[lower] = " ".join(value.split())
        canonical.setdefault("host", _host(parts.scheme, parts.netloc))
        names = sorted(canonical)
        signed_names = ";".join(names)
        request = "\n".join((
            method.upper(), parts.path, _canonical_query(parts.query),
            "".join(f"{name}:{canonical[name]}\n" for name in names),
            signed_names, payload_sha256,
        ))
        day = stamp[:8]
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = (f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n"
                   f"{hashlib.sha256(request.encode()).hexdigest()}")
        signature = hmac.new(self._signing_key(frozen.secret_key, day), to_sign.encode(),
                             hashlib.sha256).hexdigest()
        signed["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={frozen.access_key}/{scope}, "
                                   f"SignedHeaders={signed_names}, Signature={signature}")
        return signed

    def _timestamp(self, now: float) -> str:
        second = int(now)
        cached = self._stamp
        if cached[0] == second:
            return cached[1]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        self._stamp = (second, stamp)
        return stamp

    def _signing_key(self, secret: str, day: str) -> bytes:
        cached = self._key
        if cached[0] == secret and cached[1] == day:
            return cached[2]
        key = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
        for part in (self.region, self.service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        self._key = (secret, day, key)
        return key


def _canonical_query(query: str) -> str:
    """The query string as botocore signs one given in the URL: pairs sorted, not re-encoded."""
    if not query:
        return ""
    pairs = []
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        pairs.append((name, value))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))
