"""A ListObjectsV2 page parses to the ListPage boto3's answer gives, for a fraction of the CPU."""

import datetime

import pytest

from objmount.backends.base import BackendError, ObjectInfo
from objmount.backends.s3_list import mtime_ns, parse_list_page

PAGE = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name><Prefix>dir%2F</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys>
  <Delimiter>%2F</Delimiter><EncodingType>url</EncodingType>
  <IsTruncated>true</IsTruncated>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
  <Contents>
    <Key>dir%2Fcaf%C3%A9+au+lait%01.txt</Key>
    <LastModified>2024-05-01T12:00:00.250Z</LastModified>
    <ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag>
    <Size>12</Size><StorageClass>STANDARD</StorageClass>
  </Contents>
  <Contents>
    <Key>dir%2Fplain</Key><LastModified>2024-05-01T12:00:01.000Z</LastModified>
    <ETag>&quot;abc-2&quot;</ETag><Size>0</Size>
  </Contents>
  <CommonPrefixes><Prefix>dir%2Fsub+dir%2F</Prefix></CommonPrefixes>
</ListBucketResult>"""


def boto3_mtime_ns(*when: int) -> int:
    """S3Backend's mtime from boto3's datetime (float seconds, so .25 s is not exact)."""
    return int(datetime.datetime(*when, tzinfo=datetime.UTC).timestamp() * 1e9)


def test_a_page_gives_decoded_keys_unquoted_etags_and_the_next_token() -> None:
    page = parse_list_page(PAGE)
    assert page.objects == [
        ObjectInfo("dir/café au lait\x01.txt", 12, "9b2cf535f27731c974343645a3985328",
                   boto3_mtime_ns(2024, 5, 1, 12, 0, 0, 250_000)),
        ObjectInfo("dir/plain", 0, "abc-2", boto3_mtime_ns(2024, 5, 1, 12, 0, 1)),
    ]
    assert page.prefixes == ["dir/sub dir/"]
    assert page.next_token == "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="


def test_the_last_page_has_no_token_and_plain_keys_stay_as_they_are() -> None:
    body = (b"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a+b%2F</Key>"
            b"<LastModified>2024-05-01T12:00:00Z</LastModified><ETag>\"e\"</ETag>"
            b"<Size>1</Size></Contents></ListBucketResult>")
    page = parse_list_page(body)
    assert [o.key for o in page.objects] == ["a+b%2F"]  # no EncodingType: not decoded
    assert page.next_token is None and page.prefixes == []


def test_an_empty_listing_is_an_empty_page() -> None:
    body = b'<ListBucketResult xmlns="x"><IsTruncated>false</IsTruncated></ListBucketResult>'
    page = parse_list_page(body)
    assert page.objects == [] and page.prefixes == [] and page.next_token is None


@pytest.mark.parametrize("body", [b"<Error><Code>x</Code></Error>", b"<ListBucketResult><Con",
                                  b"<ListBucketResult><Contents><Size>x</Size></Contents>"
                                  b"</ListBucketResult>"])
def test_a_malformed_answer_is_a_transient_backend_error(body: bytes) -> None:
    with pytest.raises(BackendError) as raised:
        parse_list_page(body)
    assert raised.value.transient


def test_times_are_utc_with_or_without_the_z() -> None:
    utc = boto3_mtime_ns(2024, 5, 1, 12)
    assert mtime_ns("2024-05-01T12:00:00.000Z") == mtime_ns("2024-05-01T12:00:00") == utc
