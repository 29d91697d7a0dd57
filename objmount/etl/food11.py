"""The Food-11 layout: each split's `{i}_{n}.jpg` images into `class_{i:02d}` directories.

Food-11's archive holds training/, validation/ and evaluation/, each a flat
directory of `{i}_{n}.jpg` images, i the index of the class in CLASSES (at its top
level, or in one directory that wraps them: `Food-11/training/`). This
layout moves every image into `<split>/class_{i:02d}/`, the directories the
Chameleon tutorial's training code reads. Moved files are not looked at again,
so a second run moves nothing; files of any other name stay and are reported.
"""

import re
from pathlib import Path

from objmount.etl.transform import TransformReport, find_split_root

CLASSES = (
    "Bread", "Dairy product", "Dessert", "Egg", "Fried food", "Meat", "Noodles/Pasta",
    "Rice", "Seafood", "Soup", "Vegetable/Fruit",
)
SPLITS = ("training", "validation", "evaluation")
_IMAGE = re.compile(r"(0|[1-9][0-9]*)_[0-9]+\.jpg")


def class_dir(index: int) -> str:
    """Return the directory name of class `index`: class_00 ... class_10."""
    return f"class_{index:02d}"


def transform(staging: Path) -> TransformReport:
    """Move each split's images into their class directories (idempotent; local renames).

    Raises EtlError if neither `staging` nor its one subdirectory holds a split.
    """
    root = find_split_root(staging, SPLITS)
    splits = [root / name for name in SPLITS if (root / name).is_dir()]
    labels = [f"{class_dir(i)} ({name})" for i, name in enumerate(CLASSES)]
    report = TransformReport(moved=dict.fromkeys(labels, 0),
                             root=None if root == staging else root)
    for split in splits:
        for index in range(len(CLASSES)):
            (split / class_dir(index)).mkdir(exist_ok=True)
        for entry in sorted(split.iterdir()):
            if not entry.is_file():
                continue
            match = _IMAGE.fullmatch(entry.name)
            if match is None or int(match[1]) >= len(CLASSES):
                report.unmatched.append(entry.relative_to(staging).as_posix())
                continue
            index = int(match[1])
            entry.replace(split / class_dir(index) / entry.name)
            report.moved[labels[index]] += 1
    return report
