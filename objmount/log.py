"""Logging set-up: verbosity, optional log file, secret redaction, log-once.

Invariants:
- a value registered with `register_secret` never reaches a handler, whatever
  logger, message format, traceback or stack carries it;
- the value of a credential field the SDKs print at -vvv (the
  `x-amz-security-token` header, SessionToken and SecretAccessKey in STS, SSO
  and instance-metadata answers) is masked even if it was never registered, so
  credentials an SDK refreshes on its own stay hidden too;
- the log file is private to the user (see `private.open_private_file`): created
  0600, never through a symlink, never another user's file.
"""

import logging
import os
import re
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from objmount.private import open_private_file

_secrets: set[str] = set()
_registered: re.Pattern[str] | None = None  # every secret, as one alternation
_secrets_lock = threading.Lock()
_logged_once: set[str] = set()
_once_lock = threading.Lock()
_REDACTED = "***"
# Fields whose value is a credential, as botocore prints them at debug: a header in
# a canonical request (`name:value`), a headers dict (`'Name': b'value'`), a query
# (`name=value`), JSON (`"Name": "value"`, IMDS and container credentials call the
# token "Token") and XML (`<Name>value</Name>`, STS).
_FIELD_NAMES = r"x-amz-security-token|(?:aws_)?session_?token|(?:aws_)?secret_?access_?key"
_CREDENTIAL_FIELDS = re.compile(
    rf"""(?ix)
    (?P<lead>
        (?<![\w-])["']?(?:{_FIELD_NAMES})["']?\s*[:=]\s*b?["']?
      | "token"\s*:\s*"
      | <(?:SessionToken|SecretAccessKey)>
    )
    (?P<value>[^\s"'<>&,;}}\]]{{4,}})
    """
)


def register_secret(value: str | None) -> None:
    """Mark `value` (a key, password or token) for redaction in every log line."""
    global _registered
    if value and len(value) >= 4 and value not in _secrets:
        with _secrets_lock:
            _secrets.add(value)
            # Longest first: a secret that contains another is masked whole.
            alternatives = sorted(_secrets, key=len, reverse=True)
            _registered = re.compile("|".join(map(re.escape, alternatives)))


def redact(text: str) -> str:
    """Return `text` with every registered secret and credential field value replaced by ***."""
    if _registered is not None:
        text = _registered.sub(_REDACTED, text)
    return _CREDENTIAL_FIELDS.sub(lambda m: m["lead"] + _REDACTED, text)


def redact_url(url: str) -> str:
    """Return `url` as messages show it: userinfo and query string (and fragment) as ***.

    A presigned or token URL carries its credential in the query, a
    `user:pass@host` URL in the userinfo; scheme, host, port and path stay.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = f"{_REDACTED}@{netloc.rpartition('@')[2]}"
        return urlunsplit((parts.scheme, netloc, parts.path,
                           _REDACTED if parts.query else "", _REDACTED if parts.fragment else ""))
    except ValueError:  # e.g. a broken IPv6 host: show nothing of it
        return _REDACTED


def register_url(url: str) -> None:
    """Register the secret parts of `url` (password, query, fragment) for redaction."""
    try:
        parts = urlsplit(url)
        secrets = (parts.password, parts.query, parts.fragment)
    except ValueError:
        secrets = (url,)
    for secret in secrets:
        register_secret(secret)


class _SecretFilter(logging.Filter):
    """Redacts the message, the traceback and the stack of every record in place."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def open_log_file(path: Path) -> int:
    """Open `path` for appending, private to the user; return its descriptor.

    Blocks on a few stat calls; raises ConfigError for a symlink, another user's
    file or a directory others may write to (see private.open_private_file).
    """
    return open_private_file(path, "--log-file", fix="choose another path")


def setup(verbosity: int, log_file: Path | None = None) -> None:
    """Configure the root logger: 0 = warnings, 1 = info, 2 = debug, 3+ = the SDKs' debug too.

    Raises ConfigError if `log_file` cannot be opened privately (see open_log_file).
    """
    level = [logging.WARNING, logging.INFO][verbosity] if verbosity < 2 else logging.DEBUG
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.StreamHandler(os.fdopen(open_log_file(log_file), "a",
                                                  encoding="utf-8"))
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(_SecretFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The SDKs log request headers (signatures, tokens) at debug: only at -vvv.
    sdk_level = logging.DEBUG if verbosity >= 3 else logging.WARNING
    for name in ("botocore", "boto3", "urllib3", "s3transfer", "swiftclient", "keystoneauth"):
        logging.getLogger(name).setLevel(sdk_level)


def once(logger: logging.Logger, level: int, key: str, message: str, *args: object,
         exc_info: bool = False) -> None:
    """Log `message` the first time `key` is seen in this process, and never again."""
    with _once_lock:
        if key in _logged_once:
            return
        _logged_once.add(key)
    logger.log(level, message, *args, exc_info=exc_info)
