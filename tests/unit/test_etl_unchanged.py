"""When the loader may skip a file: the object holds its content, by ETag or by manifest."""

from objmount.backends.base import ObjectInfo
from objmount.etl.load import unchanged
from objmount.etl.manifest import Entry

MD5 = "5d41402abc4b2a76b9719d911017c592"
LOCAL = Entry(key="a.jpg", size=5, md5=MD5, etag="")


def listed(size: int = 5, etag: str = MD5) -> ObjectInfo:
    return ObjectInfo(key="a.jpg", size=size, etag=etag, mtime_ns=0)


def test_a_missing_object_is_uploaded() -> None:
    assert not unchanged(LOCAL, None, None)


def test_a_single_part_object_whose_etag_is_the_md5_is_skipped() -> None:
    assert unchanged(LOCAL, listed(), None)


def test_a_different_size_is_uploaded_whatever_the_etag() -> None:
    assert not unchanged(LOCAL, listed(size=6), None)


def test_a_segmented_object_is_skipped_only_if_the_manifest_vouches_for_its_etag() -> None:
    segmented = listed(etag="9b2cf535f27731c974343645a3985328-3")
    assert not unchanged(LOCAL, segmented, None)
    assert unchanged(LOCAL, segmented, Entry("a.jpg", 5, MD5, segmented.etag))


def test_a_manifest_entry_for_another_etag_is_stale() -> None:
    rewritten = listed(etag="0cc175b9c0f1b6a831c399e269772661-2")
    assert not unchanged(LOCAL, rewritten, Entry("a.jpg", 5, MD5, "older-etag-3"))


def test_a_manifest_entry_for_other_content_does_not_match() -> None:
    segmented = listed(etag="9b2cf535f27731c974343645a3985328-3")
    assert not unchanged(LOCAL, segmented, Entry("a.jpg", 5, "other-md5", segmented.etag))
