"""Reads are byte-exact whatever the store's answer looks like, on every backend.

Objects stored with Content-Encoding: gzip read as stored (never decompressed on
the way), in both cache modes. A server that ignores Range and answers 200 with
the whole object is read right; an answer that does not fit the request (a 200
of another version, a 206 of another range) is EIO with one clear log line,
never wrong bytes. The odd answers come from a fault-injecting relay
(tests/servers/fault_proxy.py) in front of the real server.
"""

import base64
import errno
import gzip
import os
import re
from pathlib import Path

import pytest

from tests.integration.conftest import MiB, data
from tests.integration.mounting import mounted
from tests.integration.stores import TestStore, put_many
from tests.servers.fault_proxy import FaultProxy, Rule

pytestmark = pytest.mark.mount

# Small blocks: a few MiB make several ranged GETs per file.
CACHE_MODES = {"full": ("--block-size", "1M"), "off": ("--cache-mode", "off")}


def compressible(seed: str, size: int) -> bytes:
    """Text that gzip shrinks to about 3/4 (base64 of random bytes)."""
    return base64.b64encode(data(seed, size * 3 // 4))[:size]


def preads_match(path: Path, content: bytes) -> None:
    """The whole file, and reads across 1 MiB edges, are exactly `content`."""
    assert path.read_bytes() == content
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in (0, MiB - 3, MiB + 5, 2 * MiB - 1, len(content) - 7):
            if 0 <= offset < len(content):
                assert os.pread(fd, 70_000, offset) == content[offset : offset + 70_000]
    finally:
        os.close(fd)


@pytest.fixture(scope="session")
def gzip_objects(store: TestStore) -> dict[str, bytes]:
    """Container `encoded`: gzip files stored with Content-Encoding: gzip, key -> stored bytes."""
    objects = {
        # As in the issue: 170,000 bytes of content stored as ~50 KB... here ~130 KB.
        "small.txt.gz": gzip.compress(compressible("gzip-small", 170_000)),
        "large.txt.gz": gzip.compress(compressible("gzip-large", 4 * MiB)),
    }
    store.create_container("encoded")
    for key, stored in objects.items():
        store.put("encoded", key, stored, content_encoding="gzip")
    return objects


@pytest.mark.parametrize("cache_mode", sorted(CACHE_MODES))
def test_a_gzip_encoded_object_reads_as_stored(
    store: TestStore, gzip_objects: dict[str, bytes], config: Path, tmp_path: Path,
    cache_mode: str,
) -> None:
    with mounted("remote:encoded", tmp_path / "mnt", config, *CACHE_MODES[cache_mode]) as mount:
        for key, stored in gzip_objects.items():
            path = mount.path / key
            assert os.stat(path).st_size == len(stored)
            preads_match(path, stored)
            assert gzip.decompress(path.read_bytes())  # still a valid gzip file
        assert " ERROR " not in mount.log()


RELAYED = {"whole.bin": 3 * MiB + 5, "bad-version.bin": 2 * MiB, "bad-range.bin": 2 * MiB}


@pytest.fixture(scope="session")
def relayed_objects(store: TestStore) -> dict[str, bytes]:
    """Container `relayed`, read through a FaultProxy by the tests below."""
    objects = {key: data(f"relayed-{key}", size) for key, size in RELAYED.items()}
    store.create_container("relayed")
    put_many(store, "relayed", objects)
    return objects


def ranged_gets_of(store: TestStore, key: str, ranges: str = "bytes=", **fault: object) -> Rule:
    """A rule for the ranged GETs of `key` in `relayed` whose Range matches `ranges`."""
    return Rule(method="GET", path=re.escape(store.object_path("relayed", key)) + "$",
                headers={"Range": ranges}, **fault)


@pytest.mark.parametrize("cache_mode", sorted(CACHE_MODES))
def test_a_200_to_a_ranged_get_is_sliced_to_the_range(
    store: TestStore, relayed_objects: dict[str, bytes], relay: tuple[FaultProxy, Path],
    tmp_path: Path, cache_mode: str,
) -> None:
    """A server that ignores Range answers 200 with the whole object (and its ETag)."""
    proxy, conf = relay
    content = relayed_objects["whole.bin"]
    proxy.add(ranged_gets_of(store, "whole.bin", status=200, body=content,
                             set_headers={"Content-Range": None}))
    with mounted("remote:relayed", tmp_path / "mnt", conf, *CACHE_MODES[cache_mode]) as mount:
        preads_match(mount.path / "whole.bin", content)
        assert " ERROR " not in mount.log()
    assert proxy.statuses("GET", "whole.bin")
    assert set(proxy.statuses("GET", "whole.bin")) == {200}


@pytest.mark.parametrize("cache_mode", sorted(CACHE_MODES))
def test_an_answer_that_does_not_fit_the_request_is_eio_never_wrong_bytes(
    store: TestStore, relayed_objects: dict[str, bytes], relay: tuple[FaultProxy, Path],
    tmp_path: Path, cache_mode: str,
) -> None:
    proxy, conf = relay
    # A 200 of another version: the server ignored Range and If-Match alike.
    proxy.add(ranged_gets_of(store, "bad-version.bin", status=200,
                             body=data("another version", RELAYED["bad-version.bin"]),
                             set_headers={"Content-Range": None, "ETag": '"0123abcd"'}))
    # A 206 of bytes the request did not ask for (always those of offset 0).
    size = RELAYED["bad-range.bin"]
    proxy.add(ranged_gets_of(store, "bad-range.bin", ranges="bytes=[1-9]",
                             set_headers={"Content-Range": f"bytes 0-{MiB - 1}/{size}"}))
    with mounted("remote:relayed", tmp_path / "mnt", conf, *CACHE_MODES[cache_mode]) as mount:
        for key, offset in (("bad-version.bin", 0), ("bad-range.bin", MiB)):
            fd = os.open(mount.path / key, os.O_RDONLY)
            try:
                with pytest.raises(OSError) as raised:
                    os.pread(fd, 4096, offset)
                assert raised.value.errno == errno.EIO
            finally:
                os.close(fd)
        log = mount.log()
        assert "changed since it was opened" in log
        assert "bytes 0-1048575" in log and "asked for bytes 1048576-" in log
        assert "Traceback" not in log
