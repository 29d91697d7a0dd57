"""Parsing of the durations users type (rclone style: 90, 1.5s, 5m, 1h30m)."""

import re

from objmount.errors import ConfigError

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?)(ms|s|m|h|d)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


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
