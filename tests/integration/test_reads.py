"""Reading through the mount returns exactly the stored bytes, for every backend."""

import hashlib
import os
import random
import stat

import pytest

from tests.integration.conftest import SIZED_FILES, TREE_FILES
from tests.integration.mounting import MountProcess

pytestmark = pytest.mark.mount


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("name", sorted(SIZED_FILES))
def test_whole_file_reads_are_byte_exact(shared_mount: MountProcess, dataset, name: str) -> None:
    with open(shared_mount.path / name, "rb") as f:
        assert sha256(f.read()) == sha256(dataset[name])


def test_file_sizes_and_modes_match_the_objects(shared_mount: MountProcess, dataset) -> None:
    for name in SIZED_FILES:
        info = os.stat(shared_mount.path / name)
        assert stat.S_ISREG(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o444
        assert info.st_size == len(dataset[name])
        assert info.st_mtime > 1.6e9
    assert stat.S_IMODE(os.stat(shared_mount.path / "nested").st_mode) == 0o555


def test_random_preads_return_the_stored_ranges(shared_mount: MountProcess, dataset) -> None:
    content = dataset["large.bin"]
    rng = random.Random(7)
    fd = os.open(shared_mount.path / "large.bin", os.O_RDONLY)
    try:
        for _ in range(200):
            offset = rng.randrange(len(content) + 10)
            size = rng.choice([1, 100, 4096, 65536, 300_000, 2_000_000])
            assert os.pread(fd, size, offset) == content[offset : offset + size]
    finally:
        os.close(fd)


def test_nested_directories_list_and_read(shared_mount: MountProcess, dataset) -> None:
    assert sorted(os.listdir(shared_mount.path / "nested")) == ["a", "top.txt"]
    assert sorted(os.listdir(shared_mount.path / "nested/a")) == ["b", "sibling.txt"]
    for key in TREE_FILES:
        assert (shared_mount.path / key).read_bytes() == dataset[key]


def test_walk_finds_every_regular_file(shared_mount: MountProcess) -> None:
    found = {
        os.path.relpath(os.path.join(root, name), shared_mount.path)
        for root, _, files in os.walk(shared_mount.path)
        for name in files
    }
    assert set(SIZED_FILES) | set(TREE_FILES) <= found


def test_marker_objects_are_directories(shared_mount: MountProcess) -> None:
    assert (shared_mount.path / "empty-dir").is_dir()
    assert os.listdir(shared_mount.path / "empty-dir") == []
    assert os.listdir(shared_mount.path / "with marker") == ["file in dir.txt"]


def test_etag_is_exposed_as_an_xattr(shared_mount: MountProcess, dataset) -> None:
    etag = os.getxattr(shared_mount.path / "one.bin", "user.objmount.etag").decode()
    assert etag == hashlib.md5(dataset["one.bin"]).hexdigest()
    assert "user.objmount.etag" in os.listxattr(shared_mount.path / "one.bin")


def test_missing_names_are_enoent(shared_mount: MountProcess) -> None:
    with pytest.raises(FileNotFoundError):
        os.stat(shared_mount.path / "no-such-file")
    with pytest.raises(FileNotFoundError):
        os.stat(shared_mount.path / "nested/no-such-dir/file")


def test_reads_arrive_in_chunks_up_to_one_mebibyte(shared_mount: MountProcess) -> None:
    """The kernel's read size is measured, not assumed: after a large sequential read."""
    import json

    with open(shared_mount.path / "large.bin", "rb", buffering=0) as f:
        while f.read(4 << 20):
            pass
    stats = json.loads(os.getxattr(shared_mount.path, "user.objmount.stats"))
    assert stats["largest_read_bytes"] == 1 << 20


def test_statfs_reports_a_read_only_filesystem(shared_mount: MountProcess) -> None:
    info = os.statvfs(shared_mount.path)
    assert info.f_namemax == 255
    assert info.f_flag & os.ST_RDONLY
