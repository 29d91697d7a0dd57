"""Keys that cannot be file names are skipped, never fatal; directories win name clashes."""

import os

import pytest

from tests.integration.mounting import MountProcess

pytestmark = pytest.mark.mount


def test_only_valid_names_are_listed(shared_mount: MountProcess) -> None:
    names = set(os.listdir(shared_mount.path / "hostile"))
    assert names == {"ok.txt", "é" * 127 + "z", "clash"}


def test_a_directory_hides_a_file_of_the_same_name(shared_mount: MountProcess, dataset) -> None:
    clash = shared_mount.path / "hostile" / "clash"
    assert clash.is_dir()
    assert (clash / "inside.txt").read_bytes() == dataset["hostile/clash/inside.txt"]


def test_each_skipped_key_is_reported_once(mount: MountProcess) -> None:
    """A mount of its own: its log is read whole, once it has stopped."""
    for _ in range(3):
        os.listdir(mount.path / "hostile")
    mount.stop()
    log = mount.log()
    assert log.count("skipping objects under 'hostile//': empty path segment") == 1
    assert log.count("skipping objects under 'hostile/./'") == 1
    assert log.count("skipping object 'hostile/" + "x" * 256) == 1
    assert log.count("object 'hostile/clash' is hidden") == 1


def test_unicode_names_round_trip(shared_mount: MountProcess, dataset) -> None:
    assert (shared_mount.path / "café" / "naïve.txt").read_bytes() == dataset["café/naïve.txt"]
