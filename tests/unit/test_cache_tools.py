"""How the cache commands tell a remote from a path, and find the mount a path is in (only
the caller's own mounts and root's are trusted)."""

from pathlib import Path

import pytest

from objmount import mounts
from objmount.cache import tools
from objmount.cache.cli import is_remote_spec
from objmount.errors import ObjmountError

# As the kernel lists FUSE mounts: the super options carry the uid of who mounted.
MOUNTINFO = (
    "36 35 98:0 / /mnt/other rw,noatime - ext4 /dev/vda rw\n"
    "40 35 0:52 / /mnt/object rw,nosuid,nodev - fuse.objmount objmount:s3:data "
    "rw,user_id=0,group_id=0\n"
    "41 40 0:53 / /mnt/object/nested\\040dir rw - fuse.objmount objmount:s3:more "
    "rw,user_id=0,group_id=0,allow_other\n"
    "42 35 0:54 / /mnt/theirs rw,nosuid,nodev - fuse.objmount objmount:s3:x "
    "rw,user_id=1000,group_id=1000,allow_other\n"
    "43 35 0:55 / /mnt/odd rw - fuse.objmount objmount:s3:y rw,group_id=0\n"
)


@pytest.fixture
def mountinfo(tmp_path: Path) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    return path


MOUNT_INFO = {"target": "s3:more", "config": None, "cache_dir": "/c", "block_size": 4096,
              "cache_max_size": 10}


@pytest.mark.parametrize("text", ["remote:container", "chi_tacc:data/train", ":swift:data",
                                  "remote:"])
def test_a_colon_before_any_slash_names_a_remote(text: str) -> None:
    assert is_remote_spec(text)


@pytest.mark.parametrize("text", ["/mnt/object/train", "mnt/object", "./a:b", "/x/y:z"])
def test_anything_else_is_a_path(text: str) -> None:
    assert not is_remote_spec(text)


def test_objmount_mounts_are_read_from_mountinfo_unescaped(mountinfo: Path) -> None:
    assert mounts.objmount_mounts(mountinfo) == [
        mounts.ObjmountMount("/mnt/object", 0), mounts.ObjmountMount("/mnt/object/nested dir", 0),
        mounts.ObjmountMount("/mnt/theirs", 1000), mounts.ObjmountMount("/mnt/odd", None),
    ]


def test_a_path_outside_every_objmount_mount_is_refused(mountinfo: Path) -> None:
    with pytest.raises(ObjmountError, match="nor a path inside an objmount mount"):
        tools.mount_containing(Path("/mnt/other/train"), mountinfo)


def test_the_innermost_mount_answers_for_a_path(
    mountinfo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = []

    def root_xattr(mountpoint: str, name: str) -> dict:
        asked.append((mountpoint, name))
        return MOUNT_INFO

    monkeypatch.setattr(tools, "root_xattr", root_xattr)
    mounted, relative = tools.mount_containing(Path("/mnt/object/nested dir/a/b"), mountinfo)
    assert asked == [("/mnt/object/nested dir", tools.MOUNT_XATTR)]
    assert (mounted.target, mounted.block_size, relative) == ("s3:more", 4096, "a/b")
    assert tools.mount_containing(Path("/mnt/object/nested dir"), mountinfo)[1] == ""


def test_a_mount_that_does_not_answer_is_a_one_line_error(
    mountinfo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tools, "root_xattr", lambda mountpoint, name: None)
    with pytest.raises(ObjmountError, match="did not say where it caches"):
        tools.mount_containing(Path("/mnt/object/x"), mountinfo)


@pytest.mark.parametrize("mountpoint, who", [("/mnt/theirs", "uid 1000"),
                                             ("/mnt/odd", "an unknown user")])
def test_warm_never_trusts_the_xattr_of_a_mount_another_user_made(
    mountinfo: Path, monkeypatch: pytest.MonkeyPatch, mountpoint: str, who: str
) -> None:
    """Another user's mount could name any cache directory (theirs, planted): its root
    xattr is not even read."""
    asked = []
    monkeypatch.setattr(tools, "root_xattr", lambda m, name: asked.append(m) or MOUNT_INFO)
    with pytest.raises(ObjmountError) as raised:
        tools.mount_containing(Path(mountpoint) / "train", mountinfo)
    assert str(raised.value) == (
        f"the objmount mount on {mountpoint} was mounted by {who}: `warm` trusts only your "
        "own mounts (uid 0) and root's (warm REMOTE:CONTAINER[/PREFIX] --cache-dir DIR "
        "instead)")
    assert asked == []


def test_warm_trusts_a_mount_of_the_caller_and_one_of_root(
    mountinfo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tools, "root_xattr", lambda m, name: MOUNT_INFO)
    monkeypatch.setattr(tools.os, "geteuid", lambda: 1000)
    assert tools.mount_containing(Path("/mnt/theirs/a"), mountinfo)[1] == "a"
    assert tools.mount_containing(Path("/mnt/object/a"), mountinfo)[1] == "a"
    with pytest.raises(ObjmountError, match="mounted by an unknown user"):
        tools.mount_containing(Path("/mnt/odd"), mountinfo)
