"""Parsing of the durations and sizes users type (rclone style: 1h30m, 64M)."""

import re

from objmount.errors import ConfigError

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?)(ms|s|m|h|d)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"(\d+(?:\.\d*)?)([kmgt]?)(?:i?b)?")
_SIZE_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}


def parse_duration_s(text: str) -> float:
    """Return seconds for `text`: a bare number is seconds; units ms, s, m, h, d may combine."""
    text = text.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"cannot parse duration {text!r} (examples: 30, 10s, 5m, 1h30m)")
    return sum(float(number) * _SECONDS[unit] for number, unit in parts)


def parse_size_bytes(text: str) -> int:
    """Return bytes for `text`: a bare number is bytes; K, M, G, T are powers of 1024."""
    match = _SIZE.fullmatch(text.strip().lower())
    if not match:
        raise ConfigError(f"cannot parse size {text!r} (examples: 4096, 512K, 64M, 1G)")
    number, unit = match.groups()
    return int(float(number) * (1 << _SIZE_SHIFT[unit]))

