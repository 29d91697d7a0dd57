"""Durations as rclone users type them."""

import pytest

from objmount.errors import ConfigError
from objmount.units import parse_duration_s


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("1.5", 1.5), ("10s", 10), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25),
     ("1d", 86400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "5x", "5m junk", "-"])
def test_bad_durations_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration_s(text)
