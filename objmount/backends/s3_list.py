"""Parse one ListObjectsV2 page (the XML s3_get.S3Getter.list_objects returns).

boto3 parses every LastModified with dateutil (~40 µs each, most of the CPU of
a cold `ls -lR`); here ElementTree's C parser and datetime.fromisoformat give
the same ListPage for a few µs per object.

Invariants: the page equals what S3Backend builds from boto3's list_objects_v2
for the same answer (keys URL-decoded as botocore decodes them, ETag unquoted,
mtime in ns); an answer that is not a well-formed ListBucketResult raises a
transient BackendError (a cut answer may come whole on a retry).
"""

import datetime
from urllib.parse import unquote_plus
from xml.etree import ElementTree

from objmount.backends.base import BackendError, ListPage, ObjectInfo


def parse_list_page(body: bytes) -> ListPage:
    """Return the objects, common prefixes and continuation token of one page."""
    try:
        return _parse(ElementTree.fromstring(body))
    except (ElementTree.ParseError, ValueError) as exc:
        raise BackendError(f"malformed listing from the store: {exc}", transient=True) from None


def _parse(root: ElementTree.Element) -> ListPage:
    # S3 qualifies every tag with its 2006-03-01 namespace; some servers use none.
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    if root.tag != f"{ns}ListBucketResult":
        raise ValueError(f"not a ListObjectsV2 answer: <{root.tag}>")
    decode = unquote_plus if root.findtext(f"{ns}EncodingType") == "url" else str
    key_tag, size_tag, etag_tag, mtime_tag = (f"{ns}{t}" for t in
                                              ("Key", "Size", "ETag", "LastModified"))
    objects = [
        ObjectInfo(
            key=decode(item.findtext(key_tag, "")),
            size=int(item.findtext(size_tag, "0")),
            etag=item.findtext(etag_tag, "").strip('"'),
            mtime_ns=mtime_ns(item.findtext(mtime_tag, "")),
        )
        for item in root.iterfind(f"{ns}Contents")
    ]
    prefixes = [decode(item.findtext(f"{ns}Prefix", ""))
                for item in root.iterfind(f"{ns}CommonPrefixes")]
    truncated = root.findtext(f"{ns}IsTruncated") == "true"
    token = root.findtext(f"{ns}NextContinuationToken") if truncated else None
    return ListPage(objects=objects, prefixes=prefixes, next_token=token)


def mtime_ns(text: str) -> int:
    """Return an S3 timestamp ('2024-05-01T12:00:00.000Z') in ns since the epoch (UTC)."""
    when = datetime.datetime.fromisoformat(text)
    if when.tzinfo is None:  # S3 times are UTC, with or without the 'Z'
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp() * 1e9)
