"""sigv4.py signs exactly as botocore's S3SigV4Auth does, for the requests objmount sends."""

import datetime

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from objmount.backends.sigv4 import EMPTY_SHA256, UNSIGNED_PAYLOAD, SigV4Signer, host_of

NOW = datetime.datetime(2026, 11, 23, 23, 59, 59, tzinfo=datetime.UTC)


class _UnsignedPayload(S3SigV4Auth):
    def _should_sha256_sign_payload(self, request: AWSRequest) -> bool:
        return False


def botocore_headers(monkeypatch: pytest.MonkeyPatch, credentials: Credentials, region: str,
                     method: str, url: str, headers: dict[str, str], when: datetime.datetime,
                     unsigned: bool = False) -> dict[str, str]:
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: when)
    request = AWSRequest(method, url, headers=dict(headers))
    auth = _UnsignedPayload if unsigned else S3SigV4Auth
    auth(credentials.get_frozen_credentials(), "s3", region).add_auth(request)
    return dict(request.headers.items())


KEYS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
WITH_TOKEN = Credentials("ASIAEXAMPLE", "secret/with+chars", "session-token//xyz==")
RANGE = {"Range": "bytes=0-99999", "If-Match": '"0123456789abcdef0123456789abcdef"'}

CASES = [
    ("path-style GET with range and If-Match", KEYS, "GET",
     "http://127.0.0.1:8333/bucket/images/class_01/img_00001.jpg", RANGE),
    ("virtual host over https, default port", KEYS, "GET",
     "https://bucket.s3.eu-west-1.amazonaws.com:443/a%20b/c%2Bd.jpg", RANGE),
    ("odd key: unicode, dots, doubled slashes", KEYS, "GET",
     "http://localhost:9000/b/%C3%BCn%C3%AF/x/../y//z~.bin", {"Range": "bytes=5-1004"}),
    ("a session token", WITH_TOKEN, "GET", "http://127.0.0.1:8333/bucket/k", RANGE),
    ("a listing query, values encoded", KEYS, "GET",
     "http://127.0.0.1:8333/bucket?continuation-token=a%2Fb%3D%3D&delimiter=%2F"
     "&encoding-type=url&list-type=2&max-keys=1000&prefix=images%2F", {}),
    ("header values with runs of spaces", KEYS, "GET", "http://127.0.0.1:8333/b/k",
     {"Range": "  bytes=0-9  ", "X-Custom": "a   b"}),
    ("an IPv6 endpoint", KEYS, "GET", "http://[::1]:8333/bucket/key", RANGE),
    ("upper-case host", KEYS, "GET", "http://LOCALHOST:8333/bucket/key", RANGE),
]


@pytest.mark.parametrize(("what", "credentials", "method", "url", "headers"), CASES,
                         ids=[c[0] for c in CASES])
def test_the_headers_are_botocores(monkeypatch: pytest.MonkeyPatch, what: str,
                                   credentials: Credentials, method: str, url: str,
                                   headers: dict[str, str]) -> None:
    expected = botocore_headers(monkeypatch, credentials, "eu-west-1", method, url, headers,
                                NOW)
    ours = SigV4Signer(credentials, "eu-west-1").sign(method, url, headers, EMPTY_SHA256,
                                                      now=NOW.timestamp())
    assert ours == expected


def test_an_unsigned_payload_put_is_signed_as_botocore_signs_it(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "http://127.0.0.1:8333/bucket/part.bin?partNumber=3&uploadId=abc%2Fdef"
    headers = {"Content-Length": "5242880", "Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="}
    expected = botocore_headers(monkeypatch, KEYS, "us-east-1", "PUT", url, headers, NOW,
                                unsigned=True)
    ours = SigV4Signer(KEYS, "us-east-1").sign("PUT", url, headers, UNSIGNED_PAYLOAD,
                                               now=NOW.timestamp())
    assert ours == expected


def test_the_cached_signing_key_follows_the_day_and_the_secret(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "http://127.0.0.1:8333/bucket/key"
    signer = SigV4Signer(KEYS, "us-east-1")
    for when in (NOW, NOW + datetime.timedelta(seconds=1), NOW + datetime.timedelta(days=3)):
        expected = botocore_headers(monkeypatch, KEYS, "us-east-1", "GET", url, RANGE, when)
        assert signer.sign("GET", url, RANGE, now=when.timestamp()) == expected
    rotated = Credentials("AKIDEXAMPLE", "another-secret")
    signer.credentials = rotated
    expected = botocore_headers(monkeypatch, rotated, "us-east-1", "GET", url, RANGE, NOW)
    assert signer.sign("GET", url, RANGE, now=NOW.timestamp()) == expected


@pytest.mark.parametrize(("url", "host"), [
    ("http://127.0.0.1:8333/b", "127.0.0.1:8333"),
    ("https://s3.amazonaws.com:443/b", "s3.amazonaws.com"),
    ("http://Example.COM:80/b", "example.com"),
    ("http://user:pw@example.com:81/b", "example.com:81"),
    ("http://[::1]:8333/b", "[::1]:8333"),
])
def test_the_host_header_is_the_one_signed(url: str, host: str) -> None:
    assert host_of(url) == host
