"""Directory listings: paginated, complete, cached for --dir-cache-time, or loaded at once."""

import ctypes
import errno
import os
import time
from pathlib import Path

import pytest

from objmount.backends.base import PAGE_SIZE_ENV
from tests.integration.conftest import BIG_DIRECTORY_PAGE
from tests.integration.mounting import MountProcess, mounted
from tests.integration.stores import TestStore

pytestmark = pytest.mark.mount


def test_a_directory_of_ten_listing_pages_lists_exactly(
    big_directory: set[str], config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PAGE_SIZE_ENV, str(BIG_DIRECTORY_PAGE))
    with mounted("remote:wide", tmp_path / "mnt", config) as mount:
        names = os.listdir(mount.path / "many")
        assert len(names) == len(big_directory)
        assert set(names) == big_directory


class _Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


def _libc_listing(path: Path, mark_at: int) -> tuple[list[str], list[str]]:
    """Every name of `path` through libc's readdir, then the names from the position
    telldir gave after `mark_at` names, read again after a seekdir back to it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.opendir.restype = ctypes.c_void_p
    libc.readdir.argtypes = [ctypes.c_void_p]
    libc.readdir.restype = ctypes.POINTER(_Dirent)
    libc.telldir.argtypes = [ctypes.c_void_p]
    libc.telldir.restype = ctypes.c_long
    libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
    libc.closedir.argtypes = [ctypes.c_void_p]
    handle = libc.opendir(os.fsencode(path))
    assert handle, os.strerror(ctypes.get_errno())

    def names_to_end() -> list[str]:
        out = []
        while entry := libc.readdir(handle):
            name = os.fsdecode(entry.contents.d_name)
            if name not in (".", ".."):
                out.append(name)
        return out

    try:
        first = []
        while len(first) < mark_at:
            entry = libc.readdir(handle)
            assert entry
            if (name := os.fsdecode(entry.contents.d_name)) not in (".", ".."):
                first.append(name)
        mark = libc.telldir(handle)
        rest = names_to_end()
        libc.seekdir(handle, mark)
        again = names_to_end()
    finally:
        libc.closedir(handle)
    assert again == rest
    return first + rest, again


def test_readdir_across_many_kernel_buffers_and_a_seekdir_back_lists_exactly(
    big_directory: set[str], config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2,500 names, a dozen kernel readdir buffers: each answer goes on from the rows the
    last one read and did not send; a seekdir back reads from its position again."""
    monkeypatch.setenv(PAGE_SIZE_ENV, str(BIG_DIRECTORY_PAGE))
    with mounted("remote:wide", tmp_path / "mnt", config) as mount:
        os.listdir(mount.path / "many")  # listed: the walk below is served by the mount
        names, again = _libc_listing(mount.path / "many", mark_at=1_234)
    assert len(names) == len(big_directory) and set(names) == big_directory
    assert names == sorted(names)
    assert again == names[1_234:]


def test_fast_list_loads_the_tree_at_mount_time(
    dataset: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    with mounted("remote:dataset", tmp_path / "mnt", config, "--fast-list") as mount:
        assert "fast-list:" in mount.log()
        assert sorted(os.listdir(mount.path / "nested" / "a")) == ["b", "sibling.txt"]
        assert (mount.path / "empty-dir").is_dir()
        assert (mount.path / "with marker" / "file in dir.txt").read_bytes() == dataset[
            "with marker/file in dir.txt"
        ]
        assert set(os.listdir(mount.path / "hostile")) == {"ok.txt", "é" * 127 + "z", "clash"}


def test_a_prefix_mounts_that_subtree(
    dataset: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    with mounted("remote:dataset/nested/a", tmp_path / "mnt", config) as mount:
        assert sorted(os.listdir(mount.path)) == ["b", "sibling.txt"]
        assert (mount.path / "b/c/deep.txt").read_bytes() == dataset["nested/a/b/c/deep.txt"]


def lists_eventually(path: Path, expected: list[str], deadline_s: float = 20) -> None:
    """`path` lists `expected` before the deadline: an expired listing answers at once
    while it is re-listed in the background, so the change shows a listing later."""
    deadline = time.monotonic() + deadline_s
    while sorted(os.listdir(path)) != expected:
        assert time.monotonic() < deadline, (os.listdir(path), expected)
        time.sleep(0.1)


def test_new_objects_appear_after_the_dir_cache_time(
    store: TestStore, config: Path, tmp_path: Path
) -> None:
    store.create_container("changing")
    store.put("changing", "first.txt", b"1")
    args = ("--dir-cache-time", "1s", "--attr-timeout", "0", "--entry-timeout", "0")
    with mounted("remote:changing", tmp_path / "mnt", config, *args) as mount:
        assert os.listdir(mount.path) == ["first.txt"]
        store.put("changing", "second.txt", b"2")
        time.sleep(1.5)
        lists_eventually(mount.path, ["first.txt", "second.txt"])
        store.delete("changing", "first.txt")
        time.sleep(1.5)
        lists_eventually(mount.path, ["second.txt"])
        assert not (mount.path / "first.txt").exists()


def test_ls_l_xattrs_are_not_supported_and_ours_still_answer(
    shared_mount: MountProcess,
) -> None:
    """`ls -l` asks security.selinux and system.posix_acl_access of every entry: ENOTSUP
    makes it stop asking for the mount (ENODATA would cost two requests per entry)."""
    path = shared_mount.path / "one.bin"
    for name in ("security.selinux", "system.posix_acl_access", "trusted.x"):
        with pytest.raises(OSError) as raised:
            os.getxattr(path, name)
        assert raised.value.errno == errno.ENOTSUP
    with pytest.raises(OSError) as raised:
        os.getxattr(path, "user.not-ours")
    assert raised.value.errno == errno.ENODATA
    assert len(os.getxattr(path, "user.objmount.etag")) == 32  # the kernel still asks us
