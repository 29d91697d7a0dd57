"""Listing snapshots, stable inodes, ranged listings and stale-while-revalidate, for real.

Every mount here goes through a FaultProxy in front of the store's object and
listing requests, which counts what the mount asked (and can blackhole it).
"""

import contextlib
import errno
import os
import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from objmount.backends.base import PAGE_SIZE_ENV
from tests.integration.conftest import BIG_DIRECTORY_PAGE
from tests.integration.mounting import mounted
from tests.integration.stores import S3Store, SwiftStore, TestStore, put_many
from tests.servers.fault_proxy import FaultProxy, Rule
from tests.servers.net import wait_until
from tests.servers.s3_server import MotoS3Server
from tests.servers.swift_stack import SwiftStack

pytestmark = pytest.mark.mount

TREE = {f"train/class_{c}/img_{i}.jpg": f"{c}-{i}".encode() for c in range(3) for i in range(4)}
TREE["top.txt"] = b"top"
# A listing request: S3 ListObjectsV2, or a Swift container GET (JSON format).
LISTING = r"list-type=|format=json"


@contextlib.contextmanager
def relayed(store: TestStore, tmp_path: Path) -> Iterator[tuple[FaultProxy, Path]]:
    """A FaultProxy in front of the store, and an rclone.conf through it."""
    with FaultProxy(store.data_port) as proxy:
        conf = tmp_path / "rclone.conf"
        conf.write_text(store.rclone_section_through("remote", proxy.url))
        yield proxy, conf


@pytest.fixture
def relay(store: TestStore, tmp_path: Path) -> Iterator[tuple[FaultProxy, Path]]:
    with relayed(store, tmp_path) as both:
        yield both


def fill(store: TestStore, container: str, objects: dict[str, bytes] = TREE) -> None:
    store.create_container(container)
    put_many(store, container, objects)


def listings(proxy: FaultProxy, since: int = 0, pattern: str = LISTING) -> list[str]:
    """Targets of the listing requests the proxy relayed (after the first `since`)."""
    return [e.target for e in proxy.exchanges[since:]
            if e.method == "GET" and re.search(pattern, e.target.partition("?")[2])]


def walk(root: Path) -> dict[str, int]:
    """Every file under `root` with its inode number (a stat of each, as ImageFolder does)."""
    found = {}
    for top, _dirs, names in os.walk(root):
        for name in names:
            path = Path(top) / name
            found[str(path.relative_to(root))] = os.stat(path).st_ino
    return found


def lists_eventually(path: Path, wanted: set[str], deadline_s: float = 30) -> None:
    """`path` lists `wanted` before the deadline (an expired listing answers at once while
    it is re-listed in the background: a change shows a listing or two later)."""
    deadline = time.monotonic() + deadline_s
    while set(os.listdir(path)) != wanted:
        assert time.monotonic() < deadline, (sorted(os.listdir(path)), sorted(wanted))
        time.sleep(0.1)


def snapshot_files(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "listings-v1").glob("*-*.db"))


def test_a_snapshot_is_reused_on_remount_with_no_listing(
    store: TestStore, relay: tuple[FaultProxy, Path], tmp_path: Path
) -> None:
    proxy, conf = relay
    fill(store, "snap-reuse")
    cache = tmp_path / "cache"
    with mounted("remote:snap-reuse", tmp_path / "mnt", conf, "--cache-dir", str(cache)) as m:
        first = walk(m.path)
    assert len(first) == len(TREE) and len(snapshot_files(cache)) == 1
    before = len(proxy.exchanges)
    with mounted("remote:snap-reuse", tmp_path / "mnt", conf, "--cache-dir", str(cache)) as m:
        assert walk(m.path) == first  # the same names, the same inode numbers
        assert "listing snapshot found" in m.log()
        if store.kind == "s3":
            assert listings(proxy, before) == []  # within --snapshot-ttl: nothing listed
        else:  # Swift checks its token: a HEAD and three sampled pages, no directory
            assert listings(proxy, before, "delimiter=") == []


@pytest.fixture
def swift_relay(swift_stack: SwiftStack, tmp_path: Path
                ) -> Iterator[tuple[SwiftStore, FaultProxy, Path]]:
    store = SwiftStore(swift_stack)
    with relayed(store, tmp_path) as (proxy, conf):
        yield store, proxy, conf


@pytest.fixture
def s3_relay(moto_server: MotoS3Server, tmp_path: Path
             ) -> Iterator[tuple[S3Store, FaultProxy, Path]]:
    store = S3Store(moto_server)
    with relayed(store, tmp_path) as (proxy, conf):
        yield store, proxy, conf


def test_an_object_added_or_deleted_on_swift_shows_up_after_revalidation(
    swift_relay: tuple[SwiftStore, FaultProxy, Path], tmp_path: Path
) -> None:
    """Swift's container HEAD (object count, bytes, put timestamp) at mount."""
    store, _, conf = swift_relay
    fill(store, "snap-swift")
    cache = tmp_path / "cache"
    args = ("--cache-dir", str(cache), "--snapshot-ttl", "1h")
    with mounted("remote:snap-swift", tmp_path / "mnt", conf, *args) as m:
        walk(m.path)
    store.put("snap-swift", "train/class_0/added.jpg", b"new")
    store.delete("snap-swift", "top.txt")
    with mounted("remote:snap-swift", tmp_path / "mnt", conf, *args) as m:
        lists_eventually(m.path / "train" / "class_0",
                         {f"img_{i}.jpg" for i in range(4)} | {"added.jpg"})
        lists_eventually(m.path, {"train"})
        assert (m.path / "train" / "class_0" / "added.jpg").read_bytes() == b"new"
        assert m.log().count("listing snapshot is out of date") == 1


def test_an_s3_change_shows_up_after_the_snapshot_ttl(
    s3_relay: tuple[S3Store, FaultProxy, Path], tmp_path: Path
) -> None:
    """S3 has no change token: a snapshot is trusted for --snapshot-ttl, then re-listed."""
    store, _, conf = s3_relay
    fill(store, "snap-ttl")
    cache = tmp_path / "cache"
    args = ("--cache-dir", str(cache), "--snapshot-ttl", "3s", "--entry-timeout", "0",
            "--attr-timeout", "0")
    with mounted("remote:snap-ttl", tmp_path / "mnt", conf, *args) as m:
        walk(m.path)
    store.put("snap-ttl", "added.txt", b"new")
    started = time.monotonic()
    with mounted("remote:snap-ttl", tmp_path / "mnt", conf, *args) as m:
        if time.monotonic() - started < 2:  # within the TTL, the snapshot answers alone
            assert "added.txt" not in os.listdir(m.path)
        while time.monotonic() - started < 3.5:
            time.sleep(0.1)
        lists_eventually(m.path, {"train", "top.txt", "added.txt"})


@pytest.mark.parametrize("damage", ["garbage", "foreign version"])
def test_a_corrupt_or_foreign_version_snapshot_is_ignored_and_rebuilt(
    store: TestStore, relay: tuple[FaultProxy, Path], tmp_path: Path, damage: str
) -> None:
    _, conf = relay
    container = f"snap-{damage.split()[0]}"
    fill(store, container)
    cache = tmp_path / "cache"
    with mounted(f"remote:{container}", tmp_path / "mnt", conf, "--cache-dir", str(cache)) as m:
        expected = walk(m.path)
    (path,) = snapshot_files(cache)
    if damage == "garbage":
        path.write_bytes(b"\x00garbage" * 512)
    else:
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE meta SET value = 2 WHERE key = 'format'")
    with mounted(f"remote:{container}", tmp_path / "mnt", conf, "--cache-dir", str(cache)) as m:
        assert set(walk(m.path)) == set(expected)
        m.stop()
        assert m.log().count("ignoring the listing snapshot") == 1
    with sqlite3.connect(path) as conn:  # rebuilt by the walk
        assert dict(conn.execute("SELECT key, value FROM meta"))["format"] == 1


def test_forget_under_memory_pressure_keeps_inode_numbers_stable_for_open_files(
    store: TestStore, relay: tuple[FaultProxy, Path], tmp_path: Path
) -> None:
    _, conf = relay
    fill(store, "snap-forget")
    with mounted("remote:snap-forget", tmp_path / "mnt", conf) as m:
        inodes = walk(m.path)
        path = m.path / "train" / "class_1" / "img_2.jpg"
        with open(path, "rb") as opened:
            held = os.fstat(opened.fileno()).st_ino
            # The kernel drops every unused dentry and inode: FORGETs for all but the open file.
            subprocess.run(["sync"], check=True)
            Path("/proc/sys/vm/drop_caches").write_text("2\n")
            assert os.fstat(opened.fileno()).st_ino == held
            assert walk(m.path) == inodes  # looked up again: the same numbers
            assert opened.read() == TREE["train/class_1/img_2.jpg"]


def test_a_flat_directory_lists_exactly_through_ranged_parallel_listing(
    big_directory: set[str], store: TestStore, relay: tuple[FaultProxy, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """2,500 names in pages of 250 (an internal setting standing in for 25,000+ objects in
    pages of 1,000 or 10,000, which take minutes to upload here): the first page is
    full, so the rest is split into ranges listed at once."""
    proxy, conf = relay
    monkeypatch.setenv(PAGE_SIZE_ENV, str(BIG_DIRECTORY_PAGE))
    with mounted("remote:wide", tmp_path / "mnt", conf) as m:
        names = os.listdir(m.path / "many")
    assert len(names) == len(big_directory) and set(names) == big_directory
    ranged = listings(proxy, 0, "start-after=|end_marker=")
    assert len(ranged) >= 10  # split, not one page after another


def test_an_expired_directory_answers_from_its_old_listing_during_an_outage(
    store: TestStore, relay: tuple[FaultProxy, Path], tmp_path: Path
) -> None:
    """Issue 14: the store blackholes every listing; a listed directory whose listing has
    expired answers at once (while its re-listing is held), the failure is logged once
    and retried; only a never-listed directory waits, then fails."""
    proxy, conf = relay
    fill(store, "snap-outage", TREE | {"other/deeper/x.txt": b"x"})
    args = ("--dir-cache-time", "1s", "--timeout", "2s", "--retries", "0",
            "--entry-timeout", "0", "--attr-timeout", "0")
    with mounted("remote:snap-outage", tmp_path / "mnt", conf, *args) as m:
        classes = m.path / "train"
        assert sorted(os.listdir(classes)) == ["class_0", "class_1", "class_2"]
        time.sleep(1.2)  # expired
        blackhole = proxy.add(Rule(method="GET", query=LISTING, hold=True))
        for _ in range(3):
            assert sorted(os.listdir(classes)) == ["class_0", "class_1", "class_2"]
            assert (classes / "class_0" / "img_1.jpg").read_bytes() == b"0-1"
        # The background re-listing the first of them started is held (it may reach the
        # relay only after they answered: no order between the two).
        wait_until(lambda: any(e.rule is blackhole and e.status is None
                               for e in proxy.exchanges), 30, "the held re-listing")
        with pytest.raises(OSError) as never_listed:
            # Never listed (two levels down: not even listed ahead): it waits, then fails.
            os.listdir(m.path / "other" / "deeper")
        assert never_listed.value.errno == errno.EIO
        store.put("snap-outage", "train/class_3/img_0.jpg", b"back")
        deadline = time.monotonic() + 30
        # Used while the store is out: the old listing answers, its re-listing fails. (On
        # Swift 'train/' expires only once the container HEAD shows the change, and an
        # expired directory is re-listed when it is used.)
        while "cannot refresh the listing of 'train/'" not in m.log():
            assert sorted(os.listdir(classes)) == ["class_0", "class_1", "class_2"]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        blackhole.times = blackhole.applied  # the store is back
        lists_eventually(classes, {"class_0", "class_1", "class_2", "class_3"})
        m.stop()
        assert m.log().count("cannot refresh the listing of 'train/'") == 1
