"""Mountpoint checks that run before any FUSE session exists."""

from pathlib import Path

import pytest

from objmount.errors import MountpointError
from objmount.mountpoint import (
    check_allow_other,
    check_mountpoint,
    containing_mount,
    is_mounted,
    parse_mountinfo,
    propagation_warning,
)


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


# /proc/self/mountinfo as proc(5) shows it: a private /, a shared /srv, a slave /data,
# a private bind on /srv/private, and a mount point with a space (\040) in its name.
MOUNTINFO = """\
22 1 252:0 / / rw,relatime - ext4 /dev/vda rw
30 22 252:1 / /srv rw,relatime shared:7 - ext4 /dev/vdb rw
31 22 252:2 / /data rw,relatime master:3 propagate_from:2 - ext4 /dev/vdc rw
32 30 252:1 /private /srv/private rw,relatime - ext4 /dev/vdb rw
33 22 0:40 / /mnt/with\\040space rw shared:9 unbindable - tmpfs tmpfs rw
"""


def test_mountinfo_optional_fields_give_the_propagation() -> None:
    entries = {entry.point: entry for entry in parse_mountinfo(MOUNTINFO)}
    assert entries["/"].private
    assert not entries["/srv"].private and entries["/srv"].tags == {"shared"}
    assert not entries["/data"].private and entries["/data"].tags == {"master", "propagate_from"}
    assert entries["/srv/private"].private
    assert entries["/mnt/with space"].tags == {"shared", "unbindable"}


@pytest.mark.parametrize(("path", "parent"), [
    ("/srv/object", "/srv"),
    ("/srv/private/object", "/srv/private"),
    ("/srvx/object", "/"),  # a prefix of the name is not a parent
    ("/data", "/data"),
    ("/mnt/with space/object", "/mnt/with space"),
])
def test_the_containing_mount_is_the_deepest_one_above(path: str, parent: str) -> None:
    assert containing_mount(Path(path), parse_mountinfo(MOUNTINFO)).point == parent


def test_the_last_of_stacked_mounts_is_the_one_in_use() -> None:
    stacked = MOUNTINFO + "40 30 0:41 / /srv rw - tmpfs tmpfs rw\n"
    assert containing_mount(Path("/srv/object"), parse_mountinfo(stacked)).private


def test_a_mountpoint_on_a_private_mount_gets_the_docker_fix() -> None:
    warning = propagation_warning(Path("/mnt/object"), MOUNTINFO)
    assert "/mnt/object is on /, a private mount" in warning
    assert "not a shared or slave mount" in warning and "sudo mount --make-rshared /" in warning
    nested = propagation_warning(Path("/srv/private/object"), MOUNTINFO)
    assert "sudo mount --make-shared /srv/private" in nested


@pytest.mark.parametrize("path", ["/srv/object", "/data/object"])
def test_shared_and_slave_parents_need_no_warning(path: str) -> None:
    assert propagation_warning(Path(path), MOUNTINFO) is None
