"""Cache disk faults under real mounts: truncated block files, a cache made read-only.

(A full cache disk and corrupt block files: test_cache.py.) A damaged block file
is never served: it is found bad, fetched again, and the bytes are exact. A
cache that cannot be written (a read-only blocks directory) leaves reads
working uncached, with one warning, and caching resumes once it is writable
again (after the write pause, blocks.WRITE_PAUSE_S).
"""

from pathlib import Path

import pytest

from objmount.cache.blocks import BLOCKS_DIR, WRITE_PAUSE_S
from tests.integration.bounds import within
from tests.integration.cache_kit import (
    TRUNCATIONS,
    all_written,
    block_files,
    reread,
    root_mount,
    truncate_in_place,
)
from tests.integration.conftest import MiB, data
from tests.integration.fault_kit import EIO_BOUND_S, FAST, SLACK_S, reads_within
from tests.integration.mounting import MountProcess, mounted, read_everything
from tests.integration.mounting import mount_stats as stats
from tests.integration.stores import TestStore, put_many
from tests.servers.net import wait_until

pytestmark = pytest.mark.mount

# One file of 5 blocks (at FAST's --block-size 1M: the last of 5 bytes).
SHARD_KEY = "s/shard.bin"
SHARD_BYTES = 4 * MiB + 5


@pytest.fixture(scope="module")
def shard(store: TestStore) -> dict[str, bytes]:
    """Container `cache-faults`: one shard of 5 blocks."""
    objects = {SHARD_KEY: data("cache-faults-shard", SHARD_BYTES)}
    store.create_container("cache-faults")
    put_many(store, "cache-faults", objects)
    return objects


@pytest.mark.parametrize("when", ["under a running mount", "between mounts"])
def test_truncated_block_files_are_never_served_but_fetched_again(
    shard: dict[str, bytes], config: Path, tmp_path: Path, when: str,
) -> None:
    """Four of the five block files truncated (empty, in the header, half, one byte
    short), in place: the inodes the mount holds open for its fast path, or between
    two mounts. Each is found bad and fetched again (one GET each); the rest are hits."""
    cache_dir = tmp_path / "cache"
    args = (*FAST, "--cache-dir", str(cache_dir), "--dir-read-ahead", "0")
    path_in = SHARD_KEY

    def damage() -> None:
        files = block_files(cache_dir)
        assert len(files) == 5
        for path, how in zip(files, TRUNCATIONS, strict=False):
            truncate_in_place(path, how)

    def read_exact_after_damage(mount: MountProcess) -> None:
        before = stats(mount)
        with within(EIO_BOUND_S, f"truncated blocks ({when}): refetched, exact"):
            assert reread(mount.path / path_in, SHARD_BYTES) == shard[SHARD_KEY]
        after = stats(mount)
        assert after["gets"] - before["gets"] == len(TRUNCATIONS), after
        assert after["corrupt_blocks"] - before["corrupt_blocks"] >= len(TRUNCATIONS), after
        all_written(mount)  # stored again, whole
        assert reread(mount.path / path_in, SHARD_BYTES) == shard[SHARD_KEY]
        assert stats(mount)["gets"] == after["gets"]

    with mounted("remote:cache-faults", tmp_path / "mnt", config, *args) as mount:
        read_everything(mount, shard)
        all_written(mount)
        if when == "under a running mount":
            assert reread(mount.path / path_in, SHARD_BYTES) == shard[SHARD_KEY]
            damage()
            read_exact_after_damage(mount)
    if when == "between mounts":
        damage()
        with mounted("remote:cache-faults", tmp_path / "mnt2", config, *args) as mount:
            read_exact_after_damage(mount)


RO_FILES = {f"r/f{i:02d}.bin": 100_000 + i for i in range(6)}
RO_WARNING = "cannot write the cache"


def test_a_read_only_cache_reads_uncached_with_one_warning_then_caches_again(
    store: TestStore, config: Path, tmp_path: Path,
) -> None:
    """The blocks directory bind-mounted read-only under a running mount (chmod would not
    stop root): new blocks are read uncached, old ones still hit, one warning; the mount
    never fails a read. Made writable again, caching resumes after the write pause."""
    objects = {key: data(f"ro-{key}", size) for key, size in RO_FILES.items()}
    store.create_container("cache-readonly")
    put_many(store, "cache-readonly", objects)
    cache_dir = tmp_path / "cache"
    blocks = cache_dir / BLOCKS_DIR
    keys = sorted(objects)
    # --cache-mem 0: every read that is not a disk hit is a GET and a write attempt.
    args = (*FAST, "--cache-dir", str(cache_dir), "--dir-read-ahead", "0", "--cache-mem", "0")
    with mounted("remote:cache-readonly", tmp_path / "mnt", config, *args) as mount:
        reads_within(SLACK_S, "read-only cache: a block cached before", mount.path, objects,
                     keys[0])
        all_written(mount)
        with root_mount("--bind", "-o", "ro", str(blocks), str(blocks)):
            reads_within(SLACK_S, "read-only cache: new files read uncached", mount.path,
                         objects, *keys[1:4])
            for key in keys[:4]:  # again, past the kernel's page cache
                assert reread(mount.path / key) == objects[key], key
            counts = stats(mount)
            assert counts["blocks_stored"] == 1, counts
            assert counts["cache_write_errors"] >= 1, counts
            assert counts["gets"] == 1 + 2 * 3, counts  # keys[0] a hit, the others not
            assert mount.log().count(RO_WARNING) == 1, mount.log()
        # Writable again: the next write after the pause succeeds.
        with within(WRITE_PAUSE_S + 2 * SLACK_S, "read-only cache: writable again, caching"):
            def cached_again() -> bool:
                assert reread(mount.path / keys[1]) == objects[keys[1]]
                return stats(mount)["blocks_stored"] > 1

            wait_until(cached_again, WRITE_PAUSE_S + 2 * SLACK_S, "caching resumed")
        gets = stats(mount)["gets"]
        assert reread(mount.path / keys[1]) == objects[keys[1]]
        assert stats(mount)["gets"] == gets  # a hit
        assert mount.proc.poll() is None
        log = mount.log()
    assert log.count(RO_WARNING) == 1, log
    assert " ERROR " not in log and "Traceback" not in log
