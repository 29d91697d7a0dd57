"""The block cache against another local user, through real mounts on every backend (issue 11,
items 5 and 6): a crafted cache directory never runs code, never serves planted bytes, never
makes objmount touch anything outside it; a directory others control is refused before
mounting; what a mount writes is private; `warm` never trusts another user's mount.

The other user is `nobody`, acting through setpriv and plain commands (tests/crafted_cache.py).
"""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from objmount.backends import Timeouts, open_backend
from objmount.cache.blocks import BlockStore
from objmount.cache.index import FILE_NAME
from objmount.cache.keys import BlockKey, name_of
from objmount.cache.settings import source_for
from objmount.config import load_remotes, parse_target
from objmount.mountpoint import is_mounted
from tests.crafted_cache import (
    NOBODY,
    SYSTEM_PYTHON,
    as_nobody,
    foreign_area,
    old_layout_sql,
    write_database,
)
from tests.integration.conftest import data
from tests.integration.mounting import force_unmount, mounted, objmount, read_everything
from tests.integration.mounting import mount_stats as stats
from tests.integration.stores import TestStore, put_many
from tests.servers.net import wait_until

pytestmark = pytest.mark.mount

MiB = 1 << 20
CONTAINER = "cache-private"
# Four objects of one size: a block file of one fits the name of another but for its key.
SAME_SIZE = {f"planted/{name}.bin": data(f"planted-{name}", 50_000) for name in "abcd"}
SHARDS = {f"shards/s{i}.bin": data(f"shard-{i}", 2 * MiB + i) for i in range(3)}
BLOCK_ARGS = ("--block-size", "1M", "--dir-read-ahead", "0")


@pytest.fixture(scope="module")
def private_data(store: TestStore) -> dict[str, bytes]:
    objects = SAME_SIZE | SHARDS
    store.create_container(CONTAINER)
    put_many(store, CONTAINER, objects)
    return objects


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("objmount: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def take_over(directory: Path) -> None:
    """What the user does with a cache directory made elsewhere: chown it, close its mode."""
    subprocess.run(["chown", "-R", "0:0", str(directory)], check=True)
    for path in [directory, *directory.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o700 if path.is_dir() else 0o600)


def tree(area: Path, leave_out: Path) -> dict[str, bytes | str]:
    """Everything under `area` but `leave_out`: file contents, link targets."""
    found: dict[str, bytes | str] = {}
    for path in sorted(area.rglob("*")):
        if path == leave_out or leave_out in path.parents:
            continue
        if path.is_symlink():
            found[str(path)] = os.readlink(path)
        elif path.is_file():
            found[str(path)] = path.read_bytes()
    return found


def mount_once(config: Path, mountpoint: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    """Run a foreground mount that is expected to refuse; unmount if it did not."""
    mountpoint.mkdir(exist_ok=True)
    try:
        return objmount("mount", f"remote:{CONTAINER}", str(mountpoint), "--config",
                        str(config), "--cache-dir", str(cache_dir), timeout_s=30)
    finally:
        force_unmount(mountpoint)


def test_a_crafted_old_layout_never_runs_its_pickle(
    private_data: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    """An old diskcache cache.db planted by another user, with pickles in its keys and
    values: refused while it is theirs; once the user owns it, never opened (stats, verify,
    a mount's reads, clear), and `cache clear` removes it."""
    target = parse_target(f"remote:{CONTAINER}", load_remotes(config))
    # The ETag a mount lists for it (and keys its blocks by): its listing's, as the backend's.
    (listed,) = open_backend(target, Timeouts()).list_page("planted/a.bin", None, None).objects
    etag = listed.etag
    source = source_for(target)
    with foreign_area() as area:
        marker = area / "pickle-ran"
        outside = area / "outside"
        outside.write_bytes(b"precious")
        cache = area / "theirs" / "cache"
        as_nobody("mkdir", str(cache))
        # A row of a block a mount reads first (on the old store, its value is unpickled),
        # a row whose key is the pickle, a row "stored" in a file outside.
        old_key = ("b2", source, "planted/a.bin", etag, 0, 50_000)
        write_database(cache / "cache.db", old_layout_sql(marker, [old_key], [str(outside)]),
                       as_other_user=True)
        for command in (("cache", "stats"), ("cache", "verify"), ("cache", "clear")):
            assert_one_line_error(objmount(*command, "--cache-dir", str(cache)),
                                  "belongs to uid 65534")
        assert_one_line_error(mount_once(config, tmp_path / "mnt", cache), "belongs to uid 65534")
        assert not marker.exists()

        take_over(area / "theirs")
        listed = objmount("cache", "stats", "--cache-dir", str(cache))
        assert listed.returncode == 0, listed.stderr
        assert "older objmount's cache layout: 1 files" in listed.stdout
        verified = objmount("cache", "verify", "--cache-dir", str(cache))
        assert verified.returncode == 0 and "checked 0 blocks" in verified.stderr
        with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", config, "--cache-dir",
                     str(cache), *BLOCK_ARGS) as mount:
            read_everything(mount, SAME_SIZE)
            log = mount.log()
        assert "older objmount's cache layout" in log
        cleared = objmount("cache", "clear", "--cache-dir", str(cache))
        assert cleared.returncode == 0, cleared.stderr
        assert "and the older cache layout (1 files)" in cleared.stderr
        assert not (cache / "cache.db").exists()
        assert not marker.exists()
        assert outside.read_bytes() == b"precious"


def block_file_of(cache_dir: Path, content: bytes) -> Path:
    """The block file holding `content` (a one-block object): its data ends the file."""
    (path,) = [p for p in cache_dir.rglob("*.blk") if p.read_bytes().endswith(content)]
    return path


def test_a_planted_block_file_is_never_served(
    private_data: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    """A block's file under another block's name, a file of the right size with wrong
    bytes, a good copy that another user owns: each read is byte-exact (a refetch)."""
    cache = tmp_path / "cache"
    args = ("--cache-dir", str(cache), *BLOCK_ARGS)
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", config, *args) as mount:
        read_everything(mount, SAME_SIZE)
        wait_until(lambda: stats(mount)["blocks_stored"] == len(SAME_SIZE), 30, "block writes")
    a, b, c, d = (block_file_of(cache, SAME_SIZE[f"planted/{n}.bin"]) for n in "abcd")
    shutil.copyfile(a, b)  # the right bytes for a, at b's name
    c.write_bytes(c.read_bytes()[:-50_000] + data("wrong", 50_000))
    with foreign_area() as area:
        theirs = area / "theirs"
        (area / "source").write_bytes(d.read_bytes())
        (area / "source").chmod(0o644)
        as_nobody("cp", str(area / "source"), str(theirs / "planted"))
        shutil.move(theirs / "planted", d)  # a rename: it stays nobody's
    assert d.stat().st_uid == NOBODY
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", config, *args) as mount:
        read_everything(mount, SAME_SIZE)
        after = stats(mount)
    assert after["gets"] == 3
    assert after["corrupt_blocks"] >= 3


def test_hostile_rows_never_make_verify_clear_or_eviction_touch_anything_outside(
    private_data: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    """Rows planted by another user (in the v3 index and an old cache.db) name paths
    outside, or a block whose file is a symlink out: `cache verify`, a mount that evicts,
    and `cache clear` leave everything outside the cache directory as it was."""
    with foreign_area() as area:
        theirs = area / "theirs"
        cache = theirs / "cache"
        (area / "root-file").write_bytes(b"precious")
        as_nobody("sh", "-c", f"echo theirs > {theirs / 'their-file'}")
        BlockStore(tmp_path / "template", max_size_bytes=1 << 30).close()
        shutil.copytree(tmp_path / "template", cache)
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(cache)], check=True)
        linked = BlockKey("s3:http://x/c", "linked", "e", 0, 100)
        linked_path = cache / "blocks-v3" / name_of(linked)[:2] / f"{name_of(linked)}.blk"
        rows = [(f"../../../{name}", b"s", b"k", b"e", 0, 100, 4096, 0)
                for name in ("root-file", "their-file")]
        rows += [(str(area / "root-file"), b"s", b"k", b"e", 0, 100, 4096, 0),
                 ("0" * 32, b"s", b"k", b"e", 0, 100, 4096, 0),
                 (name_of(linked), b"s3:http://x/c", b"linked", b"e", 0, 100, 4096, 0)]
        insert = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                  "c.executemany('INSERT INTO blocks VALUES (?,?,?,?,?,?,?,?)', eval(sys.argv[2]));"
                  " c.commit()")
        as_nobody(SYSTEM_PYTHON, "-c", insert, str(cache / FILE_NAME), repr(rows))
        as_nobody("ln", "-s", str(area / "root-file"), str(linked_path))
        write_database(cache / "cache.db", old_layout_sql(
            area / "pickle-ran", [], [str(area / "root-file"), "../../root-file"]),
            as_other_user=True)
        take_over(theirs)
        before = tree(area, cache)

        verified = objmount("cache", "verify", "--cache-dir", str(cache))
        assert verified.returncode == 0, verified.stderr
        with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", config, "--cache-dir",
                     str(cache), "--cache-max-size", "4M", *BLOCK_ARGS) as mount:
            read_everything(mount, SHARDS)  # 6 MiB through a 4 MiB cache: evictions
            read_everything(mount, SHARDS)
        cleared = objmount("cache", "clear", "--cache-dir", str(cache))
        assert cleared.returncode == 0, cleared.stderr
        assert tree(area, cache) == before
        assert (area / "root-file").read_bytes() == b"precious"
        assert not linked_path.is_symlink()
        assert not (area / "pickle-ran").exists()


@pytest.mark.parametrize("kind", ["owned by another user", "group-writable", "world-writable"])
def test_a_cache_dir_others_control_is_refused_before_mounting(
    private_data: dict[str, bytes], config: Path, tmp_path: Path, kind: str
) -> None:
    with foreign_area() as area:
        cache = area / "cache"
        cache.mkdir(mode=0o700)
        if kind == "owned by another user":
            os.chown(cache, NOBODY, NOBODY)
            why = "belongs to uid 65534"
        else:
            cache.chmod(0o770 if kind == "group-writable" else 0o777)
            why = "is writable by other users"
        result = mount_once(config, tmp_path / "mnt", cache)
        assert_one_line_error(result, str(cache), why, "--cache-dir")
        assert not is_mounted(tmp_path / "mnt")
        warmed = objmount("warm", f"remote:{CONTAINER}/planted", "--config", str(config),
                          "--cache-dir", str(cache))
        assert_one_line_error(warmed, why)
        assert_one_line_error(objmount("cache", "stats", "--cache-dir", str(cache)), why)
        assert os.listdir(cache) == []


def modes(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): stat.S_IMODE(p.lstat().st_mode)
            for p in [directory, *directory.rglob("*")]}


def test_what_a_mount_writes_in_its_cache_is_private_whatever_the_umask(
    private_data: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", config, "--cache-dir", str(cache),
                 *BLOCK_ARGS, wrapper=("sh", "-c", 'umask 000 && exec "$@"', "sh")) as mount:
        read_everything(mount, private_data)
        blocks = sum(-(-len(content) // MiB) for content in private_data.values())
        wait_until(lambda: stats(mount)["blocks_stored"] == blocks, 30, "block writes")
        during = modes(cache)
    after = modes(cache)
    assert "index-v3.db-wal" in during and "index-v3.db-shm" in during
    assert sum(name.endswith(".blk") for name in during) == blocks
    for seen in (during, after):
        for name, mode in seen.items():
            assert mode == (0o700 if (cache / name).is_dir() else 0o600), (name, oct(mode))


def test_warm_never_trusts_a_mount_another_user_made(
    private_data: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    """A mount whose user_id is nobody's (its process runs with real uid nobody): its root
    xattr could name any cache directory, so `warm PATH` refuses it in one line."""
    cache = tmp_path / "cache"
    with foreign_area() as area:
        # The CLI checks the config and the mountpoint with access(2), as the real uid.
        readable = area / "rclone.conf"
        shutil.copyfile(config, readable)
        readable.chmod(0o644)
        with mounted(f"remote:{CONTAINER}", area / "mnt", readable, "--cache-dir",
                     str(cache), "--allow-other", *BLOCK_ARGS,
                     wrapper=("setpriv", f"--ruid={NOBODY}")) as mount:
            line = next(line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                        if line.split()[4] == str(mount.path))
            assert f"user_id={NOBODY}" in line.split(" - ")[1]
            warmed = objmount("warm", str(mount.path / "planted"))
            assert_one_line_error(warmed, f"was mounted by uid {NOBODY}", "trusts only")
    assert list(cache.rglob("*.blk")) == []
