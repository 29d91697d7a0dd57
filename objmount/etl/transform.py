"""Reshape a staging directory with a layout: a callable that moves files into place.

A layout is a function `(staging: Path) -> TransformReport`, named by a short name
from LAYOUTS or as "module:function". It must be idempotent (a second run moves
nothing), write nothing outside the staging directory, and report the files it
could not place rather than fail on them. food11.py is the example.
"""

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from objmount.errors import ConfigError, EtlError

LAYOUTS = {"food11": "objmount.etl.food11:transform"}
# How many unmatched files a report names before it only counts them.
SHOWN_UNMATCHED = 10


@dataclass
class TransformReport:
    """Files moved into each destination (e.g. a class), and files that matched none."""

    moved: dict[str, int] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        """Return the report as lines for people: totals, per destination, unmatched files."""
        lines = [f"moved {sum(self.moved.values())} files"]
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


def transform(staging: Path, layout: Layout) -> TransformReport:
    """Run `layout` on `staging`; raises EtlError if the directory does not exist."""
    if not staging.is_dir():
        raise EtlError(f"staging directory {staging} does not exist: run `objmount etl extract` "
                       "first, or pass the directory it unpacked into")
    return layout(staging)
