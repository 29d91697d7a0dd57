"""The kernel's page cache across versions: keep it, bypass it, or drop it (no FUSE mount).

PageCacheVersions alone, then through ReadOnlyOperations over an in-process
backend, whose objects have no ETag: their version is size + mtime, so a
replaced object never keeps the old pages because "" == "".
"""

import os
import threading

import trio

from objmount.backends.base import ObjectInfo
from objmount.backends.runner import Runner
from objmount.cache.blocks import block_key
from objmount.fs import AttrSettings, ReadOnlyOperations
from objmount.namespace.tree import ROOT_INODE, Namespace
from objmount.pagecache import OpenMode, PageCacheVersions
from objmount.readpath_base import DirectReadPath
from tests.unit.fake_backend import FakeBackend
from tests.unit.trio_test import trio_test

CACHED = OpenMode(keep_cache=False, direct_io=False)
KEPT = OpenMode(keep_cache=True, direct_io=False)
DIRECT = OpenMode(keep_cache=False, direct_io=True)


def test_the_same_version_keeps_the_pages_once_they_hold_it() -> None:
    pages = PageCacheVersions()
    assert pages.opened(7, "v1") == CACHED
    assert pages.opened(7, "v1") == KEPT
    assert not pages.released(7, "v1", CACHED, current="v1")
    assert not pages.released(7, "v1", KEPT, current="v1")
    assert pages.opened(7, "v1") == KEPT  # still the current version: pages still good


def test_a_new_version_opened_while_an_old_one_is_open_bypasses_the_pages() -> None:
    pages = PageCacheVersions()
    old = pages.opened(7, "v1")
    assert pages.opened(7, "v2") == DIRECT
    assert pages.opened(7, "v2") == DIRECT  # as long as v1 is open
    # The last old handle closes: its pages go, and v2 may use the page cache.
    assert pages.released(7, "v1", old, current="v2")
    assert pages.opened(7, "v2") == CACHED  # not KEPT: nothing of v2 was cached
    assert not pages.released(7, "v2", DIRECT, current="v2")


def test_an_old_version_closing_after_the_object_changed_drops_its_pages() -> None:
    pages = PageCacheVersions()
    mode = pages.opened(7, "v1")
    assert pages.released(7, "v1", mode, current="v2")
    assert pages.opened(7, "v2") == CACHED
    # A file that became a directory: its pages go as well.
    mode = pages.opened(8, "v1")
    assert pages.released(8, "v1", mode, current=None)


def test_only_the_last_page_cache_reader_of_a_version_drops_its_pages() -> None:
    pages = PageCacheVersions()
    first, second = pages.opened(7, "v1"), pages.opened(7, "v1")
    newer = pages.opened(7, "v2")
    late_old = pages.opened(7, "v1")  # v2 is open: this one bypasses too
    assert late_old == DIRECT
    assert not pages.released(7, "v1", first, current="v2")
    assert not pages.released(7, "v1", late_old, current="v2")  # never used the pages
    assert pages.released(7, "v1", second, current="v2")
    assert not pages.released(7, "v2", newer, current="v2")


def test_inodes_are_independent() -> None:
    pages = PageCacheVersions()
    pages.opened(7, "v1")
    assert pages.opened(8, "v2") == CACHED


def test_the_version_rule_is_the_block_keys() -> None:
    """fs.py and the block cache compare the same string (ObjectInfo.version)."""
    for obj in (ObjectInfo("k", 10, "abc", 5), ObjectInfo("k", 10, "", 5)):
        assert block_key("src", obj, 4, 1).etag == obj.version  # BlockKey.etag: the version
    assert ObjectInfo("k", 10, "", 5).version != ObjectInfo("k", 11, "", 5).version
    assert ObjectInfo("k", 10, "", 5).version != ObjectInfo("k", 10, "", 6).version


class NoETagBackend(FakeBackend):
    """Objects without ETags (as some S3-compatible servers list them); mtime per put."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        super().__init__(objects)
        self.mtimes = dict.fromkeys(objects, 1)

    def put(self, key: str, data: bytes) -> None:
        self.objects[key] = data
        self.mtimes[key] = self.mtimes.get(key, 0) + 1

    def info(self, key: str) -> ObjectInfo:
        return ObjectInfo(key=key, size=len(self.objects[key]), etag="",
                          mtime_ns=self.mtimes[key])


def operations(backend: FakeBackend, invalidate) -> ReadOnlyOperations:
    runner = Runner(4, retries=0)
    # dir-cache time 0: every use re-lists (in the background), as the mount test does.
    namespace = Namespace(backend, runner, "", 0.0)
    attrs = AttrSettings(uid=0, gid=0, umask=0o022, attr_timeout_s=60, entry_timeout_s=60,
                         mount_time_ns=0)
    return ReadOnlyOperations(namespace, DirectReadPath(backend, runner), attrs,
                              invalidate_inode=invalidate,
                              invalidate_entry=lambda parent, name: None)


async def relisted(namespace: Namespace, inode: int, version: str) -> None:
    """Use the root (its listing has expired) until a background re-listing shows another
    version of `inode`'s name than `version` (one in flight may predate the change)."""
    with trio.fail_after(20):
        while (current := namespace.current(inode)) is None or current.version == version:
            await namespace.children(ROOT_INODE)
            await trio.sleep(0.01)


@trio_test
async def test_an_object_without_an_etag_never_keeps_the_pages_of_its_old_version() -> None:
    backend = NoETagBackend({"f.bin": b"old bytes"})
    invalidated: list[int] = []
    sent = threading.Event()

    def invalidate(inode: int) -> None:
        invalidated.append(inode)
        sent.set()

    ops = operations(backend, invalidate)
    async with trio.open_nursery() as nursery:
        await nursery.start(ops.serve)
        await nursery.start(ops.namespace.serve)
        inode = (await ops.lookup(ROOT_INODE, b"f.bin", None)).st_ino

        async def opened() -> tuple[int, OpenMode]:
            info = await ops.open(inode, os.O_RDONLY, None)
            return info.fh, OpenMode(bool(info.keep_cache), bool(info.direct_io))

        fh, mode = await opened()
        assert mode == CACHED
        await ops.release(fh)
        fh, mode = await opened()
        assert mode == KEPT  # unchanged: size and mtime are the same
        assert await ops.read(fh, 0, 100) == b"old bytes"

        old_version = ops.namespace.current(inode).version
        backend.put("f.bin", b"new bytes")  # same size, new mtime, still no ETag
        await relisted(ops.namespace, inode, old_version)
        new_fh, new_mode = await opened()
        assert new_mode == DIRECT  # the old version is still open
        assert await ops.read(new_fh, 0, 100) == b"new bytes"
        assert not invalidated
        await ops.release(fh)  # the last old handle: its pages go, from a worker thread
        assert await trio.to_thread.run_sync(sent.wait, 10)
        assert invalidated == [inode]
        await ops.release(new_fh)

        fh, mode = await opened()
        assert mode == CACHED  # never KEPT: the old version's pages are not the new one's
        await ops.release(fh)
        nursery.cancel_scope.cancel()
