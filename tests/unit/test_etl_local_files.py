"""What the loader uploads: every regular file under DIR, as PREFIX + its relative path."""

from pathlib import Path

import pytest

from objmount.errors import EtlError
from objmount.etl.load import local_files
from objmount.etl.manifest import MANIFEST_NAME


def test_every_file_becomes_prefix_plus_its_relative_path(tmp_path: Path) -> None:
    (tmp_path / "training/class_00").mkdir(parents=True)
    (tmp_path / "training/class_00/0_1.jpg").write_bytes(b"abc")
    (tmp_path / "top.txt").write_bytes(b"")
    (tmp_path / "empty-dir").mkdir()
    files = local_files(tmp_path, "data/")
    assert [(f.key, f.size) for f in files] == [
        ("data/top.txt", 0), ("data/training/class_00/0_1.jpg", 3)
    ]


def test_a_local_file_named_like_the_manifest_is_not_uploaded(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / MANIFEST_NAME).write_text("{}")
    assert [f.key for f in local_files(tmp_path, "")] == [f"sub/{MANIFEST_NAME}"]


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EtlError, match="does not exist: nothing to load"):
        local_files(tmp_path / "absent", "")
