"""The block cache through real mounts, on every backend: GETs are counted by the mount
itself (the `gets` counter of the root xattr user.objmount.stats)."""

import os
import random
import threading
from pathlib import Path

import pytest

from tests.crafted_cache import du_bytes
from tests.integration.cache_kit import (
    all_written,
    block_files,
    cached_block_bytes,
    flip_a_byte,
    reread,
    root_mount,
    truncate_in_place,
)
from tests.integration.conftest import data
from tests.integration.mounting import mount_stats as stats
from tests.integration.mounting import mounted, objmount, read_everything, wait_for_version
from tests.integration.stores import TestStore, put_many
from tests.servers.net import wait_until

pytestmark = pytest.mark.mount

MiB = 1 << 20
CONTAINER = "cache-data"
# Small files as in an ImageFolder, and a shard of several blocks (at --block-size 1M).
SMALL = {f"images/class_{i % 3}/img_{i:03d}.jpg": 20_000 + 9_000 * i for i in range(20)}
SHARD = {"shards/shard-0.bin": 12 * MiB + 3}
BLOCK_ARGS = ("--block-size", "1M")


@pytest.fixture(scope="module")
def cache_data(store: TestStore) -> dict[str, bytes]:
    """Container `cache-data`: 20 small files and one 12 MiB shard."""
    objects = {key: data(key, size) for key, size in (SMALL | SHARD).items()}
    store.create_container(CONTAINER)
    put_many(store, CONTAINER, objects)
    return objects


def test_a_remount_with_the_same_cache_reads_with_zero_gets(
    cache_data: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    args = ("--cache-dir", str(cache_dir), *BLOCK_ARGS)
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", config, *args) as mount:
        read_everything(mount, cache_data)
        first = stats(mount)
    assert first["gets"] >= len(cache_data)
    assert first["cache_misses"] > 0
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt2", config, *args) as mount:
        read_everything(mount, cache_data)
        second = stats(mount)
    assert second["gets"] == 0
    assert second["cache_hits"] > 0


def test_small_files_cost_one_get_each(
    cache_data: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    small = {key: cache_data[key] for key in SMALL}
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", config) as mount:
        read_everything(mount, small)
        assert stats(mount)["gets"] == len(small)


def test_reading_a_directory_file_by_file_fetches_its_other_files_ahead(
    cache_data: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    """Two cold opens in one directory start its read-ahead: the other files are then
    fetched in the background, each file still costs one GET, and later opens hit."""
    keys = sorted(key for key in SMALL if key.startswith("images/class_0/"))
    random.Random(3).shuffle(keys)
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", config) as mount:
        for key in keys[:2]:
            assert (mount.path / key).read_bytes() == cache_data[key]
        wait_until(lambda: stats(mount)["dir_ahead_gets"] == len(keys) - 2, 30,
                   "directory read-ahead")
        for key in keys[2:]:
            assert (mount.path / key).read_bytes() == cache_data[key]
        counts = stats(mount)
    assert counts["gets"] == len(keys)
    assert counts["cache_misses"] == 2


def test_directory_read_ahead_zero_fetches_only_what_is_opened(
    cache_data: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    small = {key: cache_data[key] for key in SMALL}
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", config,
                 "--dir-read-ahead", "0") as mount:
        read_everything(mount, small)
        counts = stats(mount)
    assert counts["dir_ahead_gets"] == 0
    assert counts["cache_misses"] == counts["gets"] == len(small)


def test_eviction_keeps_the_cache_under_its_max_size(
    cache_data: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    """--cache-max-size covers everything in the cache directory, the index included, as
    du counts it."""
    cache_dir = tmp_path / "cache"
    args = ("--cache-dir", str(cache_dir), "--cache-max-size", "4M", *BLOCK_ARGS)
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", config, *args) as mount:
        read_everything(mount, cache_data)  # 13.5 MiB through a 4 MiB cache
        read_everything(mount, {key: cache_data[key] for key in SHARD})
        assert stats(mount)["blocks_stored"] > 3
    assert cached_block_bytes(cache_dir) > 0
    assert du_bytes(cache_dir) <= 4 * MiB


def test_a_changed_object_reads_its_new_bytes(
    store: TestStore, config: Path, tmp_path: Path
) -> None:
    store.create_container("cache-versions")
    store.put("cache-versions", "model.bin", data("v1", 3 * MiB))
    args = ("--cache-dir", str(tmp_path / "cache"), *BLOCK_ARGS)
    with mounted("remote:cache-versions", tmp_path / "mnt", config, *args) as mount:
        assert (mount.path / "model.bin").read_bytes() == data("v1", 3 * MiB)
    store.put("cache-versions", "model.bin", data("v2", 3 * MiB))  # same size, new ETag
    # The first mount left its listing as a snapshot: expired at once, it answers until
    # its re-listing (behind) finds the new version.
    with mounted("remote:cache-versions", tmp_path / "mnt2", config, *args,
                 "--snapshot-ttl", "0s") as mount:
        wait_for_version(mount.path / "model.bin", data("v2", 3 * MiB))
        assert (mount.path / "model.bin").read_bytes() == data("v2", 3 * MiB)
        assert stats(mount)["gets"] == 3


def test_a_corrupt_block_file_is_refetched(
    cache_data: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    args = ("--cache-dir", str(cache_dir), *BLOCK_ARGS)
    shard = {key: cache_data[key] for key in SHARD}
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", config, *args) as mount:
        read_everything(mount, shard)
    files = block_files(cache_dir)
    assert len(files) == 13
    for path in files[:4]:
        flip_a_byte(path)
    truncate_in_place(files[4], "half")  # (the last block is 3 bytes)
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt2", config, *args) as mount:
        read_everything(mount, shard)
        after = stats(mount)
    assert after["corrupt_blocks"] >= 5  # a block read twice at once may be found bad twice
    assert after["gets"] == 5


def test_a_block_file_changed_while_the_mount_keeps_it_open_is_never_served(
    store: TestStore, config: Path, tmp_path: Path
) -> None:
    """The fast path (a block file kept open, read on the mount's event loop) serves only
    verified bytes: a file corrupted in place, replaced by another block's file, or
    removed is read again from disk or fetched again, never served."""
    store.create_container("cache-fast")
    objects = {"a.jpg": data("fast-a", 150_000), "b.jpg": data("fast-b", 150_000)}
    put_many(store, "cache-fast", objects)
    cache_dir = tmp_path / "cache"
    args = ("--cache-dir", str(cache_dir), "--dir-read-ahead", "0")
    with mounted("remote:cache-fast", tmp_path / "mnt", config, *args) as mount:
        a, b = mount.path / "a.jpg", mount.path / "b.jpg"
        assert a.read_bytes() == objects["a.jpg"]
        all_written(mount)
        (a_file,) = cache_dir.rglob("*.blk")
        assert reread(a) == objects["a.jpg"]
        assert stats(mount)["fast_disk_hits"] == 1
        with open(a_file, "r+b") as f:  # in place: the inode the mount holds open
            f.seek(-5000, os.SEEK_END)
            byte = f.read(1)[0]
            f.seek(-5000, os.SEEK_END)
            f.write(bytes([byte ^ 0x10]))
        assert reread(a) == objects["a.jpg"]
        assert (stats(mount)["corrupt_blocks"], stats(mount)["gets"]) == (1, 2)
        assert b.read_bytes() == objects["b.jpg"]
        all_written(mount)
        (b_file,) = set(cache_dir.rglob("*.blk")) - {a_file}
        planted = a_file.with_name(".planted")
        planted.write_bytes(b_file.read_bytes())  # a valid block file, of another block
        os.rename(planted, a_file)
        assert reread(a) == objects["a.jpg"]
        assert (stats(mount)["corrupt_blocks"], stats(mount)["gets"]) == (2, 4)
        all_written(mount)
        a_file.unlink()  # evicted by another process
        assert reread(a) == objects["a.jpg"]
        assert stats(mount)["gets"] == 5


def test_concurrent_readers_are_byte_exact(
    cache_data: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    shard_key, shard = next(iter({k: cache_data[k] for k in SHARD}.items()))
    errors: list[str] = []
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", config, *BLOCK_ARGS) as mount:

        def sequential(_: int) -> None:
            if (mount.path / shard_key).read_bytes() != shard:
                errors.append("sequential read of the shard differs")

        def random_preads(seed: int) -> None:
            rng = random.Random(seed)
            fd = os.open(mount.path / shard_key, os.O_RDONLY)
            try:
                for _ in range(50):
                    offset = rng.randrange(len(shard))
                    size = rng.choice([100, 4096, 65536, 1 << 20])
                    if os.pread(fd, size, offset) != shard[offset : offset + size]:
                        errors.append(f"pread({size}, {offset}) differs")
            finally:
                os.close(fd)

        def small_files(seed: int) -> None:
            keys = list(SMALL)
            random.Random(seed).shuffle(keys)
            for key in keys:
                if (mount.path / key).read_bytes() != cache_data[key]:
                    errors.append(f"{key} differs")

        threads = [threading.Thread(target=fn, args=(i,))
                   for i in range(4) for fn in (sequential, random_preads, small_files)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []


def test_warm_fills_the_cache_then_the_mount_reads_with_no_gets(
    cache_data: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    result = objmount("warm", f"remote:{CONTAINER}/images", "--config", str(config),
                      "--cache-dir", str(cache_dir), *BLOCK_ARGS)
    assert result.returncode == 0, result.stderr
    assert f"warmed {len(SMALL)} objects" in result.stderr
    images = {key: cache_data[key] for key in SMALL}
    args = ("--cache-dir", str(cache_dir), *BLOCK_ARGS)
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", config, *args) as mount:
        read_everything(mount, images)
        assert stats(mount)["gets"] == 0
        # Warming again while mounted fetches nothing new.
        again = objmount("warm", f"remote:{CONTAINER}/images", "--config", str(config),
                         "--cache-dir", str(cache_dir), *BLOCK_ARGS)
        assert again.returncode == 0, again.stderr
        assert "with 0 GETs" in again.stderr
    stats_out = objmount("cache", "stats", "--cache-dir", str(cache_dir))
    assert stats_out.returncode == 0, stats_out.stderr
    assert f"{len(SMALL)} blocks" in stats_out.stdout


def test_warm_of_a_path_in_a_mount_uses_its_remote_cache_and_block_size(
    cache_data: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    """`objmount warm MOUNT/images/class_1` needs no remote, cache dir or block size: the
    mount's are used, so its reads of that directory are then all hits."""
    class_1 = {key: cache_data[key] for key in SMALL if key.startswith("images/class_1/")}
    args = ("--cache-dir", str(tmp_path / "cache"), *BLOCK_ARGS, "--dir-read-ahead", "0")
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", config, *args) as mount:
        result = objmount("warm", str(mount.path / "images" / "class_1"))
        assert result.returncode == 0, result.stderr
        assert f"warmed {len(class_1)} objects" in result.stderr
        read_everything(mount, class_1)
        assert stats(mount)["gets"] == 0
        shard = objmount("warm", str(mount.path / "shards" / "shard-0.bin"))
        assert shard.returncode == 0, shard.stderr
        assert (mount.path / "shards" / "shard-0.bin").read_bytes() == cache_data[
            "shards/shard-0.bin"]
        assert stats(mount)["gets"] == 0


def test_warm_of_a_path_outside_any_mount_fails_with_one_line(tmp_path: Path) -> None:
    result = objmount("warm", str(tmp_path))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"objmount: error: {tmp_path} is neither REMOTE:CONTAINER[/PREFIX] nor a path inside an "
        "objmount mount"
    ]


def test_warm_stops_at_max_size(
    cache_data: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    result = objmount("warm", f"remote:{CONTAINER}/images", "--config", str(config),
                      "--cache-dir", str(tmp_path / "cache"), "--max-size", "1M")
    assert result.returncode == 0, result.stderr
    assert "beyond --max-size" in result.stderr
    assert 0 < cached_block_bytes(tmp_path / "cache") <= MiB


def test_cache_clear_and_verify(
    cache_data: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    warmed = objmount("warm", f"remote:{CONTAINER}/images", "--config", str(config),
                      "--cache-dir", str(cache_dir))
    assert warmed.returncode == 0, warmed.stderr
    victim = sorted(cache_dir.rglob("*.blk"))[0]
    victim.write_bytes(b"garbage")
    verify = objmount("cache", "verify", "--cache-dir", str(cache_dir))
    assert verify.returncode == 0, verify.stderr
    assert f"checked {len(SMALL)} blocks" in verify.stderr
    assert "1 corrupt" in verify.stderr
    other = objmount("cache", "clear", "remote:some-other-container", "--config", str(config),
                     "--cache-dir", str(cache_dir))
    assert "removed 0 blocks" in other.stderr
    cleared = objmount("cache", "clear", f"remote:{CONTAINER}", "--config", str(config),
                       "--cache-dir", str(cache_dir))
    assert f"removed {len(SMALL) - 1} blocks" in cleared.stderr
    assert cached_block_bytes(cache_dir) == 0


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Path:
    """A 600 KiB tmpfs: room for the cache's database and a few blocks, then ENOSPC."""
    path = tmp_path / "tiny"
    path.mkdir()
    with root_mount("-t", "tmpfs", "-o", "size=600k", "tmpfs", str(path)):
        yield path


def test_a_full_cache_disk_falls_back_to_uncached_reads_with_one_warning(
    cache_data: dict[str, bytes], config: Path, tmp_path: Path, tiny_filesystem: Path
) -> None:
    args = ("--cache-dir", str(tiny_filesystem / "cache"), *BLOCK_ARGS)
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", config, *args) as mount:
        read_everything(mount, cache_data)
        read_everything(mount, cache_data)
        log = mount.log()
    assert log.count("disk is full") == 1, log
    assert " ERROR " not in log
