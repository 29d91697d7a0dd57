"""The Food-11 layout sorts each split's images into class directories, once."""

from pathlib import Path

import pytest

from objmount.errors import ConfigError, EtlError
from objmount.etl import food11
from objmount.etl.transform import resolve_layout, transform
from tests.food11_archive import STRAYS, food11_files, transformed


def write(root: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    write(tmp_path, food11_files(per_class=2))
    return tmp_path


def test_images_move_into_their_class_directory(staging: Path) -> None:
    files = food11_files(per_class=2)
    report = transform(staging, food11.transform)
    assert tree(staging) == transformed(files)
    assert report.moved["class_00 (Bread)"] == 6  # 2 per split
    assert report.moved["class_10 (Vegetable/Fruit)"] == 6
    assert sum(report.moved.values()) == 3 * 11 * 2


def test_files_matching_no_class_stay_and_are_reported(staging: Path) -> None:
    report = transform(staging, food11.transform)
    assert sorted(report.unmatched) == sorted(STRAYS)
    assert "2 files match no class" in report.describe()[-1]


def test_a_second_run_changes_nothing(staging: Path) -> None:
    transform(staging, food11.transform)
    before = tree(staging)
    report = transform(staging, food11.transform)
    assert sum(report.moved.values()) == 0
    assert tree(staging) == before


def test_every_split_gets_all_eleven_class_directories(staging: Path) -> None:
    transform(staging, food11.transform)
    for split in food11.SPLITS:
        assert sorted(p.name for p in (staging / split).glob("class_*")) == [
            f"class_{i:02d}" for i in range(11)
        ]


@pytest.mark.parametrize("name", ["00_1.jpg", "1_x.jpg", "1_2.png", "x_1.jpg", "1_2.jpg.part"])
def test_near_miss_names_are_not_moved(tmp_path: Path, name: str) -> None:
    write(tmp_path, {f"training/{name}": b"?"})
    assert transform(tmp_path, food11.transform).unmatched == [f"training/{name}"]


def test_a_missing_staging_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EtlError, match="does not exist"):
        transform(tmp_path / "absent", food11.transform)


def wrapped(files: dict[str, bytes], top: str = "Food-11") -> dict[str, bytes]:
    return {f"{top}/{path}": data for path, data in files.items()}


def test_splits_wrapped_in_one_top_level_directory_are_found_and_named(tmp_path: Path) -> None:
    files = food11_files(per_class=2)
    write(tmp_path, wrapped(files) | {"__MACOSX/._Food-11": b"mac", ".DS_Store": b"mac"})
    report = transform(tmp_path, food11.transform)
    assert tree(tmp_path / "Food-11") == transformed(files)
    assert report.root == tmp_path / "Food-11"
    assert report.describe()[0].startswith(f"using {tmp_path / 'Food-11'}: the archive wraps")
    assert sorted(report.unmatched) == sorted(wrapped(STRAYS))
    assert sum(transform(tmp_path, food11.transform).moved.values()) == 0  # idempotent


def test_splits_at_the_top_level_are_used_in_place(staging: Path) -> None:
    assert transform(staging, food11.transform).root is None
    assert not transform(staging, food11.transform).describe()[0].startswith("using")


@pytest.mark.parametrize("files", [
    {"photos/0_1.jpg": b"x"},  # no split anywhere
    {"a/training/0_1.jpg": b"x", "b/training/0_1.jpg": b"x"},  # two candidate directories
    {"Food-11/data/training/0_1.jpg": b"x"},  # two levels down
])
def test_a_directory_without_splits_is_a_clear_error(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    write(tmp_path, files)
    with pytest.raises(EtlError, match="no training, validation, evaluation directory, nor one"):
        transform(tmp_path, food11.transform)


def test_food11_is_the_named_layout() -> None:
    assert resolve_layout("food11") is food11.transform


def test_a_module_function_layout_is_found_beside_the_pipeline_file(tmp_path: Path) -> None:
    (tmp_path / "my_layout_for_test.py").write_text(
        "from objmount.etl.transform import TransformReport\n"
        "def flatten(staging):\n"
        "    return TransformReport(moved={'all': 0})\n"
    )
    layout = resolve_layout("my_layout_for_test:flatten", tmp_path)
    assert layout(tmp_path).moved == {"all": 0}


@pytest.mark.parametrize(("spec", "message"), [
    ("food12", "unknown layout"),
    ("no_such_module_xyz:run", "cannot import"),
    ("objmount.etl.food11:nothing", "has no function"),
])
def test_bad_layouts_are_config_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_layout(spec)
