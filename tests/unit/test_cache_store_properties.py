"""Properties of the block store: damage never yields wrong bytes, and the cap holds with
several writers (threads and another process) on one directory."""

import contextlib
import os
import random
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objmount.cache.blockfile import CHUNK_BYTES, stored_bytes
from objmount.cache.blocks import BlockKey, BlockStore
from objmount.cache.index import FILE_NAME
from tests.crafted_cache import du_bytes

KiB = 1 << 10
# A one-chunk block and one of three chunks (the last one short).
LENGTHS = [10 * KiB + 7, 3 * CHUNK_BYTES - 100]
# Examples share one store (module fixture), reset by `filled`; they take a few ms each.
RELAXED = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
COLUMNS = ["name", "source", "key", "etag", "start", "end", "size", "used"]


def content(key: BlockKey) -> bytes:
    return random.Random(repr(key)).randbytes(key.length)


def keys() -> list[BlockKey]:
    return [BlockKey("s3:http://x/c", f"obj{i}", "e1", 0, length)
            for i, length in enumerate(LENGTHS)]


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BlockStore]:
    """One store for every example of a test (a fresh one costs more than an example)."""
    store = BlockStore(tmp_path_factory.mktemp("props") / "cache", max_size_bytes=1 << 30)
    yield store
    store.close()


@contextmanager
def filled(store: BlockStore) -> Iterator[Path]:
    """`store` holding exactly the blocks of `keys()`, intact; and a file outside it."""
    store.max_size_bytes = 1 << 30
    store.clear()
    for key in keys():
        assert store.put(key, content(key))
    outside = store.directory.parent / "outside"
    outside.write_bytes(b"precious")
    yield outside
    assert outside.read_bytes() == b"precious"
    assert sorted(p.name for p in store.directory.parent.iterdir()) == ["cache", "outside"]


def assert_never_wrong(store: BlockStore, start: int, end: int) -> None:
    """Every read is a miss or the right bytes: whole blocks, and [start, end) of each."""
    for key in keys():
        lo, hi = min(start, key.length), min(end, key.length)
        assert store.read_range(key, lo, hi) in (None, content(key)[lo:hi])
        assert store.read_block(key) in (None, content(key))


@settings(max_examples=150, deadline=None, suppress_health_check=RELAXED)
@given(block=st.sampled_from(range(len(LENGTHS))), where=st.floats(0, 1, exclude_max=True),
       flip=st.integers(1, 255), start=st.integers(0, LENGTHS[-1]), size=st.integers(0, 70_000))
def test_a_damaged_byte_anywhere_in_a_block_file_never_yields_wrong_bytes(
    shared_store: BlockStore, block: int, where: float, flip: int, start: int, size: int
) -> None:
    store = shared_store
    with filled(store):
        path = Path(store.path_of(keys()[block]))
        raw = bytearray(path.read_bytes())
        raw[int(where * len(raw))] ^= flip
        path.write_bytes(bytes(raw))
        assert_never_wrong(store, start, start + size)


@settings(max_examples=60, deadline=None, suppress_health_check=RELAXED)
@given(block=st.sampled_from(range(len(LENGTHS))), cut=st.floats(0, 1),
       extra=st.binary(max_size=20))
def test_a_truncated_or_extended_block_file_never_yields_wrong_bytes(
    shared_store: BlockStore, block: int, cut: float, extra: bytes
) -> None:
    store = shared_store
    with filled(store):
        path = Path(store.path_of(keys()[block]))
        raw = path.read_bytes()
        path.write_bytes(raw[: int(cut * len(raw))] + extra)
        assert_never_wrong(store, 0, LENGTHS[-1])


VALUES = st.one_of(
    st.none(), st.integers(-(1 << 63), (1 << 63) - 1), st.text(max_size=40), st.binary(max_size=40),
    st.floats(allow_nan=False), st.sampled_from(["../../outside", "/etc/passwd", "0" * 32]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=RELAXED)
@given(row=st.sampled_from(range(len(LENGTHS))), column=st.sampled_from(COLUMNS),
       value=VALUES, start=st.integers(0, LENGTHS[-1]), size=st.integers(0, 70_000),
       swap=st.booleans())
def test_a_damaged_field_of_an_index_row_never_yields_wrong_bytes_or_touches_outside(
    shared_store: BlockStore, row: int, column: str, value: object, start: int, size: int,
    swap: bool,
) -> None:
    store = shared_store
    with filled(store):
        names = [store.path_of(k).rsplit("/", 1)[1].removesuffix(".blk") for k in keys()]
        with sqlite3.connect(store.directory / FILE_NAME) as conn:
            if swap:  # another row's value of that column
                (value,) = conn.execute(f'SELECT "{column}" FROM blocks WHERE name = ?',
                                        (names[1 - row],)).fetchone()
            with contextlib.suppress(sqlite3.IntegrityError):  # NOT NULL, a name taken
                conn.execute(f'UPDATE blocks SET "{column}" = ? WHERE name = ?',
                             (value, names[row]))
        assert_never_wrong(store, start, start + size)
        # Whatever the rows say, the commands and eviction stay inside and never crash.
        assert store.verify()[1] == 0
        list(store.stored_keys())
        store.usage()
        store.max_size_bytes = store.overhead_bytes() + stored_bytes(LENGTHS[0]) * 2
        extra = BlockKey("s3:http://x/c", "new", "e1", 0, LENGTHS[0])
        store.put(extra, content(extra))
        assert store.disk_bytes() <= store.max_size_bytes
        assert_never_wrong(store, start, start + size)
        store.clear()


# The hard cap: threads and a second process write into one store.

BLOCK = 100 * KiB
CAP_BLOCKS = 40
WRITER = """
import os, sys
from pathlib import Path
from objmount.cache.blocks import BlockKey, BlockStore
store = BlockStore(Path(sys.argv[1]), int(sys.argv[2]))
data = os.urandom(int(sys.argv[3]))
stored = sum(store.put(BlockKey("s3:http://x/c", f"proc-{i}", "e", 0, len(data)), data)
             for i in range(int(sys.argv[4])))
store.close()
print(stored)
"""


def test_threads_and_another_process_never_exceed_the_cap_plus_one_block(tmp_path: Path) -> None:
    """Measured as du would (every file and directory, the index's included), while the
    writers run (under the index's write lock, so no eviction is half done) and after."""
    cache = tmp_path / "cache"
    store = BlockStore(cache, max_size_bytes=1 << 40)
    cap = store.overhead_bytes() + CAP_BLOCKS * stored_bytes(BLOCK)
    store.max_size_bytes = cap
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    other = subprocess.Popen([sys.executable, "-c", WRITER, str(cache), str(cap), str(BLOCK),
                              "150"], env=env, stdout=subprocess.PIPE, text=True)
    done = threading.Event()
    wrote = threading.Event()  # a sample after each write of ours, not in a loop that
    peaks: list[int] = []      # would starve the writers of the lock

    def sample() -> None:
        conn = sqlite3.connect(cache / FILE_NAME, timeout=60, isolation_level=None)
        while not done.is_set():
            wrote.wait()
            wrote.clear()
            conn.execute("BEGIN IMMEDIATE")
            try:
                peaks.append(du_bytes(cache))
            finally:
                conn.execute("ROLLBACK")
        conn.close()

    def write(thread: int) -> None:
        data = os.urandom(BLOCK)
        for i in range(60):
            store.put(BlockKey("s3:http://x/c", f"t{thread}-{i}", "e", 0, BLOCK), data)
            wrote.set()

    sampler = threading.Thread(target=sample)
    writers = [threading.Thread(target=write, args=(t,)) for t in range(3)]
    sampler.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    assert other.wait(timeout=300) == 0
    done.set()
    wrote.set()
    sampler.join()
    assert int(other.stdout.read()) > CAP_BLOCKS  # it did write, and evict
    peaks.append(du_bytes(cache))
    assert len(peaks) > 1
    assert max(peaks) <= cap + stored_bytes(BLOCK), (max(peaks) - cap, peaks)
    assert store.counters.writes > CAP_BLOCKS and store.counters.evicted > 0
    assert store.counters.write_errors == 0
    store.close()
