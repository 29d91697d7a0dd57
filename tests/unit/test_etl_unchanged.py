"""When the loader may skip a file: the object holds its content, by ETag or by manifest."""

from dataclasses import replace
from pathlib import Path

from objmount.backends.base import ObjectInfo
from objmount.etl.load import LocalFile, unchanged, unmodified
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


def local_file(size: int = 5, mtime_ns: int = 1_700_000_000_000_000_000) -> LocalFile:
    return LocalFile(key="a.jpg", path=Path("a.jpg"), size=size, mtime_ns=mtime_ns)


RECORDED = Entry("a.jpg", 5, MD5, "9b2cf535f27731c974343645a3985328-3",
                 mtime_ns=1_700_000_000_000_000_000)


def test_a_file_with_the_recorded_size_and_mtime_is_not_hashed_again() -> None:
    assert unmodified(local_file(), listed(etag=RECORDED.etag), RECORDED)


def test_a_file_with_another_mtime_or_size_is_hashed() -> None:
    assert not unmodified(local_file(mtime_ns=RECORDED.mtime_ns + 1), listed(etag=RECORDED.etag),
                          RECORDED)
    assert not unmodified(local_file(size=6), listed(size=6, etag=RECORDED.etag), RECORDED)


def test_a_rewritten_object_or_an_entry_without_mtime_means_hashing() -> None:
    assert not unmodified(local_file(), listed(etag="0cc175b9c0f1b6a831c399e269772661-2"),
                          RECORDED)
    assert not unmodified(local_file(), None, RECORDED)
    assert not unmodified(local_file(), listed(etag=RECORDED.etag),
                          replace(RECORDED, mtime_ns=None))


def test_a_touched_file_with_the_same_content_is_still_unchanged() -> None:
    touched = replace(LOCAL, mtime_ns=RECORDED.mtime_ns + 1)
    assert unchanged(touched, listed(etag=RECORDED.etag), RECORDED)
