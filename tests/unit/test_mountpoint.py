"""Mountpoint checks that run before any FUSE session exists."""

from pathlib import Path

import pytest

from objmount.errors import MountpointError
from objmount.mountpoint import check_allow_other, check_mountpoint, is_mounted


def test_root_may_always_allow_other(tmp_path: Path) -> None:
    check_allow_other(euid=0, fuse_conf=tmp_path / "absent")


def test_users_need_user_allow_other_and_are_told_how(tmp_path: Path) -> None:
    conf = tmp_path / "fuse.conf"
    conf.write_text("# user_allow_other\nmount_max = 1000\n")
    with pytest.raises(MountpointError, match=r"user_allow_other.*sudo tee -a"):
        check_allow_other(euid=1000, fuse_conf=conf)


def test_user_allow_other_enables_it_for_users(tmp_path: Path) -> None:
    conf = tmp_path / "fuse.conf"
    conf.write_text("mount_max = 1000\nuser_allow_other  # for objmount\n")
    check_allow_other(euid=1000, fuse_conf=conf)


def test_a_missing_mountpoint_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(MountpointError, match="mkdir -p"):
        check_mountpoint(tmp_path / "absent")


def test_a_file_is_not_a_mountpoint(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(MountpointError, match="not a directory"):
        check_mountpoint(tmp_path / "f")


def test_a_plain_directory_is_accepted_and_made_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnt").mkdir()
    assert check_mountpoint(Path("mnt")) == tmp_path / "mnt"


def test_proc_is_a_mount_and_a_fresh_directory_is_not(tmp_path: Path) -> None:
    assert is_mounted(Path("/proc"))
    assert not is_mounted(tmp_path)
