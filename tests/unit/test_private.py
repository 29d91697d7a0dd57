"""What objmount writes is private to the user, and it refuses places others can tamper with."""

import os
from pathlib import Path

import pytest

from objmount.errors import ConfigError
from objmount.private import open_private_file, private_dir, private_file_in, private_subdirs

NOBODY = 65534


def mode(path: Path) -> int:
    return os.lstat(path).st_mode & 0o777


def test_missing_directories_are_created_0700_parents_included(tmp_path: Path) -> None:
    made = private_dir(tmp_path / "a" / "b", "cache directory")
    assert made == tmp_path / "a" / "b"
    assert mode(tmp_path / "a") == mode(made) == 0o700


def test_an_own_directory_readable_by_others_is_narrowed(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir(mode=0o755)
    os.chmod(tmp_path / "old", 0o755)
    private_dir(tmp_path / "old", "cache directory")
    assert mode(tmp_path / "old") == 0o700


def test_a_directory_another_user_made_on_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "objmount-job").mkdir()
    os.chown(tmp_path / "objmount-job", NOBODY, NOBODY)
    with pytest.raises(ConfigError, match=r"objmount-job belongs to uid 65534.*--cache-dir"):
        private_dir(tmp_path / "objmount-job" / "cache", "cache directory",
                    "choose another with --cache-dir")


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    os.chown(tmp_path / "cache", NOBODY, NOBODY)
    with pytest.raises(ConfigError, match="belongs to uid 65534, not to you"):
        private_dir(tmp_path / "cache", "cache directory")


@pytest.mark.parametrize("bits", [0o770, 0o707, 0o777])
def test_a_directory_writable_by_others_is_refused(tmp_path: Path, bits: int) -> None:
    (tmp_path / "shared").mkdir()
    os.chmod(tmp_path / "shared", bits)
    with pytest.raises(ConfigError, match="writable by other users"):
        private_dir(tmp_path / "shared" / "cache", "cache directory")


def test_a_root_owned_sticky_directory_like_tmp_is_a_valid_ancestor() -> None:
    made = private_dir(Path("/tmp") / f"objmount-test-private-{os.getpid()}", "cache directory")
    try:
        assert mode(made) == 0o700
    finally:
        os.rmdir(made)


def test_an_own_symlink_is_followed(tmp_path: Path) -> None:
    (tmp_path / "scratch").mkdir(mode=0o700)
    os.symlink("scratch", tmp_path / "link")
    assert private_dir(tmp_path / "link" / "cache", "x") == tmp_path / "scratch" / "cache"


def test_a_symlink_of_another_user_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    os.symlink(tmp_path / "real", tmp_path / "link")
    os.lchown(tmp_path / "link", NOBODY, NOBODY)
    with pytest.raises(ConfigError, match="symlink of uid 65534"):
        private_dir(tmp_path / "link", "cache directory")


def test_a_private_file_is_created_0600(tmp_path: Path) -> None:
    os.close(open_private_file(tmp_path / "objmount.log", "--log-file"))
    assert mode(tmp_path / "objmount.log") == 0o600


def test_an_own_file_readable_by_others_is_narrowed(tmp_path: Path) -> None:
    (tmp_path / "objmount.log").write_text("old\n")
    os.chmod(tmp_path / "objmount.log", 0o644)
    fd = open_private_file(tmp_path / "objmount.log", "--log-file")
    os.write(fd, b"new\n")
    os.close(fd)
    assert mode(tmp_path / "objmount.log") == 0o600
    assert (tmp_path / "objmount.log").read_text() == "old\nnew\n"


def test_a_private_file_never_follows_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    os.symlink(victim, tmp_path / "objmount.log")
    with pytest.raises(ConfigError, match="is a symlink"):
        open_private_file(tmp_path / "objmount.log", "--log-file")
    assert victim.read_text() == "untouched"


def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    (tmp_path / "objmount.log").write_text("")
    os.chown(tmp_path / "objmount.log", NOBODY, NOBODY)
    with pytest.raises(ConfigError, match="belongs to uid 65534"):
        open_private_file(tmp_path / "objmount.log", "--log-file")


def test_subdirectories_are_created_0700_and_a_symlink_among_them_is_refused(
    tmp_path: Path,
) -> None:
    root = private_dir(tmp_path / "cache", "cache directory")
    private_subdirs(root, ["a", "b"], "cache directory")
    assert mode(root / "a") == mode(root / "b") == 0o700
    os.symlink(tmp_path, root / "c")
    with pytest.raises(ConfigError, match="c is not a directory"):
        private_subdirs(root, ["c"], "cache directory")


@pytest.mark.parametrize("plant", ["symlink", "another user's", "directory"])
def test_a_file_checked_in_place_is_never_opened_and_must_be_a_regular_file_of_yours(
    tmp_path: Path, plant: str
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    if plant == "symlink":
        os.symlink(victim, tmp_path / "index.db")
    elif plant == "directory":
        (tmp_path / "index.db").mkdir()
    else:
        (tmp_path / "index.db").write_text("")
        os.chown(tmp_path / "index.db", NOBODY, NOBODY)
    with pytest.raises(ConfigError, match=r"cache index: .*index\.db"):
        private_file_in(tmp_path, "index.db", "cache index", create=True)
    assert victim.read_text() == "untouched"


def test_a_file_checked_in_place_is_created_0600_or_narrowed(tmp_path: Path) -> None:
    assert not private_file_in(tmp_path, "wal", "cache index")
    assert not (tmp_path / "wal").exists()
    assert private_file_in(tmp_path, "db", "cache index", create=True)
    assert mode(tmp_path / "db") == 0o600
    os.chmod(tmp_path / "db", 0o644)
    assert private_file_in(tmp_path, "db", "cache index")
    assert mode(tmp_path / "db") == 0o600
