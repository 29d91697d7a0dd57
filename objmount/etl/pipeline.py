"""Pipeline files: one dataset's three ETL stages described in TOML.

    staging = "Food-11"                # extract unpacks here, transform reshapes, load reads
    [extract]
    url = "https://example.org/x.zip"  # required; or "${DATA_URL}", taken from the environment
    sha256 = "..."                     # optional: the download must match it
    [transform]
    layout = "food11"                  # a layout name, or "module:function"
    [load]
    target = "chi_tacc:${CONTAINER}"   # required; ${NAME} is taken from the environment
    transfers = 32                     # and checkers, segment_size, clean, retries

A relative staging path is relative to the current directory; a
"module:function" layout is imported from the pipeline file's directory first.
The command line may override url, staging and target. `${NAME}` in url and
target is replaced with the environment's value when the stage runs (`$$` is a
`$`), so a presigned URL or a container name need not be written in the file.
"""

import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from objmount.errors import ConfigError
from objmount.etl.load import LoadOptions
from objmount.log import redact_url
from objmount.units import parse_size_bytes

# Every key a pipeline file may hold, by section ("" is the top level), with its type.
_KEYS: dict[str, dict[str, type]] = {
    "": {"staging": str},
    "extract": {"url": str, "sha256": str},
    "transform": {"layout": str},
    "load": {"target": str, "transfers": int, "checkers": int, "segment_size": str,
             "clean": bool, "retries": int},
}
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


@dataclass(frozen=True)
class Pipeline:
    """A parsed pipeline file; `directory` is where it lies (for module:function layouts)."""

    url: str
    sha256: str | None
    staging: Path
    layout: str
    target: str
    load: LoadOptions
    directory: Path


def read_pipeline(path: Path) -> Pipeline:
    """Parse and check a pipeline file; raises ConfigError naming what is wrong."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read pipeline file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot parse pipeline file {path}: {exc}") from None
    values = _checked(document, path)
    for required in ("extract.url", "load.target"):
        if required not in values:
            raise ConfigError(f"pipeline file {path} has no {required}")
    for name in ("load.transfers", "load.checkers"):
        if values.get(name, 1) < 1:
            raise ConfigError(f"pipeline file {path}: {name} must be at least 1")
    defaults = LoadOptions()
    return Pipeline(
        url=values["extract.url"],
        sha256=values.get("extract.sha256") or None,
        staging=Path(values.get("staging", "staging")),
        layout=values.get("transform.layout", "food11"),
        target=values["load.target"],
        load=LoadOptions(
            transfers=values.get("load.transfers", defaults.transfers),
            checkers=values.get("load.checkers", defaults.checkers),
            segment_size_bytes=parse_size_bytes(values["load.segment_size"])
            if "load.segment_size" in values else defaults.segment_size_bytes,
            clean=values.get("load.clean", defaults.clean),
            retries=values.get("load.retries", defaults.retries),
        ),
        directory=path.parent,
    )


def _checked(document: dict[str, object], path: Path) -> dict[str, object]:
    """Flatten the document to {"section.key": value}, refusing unknown keys and wrong types."""
    values: dict[str, object] = {}
    sections = {"": {k: v for k, v in document.items() if not isinstance(v, dict)}}
    sections |= {k: v for k, v in document.items() if isinstance(v, dict)}
    for section, table in sections.items():
        if section not in _KEYS:
            raise ConfigError(f"pipeline file {path}: unknown section [{section}]")
        for key, value in table.items():
            name = f"{section}.{key}" if section else key
            expected = _KEYS[section].get(key)
            if expected is None:
                raise ConfigError(f"pipeline file {path}: unknown key {name}")
            if type(value) is not expected:
                raise ConfigError(f"pipeline file {path}: {name} must be {_TYPE_NAMES[expected]}")
            values[name] = value
    return values


def expand_variables(spec: str, env: Mapping[str, str], what: str, option: str) -> str:
    """Replace `${NAME}` in `spec` (the `what` of a pipeline file, e.g. "load.target") with
    the environment's value; raises ConfigError naming the variable to set, or `option`.

    `spec` is named in errors without userinfo or query string (a URL's secrets).
    """
    shown = redact_url(spec)
    try:
        return string.Template(spec).substitute(env)
    except KeyError as exc:
        name = exc.args[0]
        raise ConfigError(f"{what} {shown!r} uses ${{{name}}}: set {name} "
                          f"(export {name}=...) or pass {option}") from None
    except ValueError:
        raise ConfigError(f"{what} {shown!r}: write variables as ${{NAME}}, and $ as $$"
                          ) from None
