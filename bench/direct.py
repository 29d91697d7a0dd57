"""The cold limit: the same workloads as plain parallel downloads through the relay, no FUSE.

Two clients: the store's own client with threads in this process (boto3 on S3,
python-swiftclient on Swift; ranged GETs of 8 MiB parts for shards), and
`rclone copy --transfers 16` into a tmpfs. Both verify sha256 like the mount
workloads do.
"""

import hashlib
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.dataset import Dataset, Entry, Pread
from bench.mounts import MountTarget
from bench.servers import REMOTE, Objects
from bench.workloads import READER_THREADS, Outcome

PART_BYTES = 8 << 20
DOWNLOAD_THREADS = 16


def threaded_shards(objects: Objects, dataset: Dataset, shards_at_once: int) -> Outcome:
    """Download shards, `shards_at_once` at a time, each in 8 MiB parts over 16 threads."""
    errors = 0
    started = time.perf_counter()
    for i in range(0, len(dataset.shards), shards_at_once):
        group = dataset.shards[i:i + shards_at_once]
        buffers = {e.key: bytearray(e.size) for e in group}
        parts = [(e, off) for e in group for off in range(0, e.size, PART_BYTES)]

        def fetch(part: tuple[Entry, int], buffers: dict[str, bytearray] = buffers) -> None:
            entry, off = part
            end = min(off + PART_BYTES, entry.size)
            buffers[entry.key][off:end] = objects.get(entry.key, off, end)

        with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
            list(pool.map(fetch, parts))
        errors += sum(hashlib.sha256(buffers[e.key]).hexdigest() != e.sha256 for e in group)
    seconds = time.perf_counter() - started
    return Outcome(seconds, sum(e.size for e in dataset.shards), len(dataset.shards), errors)


def threaded_smalls(objects: Objects, dataset: Dataset, threads: int = DOWNLOAD_THREADS) -> Outcome:
    """GET every small file whole, `threads` at once."""
    def fetch(entry: Entry) -> int:
        return int(hashlib.sha256(objects.get(entry.key)).hexdigest() != entry.sha256)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        errors = sum(pool.map(fetch, dataset.smalls))
    seconds = time.perf_counter() - started
    return Outcome(seconds, sum(e.size for e in dataset.smalls), len(dataset.smalls), errors)


def threaded_preads(objects: Objects, plan: list[Pread]) -> Outcome:
    """One ranged GET per planned pread, 8 threads (as the mounts get them)."""
    def fetch(p: Pread) -> int:
        data = objects.get(p.key, p.offset, p.offset + p.size)
        return int(hashlib.sha256(data).hexdigest() != p.sha256)

    started = time.perf_counter()
    with ThreadPoolExecutor(READER_THREADS) as pool:
        errors = sum(pool.map(fetch, plan))
    seconds = time.perf_counter() - started
    return Outcome(seconds, sum(p.size for p in plan), len(plan), errors)


def listing(objects: Objects, dataset: Dataset) -> Outcome:
    """One full flat listing, page after page: what any listing costs at least."""
    started = time.perf_counter()
    count = len(objects.sizes())
    seconds = time.perf_counter() - started
    return Outcome(seconds, 0, count, abs(count - len(dataset.entries)))


def rclone_copy(rclone: Path, target: MountTarget, dataset: Dataset, prefix: str,
                entries: list[Entry], log_path: Path) -> Outcome:
    """`rclone copy --transfers 16` of `prefix` into a tmpfs; bytes hashed after the clock stops."""
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="objmount-bench-") as tmp:
        started = time.perf_counter()
        done = subprocess.run(
            [str(rclone), "copy", f"{REMOTE}:{target.container}/{prefix}", f"{tmp}/{prefix}",
             "--config", str(target.rclone_conf), "--transfers", "16", "--checkers", "16",
             "--log-file", str(log_path), "--log-level", "NOTICE"],
            check=False, stdin=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
        errors = int(done.returncode != 0)
        lock = threading.Lock()

        def check(entry: Entry) -> None:
            nonlocal errors
            path = Path(tmp) / entry.key
            ok = path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
            if not ok:
                with lock:
                    errors += 1

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(check, entries))
        shutil.rmtree(tmp, ignore_errors=True)
    return Outcome(seconds, sum(e.size for e in entries), len(entries), errors)
