"""Durations and sizes as rclone users type them."""

import pytest

from objmount.errors import ConfigError
from objmount.units import parse_duration_s, parse_size_bytes


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


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("512K", 512 << 10), ("64M", 64 << 20), ("64MiB", 64 << 20),
     ("1g", 1 << 30), ("1.5G", 3 << 29), ("10b", 10)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size_bytes(text) == size


@pytest.mark.parametrize("text", ["", "M", "5X", "-1M", "64 M B"])
def test_bad_sizes_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_size_bytes(text)
