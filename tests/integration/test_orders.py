"""Orders over the control channel of real mounts, on every backend: GETs ahead in the order
(counted at the server, through a relay that records every exchange), readers in several
threads, malformed messages, another user, and the cache under oversubscription."""

import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.control_raw import raw_request
from tests.crafted_cache import AS_NOBODY, SYSTEM_PYTHON
from tests.integration.conftest import data
from tests.integration.mounting import MountProcess, mount_stats, mounted, objmount
from tests.integration.stores import TestStore, gets_seen, put_many
from tests.no_torch import objmount_without_torch
from tests.servers.fault_proxy import FaultProxy
from tests.servers.net import wait_until

pytestmark = pytest.mark.mount

REPO = Path(__file__).parents[2]
CONTAINER = "ordered"
FILES = 120
# What a test waits for at most: GETs of a few MiB through a local relay.
DEADLINE_S = 60
@pytest.fixture(scope="session")
def images(store: TestStore) -> dict[str, bytes]:
    """Container `ordered`: FILES files of 40-76 KB in 4 class directories."""
    objects = {f"train/class_{i % 4}/img_{i:04d}.jpg": data(f"ordered-{i}", 40_000 + 300 * i)
               for i in range(FILES)}
    store.create_container(CONTAINER)
    put_many(store, CONTAINER, objects)
    return objects


def object_gets(proxy: FaultProxy, store: TestStore, keys: list[str]) -> list[str]:
    return gets_seen(proxy, store, CONTAINER, keys)


def cli(*args: str, without_torch: bool = False) -> subprocess.CompletedProcess[str]:
    """The objmount CLI (in an interpreter where torch cannot be imported, if asked)."""
    return objmount_without_torch(*args) if without_torch else objmount(*args)


def publish(mount: MountProcess, order: list[str], tmp_path: Path, *args: str,
            without_torch: bool = False) -> None:
    order_file = tmp_path / "order.txt"
    order_file.write_text("\n".join(order) + "\n")
    result = cli("prefetch", str(mount.path), "--order", str(order_file), *args,
                 without_torch=without_torch)
    assert result.returncode == 0, result.stderr
    assert f"{len(order):,} paths published" in result.stderr


def stats_json(mount: MountProcess, without_torch: bool = False) -> dict:
    result = cli("stats", str(mount.path), "--json", "--interval", "0",
                 without_torch=without_torch)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_an_order_published_over_the_control_channel_is_fetched_ahead_in_that_order(
    store: TestStore, images: dict[str, bytes], relay: tuple[FaultProxy, Path],
    tmp_path: Path,
) -> None:
    """One GET in flight at a time: the server sees the order exactly. The CLI runs where
    torch cannot be imported."""
    proxy, conf = relay
    order = random.Random(1).sample(sorted(images), 40)
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", conf, "--order-ahead", "1") as mount:
        os.listdir(mount.path / "train")
        publish(mount, order, tmp_path, without_torch=True)
        wait_until(lambda: len(object_gets(proxy, store, order)) == len(order), DEADLINE_S,
                   "the GETs ahead")
        assert object_gets(proxy, store, order) == order
        for key in order:
            assert (mount.path / key).read_bytes() == images[key]
        assert object_gets(proxy, store, sorted(images)) == order  # no GET more
        stats = stats_json(mount, without_torch=True)
        assert stats["prefetch_used_files"] == len(order)
        assert stats["prefetch_unused_files"] == stats["prefetch_unused_bytes"] == 0
        assert stats["orders"] == [] and stats["hit_rate"] == 1.0
        assert stats["counters"]["dir_ahead_gets"] == 0


def test_readers_in_several_threads_out_of_order_keep_the_position(
    store: TestStore, images: dict[str, bytes], relay: tuple[FaultProxy, Path],
    tmp_path: Path,
) -> None:
    """Four workers read batches of 8 of the order, each its own batch, all at once (as a
    DataLoader does): the position follows them to the end, nothing is fetched twice or in
    vain, and the GETs come in the order, up to the GETs in flight."""
    proxy, conf = relay
    keys = sorted(images)
    order = random.Random(2).sample(keys, len(keys))
    ahead = 8
    with mounted(f"remote:{CONTAINER}", tmp_path / "mnt", conf,
                 "--order-ahead", str(ahead)) as mount:
        os.listdir(mount.path / "train")
        publish(mount, order, tmp_path, "--client", "rank0")
        batches = [order[i:i + 8] for i in range(0, len(order), 8)]
        errors: list[str] = []

        def worker(number: int) -> None:
            for batch in batches[number::4]:
                for key in batch:
                    if (mount.path / key).read_bytes() != images[key]:
                        errors.append(key)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE_S)
        assert errors == [] and not any(t.is_alive() for t in threads)
        counters = mount_stats(mount)
        gets = object_gets(proxy, store, keys)
    assert sorted(gets) == sorted(order)  # every file once
    assert all(abs(gets.index(key) - rank) <= 4 * 8 + ahead for rank, key in enumerate(order))
    assert counters["prefetch_used_files"] + counters["cache_misses"] == len(order)
    assert counters["prefetch_used_files"] >= len(order) // 2
    assert counters["prefetch_unused_files"] == 0
    assert counters["orders"] == 0  # every file opened: the order ended
    assert "order of 'rank0' ended (every file opened or passed)" in mount.log()


def control_socket(mount: MountProcess) -> str:
    return json.loads(os.getxattr(mount.path, "user.objmount.mount"))["control"]


MALFORMED = [
    (b"GET / HTTP/1.1\r\n\r\n", "bad_request"),
    (b'{"v": 1, "op": "order", "bytes": 1073741824}\n', "too_large"),
    (b"{" + b" " * (100 << 10), "too_large"),
    (b'{"v": 1, "op": "shutdown"}\n', "unknown_op"),
    (b'{"v": 9, "op": "order"}\n', "unsupported_version"),
    (b'{"v": 1, "op": "order", "client": 12}\n', "bad_request"),
]


@pytest.fixture(scope="module")
def control_mount(
    images: dict[str, bytes], config: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MountProcess]:
    """Container `ordered` mounted once per backend for the malformed messages: each one
    must leave the mount serving, so they follow one another on one mount."""
    with mounted(f"remote:{CONTAINER}", tmp_path_factory.mktemp("control") / "mnt",
                 config) as mount:
        yield mount


@pytest.mark.parametrize("message, code", MALFORMED)
def test_a_malformed_or_oversized_control_message_gets_an_error_reply_and_a_log_line(
    images: dict[str, bytes], control_mount: MountProcess, message: bytes, code: str,
) -> None:
    mount = control_mount
    reply = raw_request(control_socket(mount), message)
    assert reply["ok"] is False and reply["error"] == code and reply["v"] == 1
    # A file no earlier message's test read: the read reaches the mount, not the page cache.
    key = sorted(images)[MALFORMED.index((message, code))]
    assert (mount.path / key).read_bytes() == images[key]  # the mount serves on
    wait_until(lambda: f"answered {code!r}" in mount.log(), DEADLINE_S, "the log line")
    # Logged once per code and user (this message's line, or an earlier one's of its code).
    assert mount.log().count(f"answered {code!r}") == 1
    assert " ERROR " not in mount.log()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory in /tmp other users may enter (and, below it, `open/` they may write)."""
    shared = Path(tempfile.mkdtemp(prefix="objmount-shared-"))
    shared.chmod(0o755)
    (shared / "open").mkdir(mode=0o777)
    (shared / "open").chmod(0o777)
    yield shared
    shutil.rmtree(shared, ignore_errors=True)


NOBODY_CLIENT = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from objmount import control
where, _ = control.control_of(Path(sys.argv[2]))
for socket_path in (where.socket_path, sys.argv[3]):
    try:
        control.request(socket_path, "order", b"train/class_0/img_0000.jpg")
        print("accepted")
    except control.ControlError as exc:
        print(exc.code, exc)
"""


def test_another_user_is_refused_the_control_channel_of_a_mount_made_with_allow_other(
    images: dict[str, bytes], config: Path, shared_dir: Path
) -> None:
    """`nobody` reads the mount (--allow-other) and finds its socket in the root xattr, but
    cannot reach it (a 0700 directory); through a link made reachable on purpose, the peer
    credentials refuse it. Spoken by the system Python as that user."""
    with mounted(f"remote:{CONTAINER}", shared_dir / "mnt", config, "--allow-other") as mount:
        key = sorted(images)[0]
        socket_path = control_socket(mount)
        assert Path(socket_path).stat().st_mode & 0o777 == 0o600
        assert Path(socket_path).parent.stat().st_mode & 0o777 == 0o700
        exposed = shared_dir / "open" / "control.sock"
        os.link(socket_path, exposed)
        os.chmod(exposed, 0o666)  # the same inode: the mount's socket is open to all now
        result = subprocess.run(
            [*AS_NOBODY, SYSTEM_PYTHON, "-I", "-c", NOBODY_CLIENT, str(REPO), str(mount.path),
             str(exposed)], capture_output=True, text=True, timeout=DEADLINE_S)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith("forbidden ") and "permission denied" in lines[0]
        assert lines[1].startswith("forbidden ") and "only uid 0 and root" in lines[1]
        wait_until(lambda: "refused pid" in mount.log(), DEADLINE_S, "the log line")
        assert "of uid 65534" in mount.log()
        assert mount_stats(mount)["orders"] == 0
        assert (mount.path / key).read_bytes() == images[key]


@pytest.fixture(scope="session")
def many_small(store: TestStore) -> dict[str, bytes]:
    """Container `epochs`: 400 files of 12-20 KB in 4 class directories."""
    objects = {f"train/class_{i % 4}/img_{i:04d}.jpg": data(f"epochs-{i}", 12_000 + 20 * i)
               for i in range(400)}
    store.create_container("epochs")
    put_many(store, "epochs", objects)
    return objects


def read_epoch(mount: MountProcess, keys: list[str], images: dict[str, bytes]) -> None:
    """Read every file once, in this order, and let the kernel forget its pages (as
    drop_caches would, for these files only): the next epoch reaches the mount again."""
    for key in keys:
        path = mount.path / key
        with open(path, "rb") as f:
            assert f.read() == images[key], key
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


@pytest.mark.parametrize("with_order", [False, True], ids=["detected", "ordered"])
def test_epochs_larger_than_the_cache_hit_about_cache_over_dataset(
    many_small: dict[str, bytes], config: Path, tmp_path: Path, with_order: bool
) -> None:
    """A cache of half the files' size: LRU would hit ~15% of each epoch; the resident set
    hits close to half, from the second epoch on (detected, without an order, within the
    first DETECT_MISSES misses of the second epoch)."""
    keys = sorted(many_small)
    total = sum(len(v) for v in many_small.values())
    # The cap counts the empty store's ~1.7 MiB (index, directories) too, and the
    # namespace's listing database in the cache directory (its WAL included: a few
    # hundred KiB for these 400 names while mounted).
    cap = (1 << 20) * 3 + total // 2
    rates = []
    with mounted("remote:epochs", tmp_path / "mnt", config, "--cache-dir",
                 str(tmp_path / "cache"), "--cache-max-size", str(cap), "--cache-mem",
                 "0") as mount:
        os.listdir(mount.path / "train")
        rng = random.Random(4)
        for _ in range(3):
            order = rng.sample(keys, len(keys))
            before = mount_stats(mount)
            if with_order:
                publish(mount, order, tmp_path)
            read_epoch(mount, order, many_small)
            after = mount_stats(mount)
            gets = after["gets"] - before["gets"]
            rates.append(1 - gets / len(keys))  # files read without a GET in the epoch
        assert after["cache_holding"] == 1
        assert after["prefetch_unused_files"] == 0
        log = mount.log()
    assert "keeping its resident set" in log
    # A perfect resident set would hit half (a little less: blocks take whole 4 KiB).
    assert rates[0] <= 0.05
    assert rates[1] >= 0.4 and rates[2] >= 0.45, rates
