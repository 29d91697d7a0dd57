"""Remotes from an rclone-style config file and the environment.

A remote is an INI section (`[name]`, `type = s3`, keys as rclone names them).
The file is `--config`, else `$RCLONE_CONFIG`, else `~/.config/rclone/rclone.conf`.
`OBJMOUNT_CONFIG_<REMOTE>_<KEY>` variables override or add keys, and can define
a remote on their own. A target names a remote, a container and an optional
prefix: `remote:container/some/prefix`; `:s3:bucket` and `:swift:container`
name an unnamed remote configured from the environment alone.

Invariant: secret values are registered for log redaction as soon as they are
read, and never appear in a Remote's repr or in `describe()`.
"""

import configparser
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from objmount import log as logsetup
from objmount.errors import ConfigError

log = logging.getLogger(__name__)

ENV_PREFIX = "OBJMOUNT_CONFIG_"
SECRET_KEYS = frozenset(
    {
        "secret_access_key",
        "session_token",
        "key",
        "application_credential_secret",
        "auth_token",
    }
)


@dataclass(frozen=True)
class Remote:
    """A named remote: its backend type and its rclone-style options."""

    name: str
    type: str
    options: Mapping[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        """Return option `key`, or `default` when unset or empty."""
        return self.options.get(key) or default

    def flag(self, key: str) -> bool:
        """Return option `key` read as an rclone boolean (true/false, 1/0, yes/no)."""
        return self.get(key, "false").strip().lower() in ("true", "1", "yes", "on")

    def describe(self) -> str:
        """Return `name (type): key=value ...` with secrets shown as ***."""
        shown = " ".join(
            f"{k}={'***' if k in SECRET_KEYS else v}"
            for k, v in sorted(self.options.items())
            if k != "type"
        )
        return f"{self.name} ({self.type}){': ' + shown if shown else ''}"

    def __repr__(self) -> str:
        return f"Remote({self.describe()})"


@dataclass(frozen=True)
class Target:
    """What to mount: a remote, a container in it, and a key prefix ('' or ending in '/')."""

    remote: Remote
    container: str
    prefix: str

    def __str__(self) -> str:
        return f"{self.remote.name}:{self.container}/{self.prefix}".rstrip("/")


def default_config_path(env: Mapping[str, str]) -> Path:
    """Return the config path rclone itself would use: $RCLONE_CONFIG or ~/.config/rclone."""
    if env.get("RCLONE_CONFIG"):
        return Path(env["RCLONE_CONFIG"])
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "rclone" / "rclone.conf"


def load_remotes(
    config_path: Path | None, env: Mapping[str, str] | None = None
) -> dict[str, Remote]:
    """Read every remote from the config file and the environment overrides.

    A missing file is not an error when `config_path` was not given explicitly:
    remotes may come from the environment alone.
    """
    env = os.environ if env is None else env
    sections: dict[str, dict[str, str]] = {}
    path = config_path or default_config_path(env)
    if path.is_file():
        sections = _read_ini(path)
    elif config_path is not None:
        raise ConfigError(f"config file {path} does not exist")
    for name, values in _env_sections(env).items():
        sections.setdefault(name, {}).update(values)
    remotes = {}
    for name, values in sections.items():
        for key in SECRET_KEYS & values.keys():
            logsetup.register_secret(values[key])
        remotes[name] = Remote(name=name, type=values.get("type", ""), options=values)
    return remotes


def _read_ini(path: Path) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        first_line = str(exc).splitlines()[0]
        raise ConfigError(f"cannot parse config file {path}: {first_line}") from None
    return {name: dict(parser[name]) for name in parser.sections()}


def _env_sections(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Group OBJMOUNT_CONFIG_<REMOTE>_<KEY> variables by remote (lower-cased).

    The remote is the part before the first underscore of what follows the
    prefix, so remotes defined this way cannot contain '_' (as with rclone).
    """
    sections: dict[str, dict[str, str]] = {}
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        remote, sep, key = var[len(ENV_PREFIX) :].partition("_")
        if sep and remote and key:
            sections.setdefault(remote.lower(), {})[key.lower()] = value
    return sections


def parse_target(
    spec: str, remotes: Mapping[str, Remote], config_path: Path | None = None
) -> Target:
    """Turn `remote:container[/prefix]` (or `:type:container`) into a Target.

    `config_path` is the --config the remotes were read with (None: the default
    path), named when the remote is not among them.
    """
    if spec.startswith(":"):
        kind, sep, path = spec[1:].partition(":")
        if not sep or not kind:
            raise ConfigError(f"cannot parse {spec!r}: expected :TYPE:CONTAINER[/PREFIX]")
        remote = Remote(name=f":{kind}", type=kind, options={"type": kind, "env_auth": "true"})
    else:
        name, sep, path = spec.partition(":")
        if not sep or not name:
            raise ConfigError(
                f"cannot parse {spec!r}: expected REMOTE:CONTAINER[/PREFIX] (e.g. chi_tacc:data)"
            )
        if name not in remotes:
            known = ", ".join(sorted(remotes)) or "none"
            read = config_path or default_config_path(os.environ)
            source = f"read {read}" if read.is_file() else f"no config file at {read}"
            raise ConfigError(
                f"remote {name!r} is not configured (configured remotes: {known}; {source}); "
                "add it to rclone.conf or set OBJMOUNT_CONFIG_"
                f"{name.upper()}_TYPE"
            )
        remote = remotes[name]
    container, _, prefix = path.strip("/").partition("/")
    if not container:
        raise ConfigError(f"{spec!r} names no container: expected REMOTE:CONTAINER[/PREFIX]")
    prefix = prefix.strip("/")
    return Target(remote=remote, container=container, prefix=f"{prefix}/" if prefix else "")
