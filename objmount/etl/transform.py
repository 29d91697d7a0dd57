"""Reshape a staging directory with a layout: a callable that moves files into place.

A layout is a function `(staging: Path) -> TransformReport`, named by a short name
from LAYOUTS or as "module:function". It must be idempotent (a second run moves
nothing), write nothing outside the staging directory, and report the files it
could not place rather than fail on them. food11.py is the example.

Many archives wrap their content in one top-level directory (`Food-11/training/...`
instead of `training/...`); `find_split_root` finds the splits there too, and the
report's `root` names the directory the layout used, which is what to load.
"""

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from objmount.errors import ConfigError, EtlError

LAYOUTS = {"food11": "objmount.etl.food11:transform"}
# How many unmatched files a report names before it only counts them.
SHOWN_UNMATCHED = 10
# Top-level entries an archiver adds beside the content (macOS Finder's resource forks).
_ARCHIVE_LITTER = frozenset({"__MACOSX"})


@dataclass
class TransformReport:
    """Files moved into each destination (e.g. a class), and files that matched none.

    `root` is the directory the layout reshaped when it is not the staging directory
    itself (the archive's one top-level directory): the directory to load.
    """

    moved: dict[str, int] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    root: Path | None = None

    def describe(self) -> list[str]:
        """Return the report as lines for people: where, totals, per destination, unmatched."""
        lines = []
        if self.root is not None:
            lines.append(f"using {self.root}: the archive wraps its content in this one "
                         "directory (load this directory)")
        lines.append(f"moved {sum(self.moved.values())} files")
        lines += [f"  {where}: {count}" for where, count in self.moved.items()]
        if self.unmatched:
            shown = ", ".join(self.unmatched[:SHOWN_UNMATCHED])
            more = len(self.unmatched) - SHOWN_UNMATCHED
            lines.append(f"{len(self.unmatched)} files match no class (left in place): {shown}"
                         + (f" and {more} more" if more > 0 else ""))
        return lines


Layout = Callable[[Path], TransformReport]


def resolve_layout(spec: str, search_dir: Path | None = None) -> Layout:
    """Return the layout `spec` names; `module:function` modules are looked up in
    `search_dir` (a pipeline file's directory) first. Raises ConfigError."""
    module_name, sep, function = LAYOUTS.get(spec, spec).partition(":")
    if not sep or not module_name or not function:
        known = ", ".join(LAYOUTS)
        raise ConfigError(f"unknown layout {spec!r}: use one of {known} or MODULE:FUNCTION")
    if search_dir is not None:
        sys.path.insert(0, str(search_dir))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"layout {spec!r}: cannot import {module_name}: {exc}") from None
    finally:
        if search_dir is not None:
            sys.path.remove(str(search_dir))
    layout = getattr(module, function, None)
    if not callable(layout):
        raise ConfigError(f"layout {spec!r}: {module_name} has no function {function!r}")
    return layout


def find_split_root(staging: Path, splits: Sequence[str]) -> Path:
    """Return the directory holding one of `splits`: `staging`, or its one subdirectory.

    The subdirectory counts only when it is the only one besides archive litter
    (`__MACOSX`, dot-directories). Raises EtlError when neither holds a split.
    """
    def has_split(directory: Path) -> bool:
        return any((directory / name).is_dir() for name in splits)

    if has_split(staging):
        return staging
    subdirectories = [entry for entry in staging.iterdir() if entry.is_dir()
                      and entry.name not in _ARCHIVE_LITTER and not entry.name.startswith(".")]
    if len(subdirectories) == 1 and has_split(subdirectories[0]):
        return subdirectories[0]
    raise EtlError(f"{staging} has no {', '.join(splits)} directory, nor one directory "
                   "holding them: is it where the archive was unpacked?")


def transform(staging: Path, layout: Layout) -> TransformReport:
    """Run `layout` on `staging`; raises EtlError if the directory does not exist."""
    if not staging.is_dir():
        raise EtlError(f"staging directory {staging} does not exist: run `objmount etl extract` "
                       "first, or pass the directory it unpacked into")
    return layout(staging)
