"""How a Swift remote authenticates: rclone's swift options (and OS_* variables) -> SwiftAuth.

Pure translation, no network. `swift_auth` reads the keys rclone's swift
backend reads and picks one method:

- `v3applicationcredential`: Keystone v3 application credential, by id + secret,
  or by name + secret + user (user_id, or user + domain);
- `v3password`: Keystone v3 password: user or user_id, key, domain, tenant or
  tenant_id, tenant_domain;
- `v1`: Swift's own v1 auth (tempauth, swauth): auth, user, key;
- `token`: a pre-issued storage_url + auth_token and nothing to renew it with.

With `env_auth = true` (and for `:swift:container`) the OS_* variables of an
openrc file fill in whatever the remote leaves empty, as in rclone: the remote's
own options win. A Keystone method may also carry `storage_url` (used instead of
the catalog's) and `auth_token` (used until Swift refuses it).

Invariants: a secret read from the environment is registered for log redaction
here; a SwiftAuth's repr never shows a secret; every unusable combination is a
ConfigError naming the options to set.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from objmount import log as logsetup
from objmount.config import Remote
from objmount.errors import ConfigError

if TYPE_CHECKING:
    from keystoneauth1.identity.v3 import Auth

APP_CREDENTIAL = "v3applicationcredential"
PASSWORD = "v3password"
V1 = "v1"
TOKEN = "token"

# rclone swift option -> the OpenStack (or ST_*) variables that fill it under
# env_auth, first set wins; the last three keys are not rclone's but openrc's.
ENV_VARIABLES: dict[str, tuple[str, ...]] = {
    "auth": ("OS_AUTH_URL", "ST_AUTH"),
    "user": ("OS_USERNAME", "ST_USER"),
    "key": ("OS_PASSWORD", "ST_KEY"),
    "user_id": ("OS_USER_ID",),
    "domain": ("OS_USER_DOMAIN_NAME",),
    "tenant": ("OS_PROJECT_NAME", "OS_TENANT_NAME"),
    "tenant_id": ("OS_PROJECT_ID", "OS_TENANT_ID"),
    "tenant_domain": ("OS_PROJECT_DOMAIN_NAME",),
    "region": ("OS_REGION_NAME",),
    "storage_url": ("OS_STORAGE_URL",),
    "auth_token": ("OS_AUTH_TOKEN",),
    "application_credential_id": ("OS_APPLICATION_CREDENTIAL_ID",),
    "application_credential_name": ("OS_APPLICATION_CREDENTIAL_NAME",),
    "application_credential_secret": ("OS_APPLICATION_CREDENTIAL_SECRET",),
    "auth_version": ("OS_IDENTITY_API_VERSION", "ST_AUTH_VERSION"),
    "endpoint_type": ("OS_INTERFACE", "OS_ENDPOINT_TYPE"),
    "user_domain_id": ("OS_USER_DOMAIN_ID",),
    "tenant_domain_id": ("OS_PROJECT_DOMAIN_ID",),
    "auth_type": ("OS_AUTH_TYPE",),
}
_SECRETS = ("key", "application_credential_secret", "auth_token")
# OS_AUTH_TYPE values we can honour (keystoneauth's plugin names).
_AUTH_TYPES = {
    "v3applicationcredential": APP_CREDENTIAL,
    "applicationcredential": APP_CREDENTIAL,
    "password": PASSWORD,
    "v3password": PASSWORD,
}
_INTERFACES = {"public": "public", "internal": "internal", "admin": "admin"}
_V3_ONLY_KEYS = ("user_id", "domain", "tenant", "tenant_id", "tenant_domain")
_VERSION_SEGMENT = re.compile(r"/v(\d+)(\.\d+)?$")
# Keystone's built-in domain: where users and projects named without one live.
DEFAULT_DOMAIN_ID = "default"


@dataclass(frozen=True)
class SwiftAuth:
    """One way to authenticate, with everything it needs; secrets are hidden from repr."""

    method: str
    auth_url: str = ""
    params: Mapping[str, str] = field(default_factory=dict, repr=False)
    region: str | None = None
    interface: str = "public"
    storage_url: str | None = None
    auth_token: str | None = field(default=None, repr=False)
    who: str = ""  # a human name of the credential, e.g. "application credential 4f3a..."
    hint: str = ""  # which options to check when the credential is refused

    @property
    def uses_keystone(self) -> bool:
        return self.method in (APP_CREDENTIAL, PASSWORD)

    def plugin(self) -> "Auth":
        """Return the keystoneauth1 plugin of a Keystone method (no network)."""
        from keystoneauth1.identity import v3

        if self.method == APP_CREDENTIAL:
            return v3.ApplicationCredential(auth_url=self.auth_url, **self.params)
        if self.method == PASSWORD:
            return v3.Password(auth_url=self.auth_url, **self.params)
        raise ValueError(f"{self.method} does not use Keystone")


def swift_auth(remote: Remote, env: Mapping[str, str]) -> SwiftAuth:
    """Translate a swift remote (and, with env_auth, `env`) into a SwiftAuth.

    Raises ConfigError when the options name no usable way to authenticate.
    """
    env_auth = remote.flag("env_auth")
    opts = _merged(remote, env if env_auth else {})
    where = f"remote {remote.name!r}" + (" (with OS_* variables)" if env_auth else "")
    region = opts.get("region") or None
    interface = _interface(opts.get("endpoint_type", ""), where)
    storage_url = opts.get("storage_url") or None
    auth_token = opts.get("auth_token") or None
    common = {"region": region, "interface": interface, "storage_url": storage_url,
              "auth_token": auth_token}

    method = _method(opts, where)
    if method == TOKEN:
        if not (storage_url and auth_token) and env_auth:
            raise ConfigError(
                f"{where} has no Swift credentials: source an openrc file (OS_AUTH_URL with "
                "OS_APPLICATION_CREDENTIAL_ID and _SECRET, or OS_USERNAME and OS_PASSWORD)"
            )
        if not (storage_url and auth_token):
            raise ConfigError(
                f"{where} has no Swift credentials: set application_credential_id + "
                "application_credential_secret, user + key (with auth), or storage_url + "
                "auth_token, or env_auth = true to use OS_* variables"
            )
        return SwiftAuth(method=TOKEN, who="the pre-issued auth_token",
                         hint="get a new token, or configure credentials", **common)
    if not opts.get("auth"):
        variable = " (OS_AUTH_URL)" if env_auth else ""
        raise ConfigError(f"{where} has credentials but no auth URL: set auth{variable}, "
                          "e.g. https://keystone.example.org:5000/v3")
    if method == V1:
        if not opts.get("user"):
            raise ConfigError(f"{where}: v1 auth needs user (and key), not user_id")
        return SwiftAuth(method=V1, auth_url=opts["auth"],
                         params={"user": opts["user"], "key": opts["key"]},
                         who=f"user {opts['user']!r} (v1 auth)", hint="user and key", **common)
    auth_url = _v3_url(opts["auth"])
    if method == APP_CREDENTIAL:
        return _application_credential(opts, auth_url, where, common)
    return _password(opts, auth_url, where, common)


def _merged(remote: Remote, env: Mapping[str, str]) -> dict[str, str]:
    """The remote's non-empty options, completed from `env` (empty unless env_auth)."""
    opts = {key: value.strip() for key, value in remote.options.items() if value.strip()}
    for key, variables in ENV_VARIABLES.items():
        if opts.get(key):
            continue
        value = next((env[v].strip() for v in variables if env.get(v, "").strip()), "")
        if value:
            opts[key] = value
            if key in _SECRETS:
                logsetup.register_secret(value)
    return opts


def _interface(endpoint_type: str, where: str) -> str:
    # keystoneauth and openrc files say "public"; rclone's docs say "public" or "publicURL".
    name = endpoint_type.lower().removesuffix("url") or "public"
    if name not in _INTERFACES:
        raise ConfigError(f"{where}: endpoint_type {endpoint_type!r} is not one of "
                          "public, internal, admin")
    return _INTERFACES[name]


def _method(opts: Mapping[str, str], where: str) -> str:
    """Pick the method from OS_AUTH_TYPE if set, else from which options are present."""
    auth_type = opts.get("auth_type", "").lower()
    has_app_cred = bool(opts.get("application_credential_id")
                        or opts.get("application_credential_name"))
    has_password = bool((opts.get("user") or opts.get("user_id")) and opts.get("key"))
    if auth_type:
        if auth_type not in _AUTH_TYPES:
            supported = ", ".join(sorted(_AUTH_TYPES))
            raise ConfigError(f"{where}: OS_AUTH_TYPE {auth_type!r} is not supported "
                              f"(supported: {supported}); create an application credential")
        chosen = _AUTH_TYPES[auth_type]
        if chosen == APP_CREDENTIAL and not has_app_cred:
            raise ConfigError(f"{where}: OS_AUTH_TYPE is {auth_type} but no application "
                              "credential id or name is set (OS_APPLICATION_CREDENTIAL_ID)")
        if chosen == PASSWORD and not has_password:
            raise ConfigError(f"{where}: OS_AUTH_TYPE is {auth_type} but the user (or "
                              "user_id) and key (OS_USERNAME, OS_PASSWORD) are not both set")
        return chosen
    if has_app_cred:
        return APP_CREDENTIAL
    if has_password:
        return PASSWORD if _keystone_version(opts, where) == 3 else V1
    if opts.get("user") or opts.get("user_id"):
        raise ConfigError(f"{where} has a user but no key (password): set key")
    return TOKEN


def _keystone_version(opts: Mapping[str, str], where: str) -> int:
    """Auth version of user + key: auth_version, else the URL's version, else as rclone."""
    explicit = opts.get("auth_version", "").lower().removeprefix("v")
    if explicit:
        version = explicit.split(".")[0]
        if version not in ("1", "2", "3"):
            raise ConfigError(f"{where}: auth_version {explicit!r} is not 1, 2 or 3")
    else:
        match = _VERSION_SEGMENT.search(urlsplit(opts.get("auth", "")).path.rstrip("/"))
        if match:
            version = match.group(1)
        elif any(opts.get(key) for key in _V3_ONLY_KEYS):
            version = "3"  # only Keystone v3 knows domains, projects and user ids
        else:
            version = "1"  # rclone's (ncw/swift's) choice for an unversioned URL
    if version == "2":
        raise ConfigError(f"{where}: Keystone v2.0 auth is not supported (it was removed from "
                          "OpenStack in 2017): use the v3 auth URL")
    return int(version)


def _v3_url(url: str) -> str:
    """The Keystone URL with its /v3 path, added when the URL has no version."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    match = _VERSION_SEGMENT.search(path)
    if match and match.group(1) == "2":
        raise ConfigError(f"auth URL {url} is Keystone v2.0, which is not supported: use the "
                          "v3 URL")
    if not match:
        path += "/v3"
    return parts._replace(path=path).geturl()


def _application_credential(
    opts: Mapping[str, str], auth_url: str, where: str, common: dict
) -> SwiftAuth:
    secret = opts.get("application_credential_secret")
    if not secret:
        raise ConfigError(f"{where} has an application credential but no "
                          "application_credential_secret")
    params = {"application_credential_secret": secret}
    cred_id = opts.get("application_credential_id")
    if cred_id:
        params["application_credential_id"] = cred_id
        who = f"application credential {cred_id}"
        hint = "application_credential_id and application_credential_secret"
    else:
        name = opts["application_credential_name"]
        params["application_credential_name"] = name
        params |= _user(opts, where, "an application credential given by name")
        who = f"application credential {name!r} of user {opts.get('user_id') or opts['user']}"
        hint = "application_credential_name, application_credential_secret and the user"
    return SwiftAuth(method=APP_CREDENTIAL, auth_url=auth_url, params=params, who=who,
                     hint=hint, **common)


def _password(opts: Mapping[str, str], auth_url: str, where: str, common: dict) -> SwiftAuth:
    params = {"password": opts["key"]} | _user(opts, where, "password auth")
    if opts.get("tenant_id"):
        params["project_id"] = opts["tenant_id"]
    elif opts.get("tenant"):
        params["project_name"] = opts["tenant"]
        # As in rclone: the project's domain defaults to the user's.
        if opts.get("tenant_domain") or opts.get("domain"):
            params["project_domain_name"] = opts.get("tenant_domain") or opts["domain"]
        else:
            params["project_domain_id"] = opts.get("tenant_domain_id") or DEFAULT_DOMAIN_ID
    # Neither: Keystone scopes the token to the user's default project, if any.
    user = opts.get("user") or opts.get("user_id")
    return SwiftAuth(method=PASSWORD, auth_url=auth_url, params=params,
                     who=f"user {user!r} (password)", hint="user (or user_id), key and domain",
                     **common)


def _user(opts: Mapping[str, str], where: str, needed_by: str) -> dict[str, str]:
    """The user's keystoneauth parameters: user_id, or a name with its domain."""
    if opts.get("user_id"):
        return {"user_id": opts["user_id"]}
    if not opts.get("user"):
        raise ConfigError(f"{where}: {needed_by} needs user_id, or user and domain")
    if opts.get("domain"):
        return {"username": opts["user"], "user_domain_name": opts["domain"]}
    return {"username": opts["user"],
            "user_domain_id": opts.get("user_domain_id") or DEFAULT_DOMAIN_ID}
