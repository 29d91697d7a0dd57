"""SeaweedFS, a store that keeps its keys in a tree of directories: every key is listed
and read exactly, with --fast-list and without, through listings cut into ranges.

Its StartAfter differs from AWS's: one that names a directory skips the whole
subtree. Range cuts that landed on a directory's name lost it (half the data set
of the training benchmark); the cuts now never name one (listing.CUT_MARK).
"""

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from objmount.backends.base import PAGE_SIZE_ENV
from tests.integration.conftest import data
from tests.integration.mounting import mounted
from tests.integration.stores import S3Store, put_many
from tests.servers.seaweed_server import SeaweedServer

pytestmark = pytest.mark.mount

PAGE = 50  # keys per listing page: every listing below takes several, cut into ranges


def tree() -> dict[str, bytes]:
    """An ImageFolder (ten class directories: the recursive listing's cuts fall on their
    names) and a directory whose subdirectories a0..a9 sort among 100 files a00..a99
    (the cuts of its own listing fall on theirs)."""
    objects = {f"images/class_{c:02d}/img_{i:04d}.jpg": data(f"img{c}.{i}", 100 + i)
               for c in range(10) for i in range(60)}
    objects |= {f"mixed/a{i:02d}": data(f"file{i}", 50 + i) for i in range(100)}
    objects |= {f"mixed/a{d}/{name}": data(f"sub{d}{name}", 70)
                for d in range(10) for name in ("x", "y")}
    return objects


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, bytes]]]:
    """A running SeaweedFS holding tree() in bucket 'tree'; its rclone.conf."""
    state = tmp_path_factory.mktemp("seaweed")
    server = SeaweedServer(state).start()
    try:
        store = S3Store(server)
        store.create_container("tree")
        objects = tree()
        put_many(store, "tree", objects)
        config = state / "rclone.conf"
        config.write_text(store.rclone_section("remote"))
        yield config, objects
    finally:
        server.stop()


def files_under(root: Path) -> set[str]:
    return {str(Path(dirpath, name).relative_to(root))
            for dirpath, _, names in os.walk(root) for name in names}


@pytest.mark.parametrize("flags", [("--fast-list",), ()], ids=["fast-list", "lazy"])
def test_every_key_is_listed_and_reads_exactly(
    seaweed: tuple[Path, dict[str, bytes]], flags: tuple[str, ...], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, objects = seaweed
    monkeypatch.setenv(PAGE_SIZE_ENV, str(PAGE))
    with mounted("remote:tree", tmp_path / "mnt", config, "--max-parallel", "32",
                 *flags) as mount:
        assert files_under(mount.path) == set(objects)
        with ThreadPoolExecutor(8) as pool:
            read = dict(zip(objects, pool.map(lambda key: (mount.path / key).read_bytes(),
                                              objects), strict=True))
        assert read == objects
