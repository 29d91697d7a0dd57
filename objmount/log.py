"""Logging set-up: verbosity, optional log file, secret redaction, log-once.

Invariant: a value registered with `register_secret` never reaches a handler,
whatever logger or message format carries it.
"""

import logging
import sys
import threading
from pathlib import Path

_secrets: set[str] = set()
_logged_once: set[str] = set()
_once_lock = threading.Lock()
_REDACTED = "***"


def register_secret(value: str | None) -> None:
    """Mark `value` (a key, password or token) for redaction in every log line."""
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    """Return `text` with every registered secret replaced by ***."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, _REDACTED)
    return text


class _SecretFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


def setup(verbosity: int, log_file: Path | None = None) -> None:
    """Configure the root logger: 0 = warnings, 1 = info, 2+ = debug (SDKs too)."""
    level = [logging.WARNING, logging.INFO][verbosity] if verbosity < 2 else logging.DEBUG
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(log_file)
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
