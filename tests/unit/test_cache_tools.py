"""How the cache commands tell a remote from a path, and find the mount a path is in."""

from pathlib import Path

import pytest

from objmount.cache import tools
from objmount.cache.cli import is_remote_spec
from objmount.errors import ObjmountError

MOUNTINFO = (
    "36 35 98:0 / /mnt/other rw,noatime - ext4 /dev/vda rw\n"
    "40 35 0:52 / /mnt/object rw,nosuid,nodev - fuse.objmount objmount:s3:data rw\n"
    "41 40 0:53 / /mnt/object/nested\\040dir rw - fuse.objmount objmount:s3:more rw\n"
)


@pytest.mark.parametrize("text", ["remote:container", "chi_tacc:data/train", ":swift:data",
                                  "remote:"])
def test_a_colon_before_any_slash_names_a_remote(text: str) -> None:
    assert is_remote_spec(text)


@pytest.mark.parametrize("text", ["/mnt/object/train", "mnt/object", "./a:b", "/x/y:z"])
def test_anything_else_is_a_path(text: str) -> None:
    assert not is_remote_spec(text)


def test_objmount_mounts_are_read_from_mountinfo_unescaped(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)
    assert tools.objmount_mounts(mountinfo) == ["/mnt/object", "/mnt/object/nested dir"]


def test_a_path_outside_every_objmount_mount_is_refused(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)
    with pytest.raises(ObjmountError, match="nor a path inside an objmount mount"):
        tools.mount_containing(Path("/mnt/other/train"), mountinfo)


def test_the_innermost_mount_answers_for_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)
    asked = []

    def root_xattr(mountpoint: str, name: str) -> dict:
        asked.append((mountpoint, name))
        return {"target": "s3:more", "config": None, "cache_dir": "/c", "block_size": 4096,
                "cache_max_size": 10}

    monkeypatch.setattr(tools, "root_xattr", root_xattr)
    mounted, relative = tools.mount_containing(Path("/mnt/object/nested dir/a/b"), mountinfo)
    assert asked == [("/mnt/object/nested dir", tools.MOUNT_XATTR)]
    assert (mounted.target, mounted.block_size, relative) == ("s3:more", 4096, "a/b")
    assert tools.mount_containing(Path("/mnt/object/nested dir"), mountinfo)[1] == ""


def test_a_mount_that_does_not_answer_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)
    monkeypatch.setattr(tools, "root_xattr", lambda mountpoint, name: None)
    with pytest.raises(ObjmountError, match="did not say where it caches"):
        tools.mount_containing(Path("/mnt/object/x"), mountinfo)
