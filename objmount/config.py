"""Remotes from an rclone-style config file and the environment.

A remote is an INI section (`[name]`, `type = s3`, keys as rclone names them).
The file is `--config`, else `$RCLONE_CONFIG`, else `~/.config/rclone/rclone.conf`.
`OBJMOUNT_CONFIG_<REMOTE>_<KEY>` variables override or add keys, and can define
a remote on their own. A target names a remote, a container and an optional
prefix: `remote:container/some/prefix`; `:s3:bucket` and `:swift:container`
name an unnamed remote configured from the environment alone.

Invariant: only options on the allow-list of the remote's type (PUBLIC_KEYS)
appear in a Remote's repr or in `describe()`, URLs without userinfo or query;
every other value is masked there and registered for log redaction as soon as
it is read.
"""

import configparser
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from objmount import log as logsetup
from objmount.errors import ConfigError

log = logging.getLogger(__name__)

ENV_PREFIX = "OBJMOUNT_CONFIG_"
# Options that are safe to print, per rclone backend type: names, places, switches
# and identifiers, never a key, password, token or a file's content. `remotes`
# masks every other option (an rclone-obscured `pass` is reversible by anyone, an
# SSE-C key or a service account's JSON is the credential itself), so an option
# this list does not know is hidden, not shown.
_COMMON_PUBLIC = frozenset({"type", "description", "provider", "env_auth", "region", "endpoint"})
PUBLIC_KEYS: dict[str, frozenset[str]] = {
    "s3": frozenset({
        "access_key_id", "location_constraint", "acl", "bucket_acl", "storage_class",
        "server_side_encryption", "sse_customer_algorithm", "force_path_style", "v2_auth",
        "use_accelerate_endpoint", "profile", "shared_credentials_file", "chunk_size",
        "upload_cutoff", "list_chunk", "list_version", "no_check_bucket", "no_head",
        "disable_checksum",
    }),
    "swift": frozenset({
        "user", "user_id", "domain", "tenant", "tenant_id", "tenant_domain", "auth",
        "auth_version", "endpoint_type", "storage_url", "storage_policy",
        "application_credential_id", "application_credential_name", "no_large_objects",
        "no_chunk", "chunk_size", "leave_parts_on_error", "fetch_until_empty_page",
    }),
    "azureblob": frozenset({
        "account", "tenant", "client_id", "use_msi", "msi_object_id", "msi_client_id",
        "use_emulator", "access_tier", "chunk_size", "upload_cutoff", "list_chunk",
    }),
    "google cloud storage": frozenset({
        "client_id", "project_number", "user_project", "service_account_file",
        "object_acl", "bucket_acl", "bucket_policy_only", "location", "storage_class",
        "anonymous", "directory_markers",
    }),
    "b2": frozenset({"account", "hard_delete", "versions", "chunk_size", "upload_cutoff"}),
    "webdav": frozenset({"url", "vendor", "user"}),
    "sftp": frozenset({
        "host", "user", "port", "key_file", "pubkey_file", "known_hosts_file",
        "key_use_agent", "use_insecure_cipher", "disable_hashcheck", "shell_type",
    }),
    "ftp": frozenset({"host", "user", "port", "tls", "explicit_tls", "no_check_certificate"}),
    "http": frozenset({"url", "no_slash", "no_head"}),
    "local": frozenset({"nounc", "copy_links", "links", "one_file_system"}),
    "alias": frozenset({"remote"}),
    "crypt": frozenset({"remote", "filename_encryption", "directory_name_encryption"}),
}
PUBLIC_KEYS["gcs"] = PUBLIC_KEYS["google cloud storage"]
# Options whose value is a URL: shown without userinfo and query string.
_URL_KEYS = frozenset({"endpoint", "auth", "storage_url", "url"})
# A remote name OBJMOUNT_CONFIG_<REMOTE>_<KEY> variables can define (no '_': _env_sections).
_ENV_NAME = re.compile(r"[A-Za-z0-9]+")
# Values of masked options that are no secret (and too common to redact from logs).
_PLAIN_VALUE = re.compile(r"(?i)true|false|yes|no|on|off|[0-9.]+[kmgtp]?i?b?")


def is_public(remote_type: str, key: str) -> bool:
    """Return True if option `key` of a `remote_type` remote may be printed as it is."""
    return key in _COMMON_PUBLIC or key in PUBLIC_KEYS.get(remote_type.lower(), ())


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
        """Return `name (type): key=value ...`: public options as they are (URLs without
        userinfo and query), every other option as ***."""
        shown = " ".join(
            f"{k}={self._shown(k, v)}" for k, v in sorted(self.options.items()) if k != "type"
        )
        return f"{self.name} ({self.type}){': ' + shown if shown else ''}"

    def _shown(self, key: str, value: str) -> str:
        if not is_public(self.type, key):
            return "***"
        return logsetup.redact_url(value) if key in _URL_KEYS else value

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
        remote = Remote(name=name, type=values.get("type", ""), options=values)
        _register_secrets(remote)
        remotes[name] = remote
    return remotes


def _register_secrets(remote: Remote) -> None:
    """Register for log redaction every value `describe` masks (booleans and sizes
    aside), and the secret parts of public URLs."""
    for key, value in remote.options.items():
        if not is_public(remote.type, key):
            if not _PLAIN_VALUE.fullmatch(value.strip()):
                logsetup.register_secret(value.strip())
        elif key in _URL_KEYS:
            logsetup.register_url(value)


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
            # A name _ENV_NAME refuses is never spliced into a variable (it may hold a newline).
            hint = f" or set {ENV_PREFIX}{name.upper()}_TYPE" if _ENV_NAME.fullmatch(name) else ""
            raise ConfigError(
                f"remote {name!r} is not configured (configured remotes: {known}; {source}); "
                f"add it to rclone.conf{hint}"
            )
        remote = remotes[name]
    container, _, prefix = path.strip("/").partition("/")
    if not container:
        raise ConfigError(f"{spec!r} names no container: expected REMOTE:CONTAINER[/PREFIX]")
    prefix = prefix.strip("/")
    return Target(remote=remote, container=container, prefix=f"{prefix}/" if prefix else "")
