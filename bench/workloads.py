"""The read workloads, run against any directory holding the data set (a mount or local disk).

Each workload reads through plain POSIX calls from this process, like a
training job would, hashes what it read (sha256) and counts every byte that
does not match the manifest, and every failed call, as an error. Hashing is
part of the timed work on every row, local disk included, so rows compare.

A pass may have a time budget: past it no new file or pread is started (what
runs finishes), and the figure is the rate over the part done, which is a
prefix of the same fixed order in every configuration. The warm pass then
reads that same prefix.
"""

import hashlib
import os
import random
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.dataset import Dataset, Entry, Pread
from bench.usage import Usage

# Large reads, as a loader of big shards (or np.fromfile, tar readers) issues them.
SEQ_READ_BYTES = 1 << 20
READER_THREADS = 8


@dataclass
class Outcome:
    """What one pass of a workload did: time, bytes, items (files, ops, entries), errors."""

    seconds: float
    bytes: int
    items: int
    errors: int = 0
    note: str = ""
    planned: int = 0  # items a whole pass has; more than `items` if the budget cut it
    usage: Usage | None = None  # the mount's CPU, relay requests, objmount counters

    @property
    def partial(self) -> bool:
        return 0 < self.items < self.planned

    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0

    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Limits:
    """How much of a pass to run: a time budget for starting work, and at most `count` items."""

    budget_s: float | None = None
    count: int | None = None

    def deadline(self) -> float:
        return time.perf_counter() + self.budget_s if self.budget_s else float("inf")


@dataclass(frozen=True)
class Workload:
    """A workload: `run(root, dataset, plan)` returns an Outcome, `figure` the table figure."""

    key: str
    title: str
    unit: str
    run: Callable[[Path, Dataset, list[Pread], Limits], Outcome]
    # cold: empty cache, after drop_caches; warm: again, after drop_caches (the
    # mount's own cache); hot: again at once, the page cache kept (issue #13).
    passes: tuple[str, ...] = ("cold", "warm")

    def figure(self, outcome: Outcome) -> float:
        """The table's figure, higher is better (listing: entries/s)."""
        if self.unit == "MB/s":
            return outcome.mb_per_s()
        return outcome.items_per_s()


def _read_whole(path: Path, entry: Entry) -> tuple[int, bool]:
    """Read `path` in SEQ_READ_BYTES reads; return (bytes read, bytes match the manifest)."""
    digest = hashlib.sha256()
    buf = bytearray(SEQ_READ_BYTES)
    view = memoryview(buf)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
            total += n
    return total, total == entry.size and digest.hexdigest() == entry.sha256


Task = Callable[[], tuple[int, int, bool]]


def _timed(tasks: Sequence[Task], threads: int, limits: Limits) -> Outcome:
    """Run tasks (each returns bytes, items, ok) on `threads` threads, in order, within `limits`.

    A failed call or wrong bytes count as an error; a task not started before
    the deadline is skipped, and the clock stops when the last started one ends.
    """
    deadline = limits.deadline()

    def guarded(task: Task) -> tuple[int, int, int] | None:
        if time.perf_counter() > deadline:
            return None
        try:
            nbytes, items, ok = task()
        except OSError:
            return 0, 1, 1
        return nbytes, items, 0 if ok else 1

    chosen = tasks[:limits.count] if limits.count else tasks
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = [r for r in pool.map(guarded, chosen) if r is not None]
    seconds = time.perf_counter() - started
    return Outcome(seconds, sum(r[0] for r in results), sum(r[1] for r in results),
                   sum(r[2] for r in results), planned=len(tasks))


def shards_one_at_a_time(root: Path, dataset: Dataset, plan: list[Pread],
                         limits: Limits) -> Outcome:
    return _timed([_whole_task(root, e) for e in dataset.shards], 1, limits)


def shards_all_at_once(root: Path, dataset: Dataset, plan: list[Pread],
                       limits: Limits) -> Outcome:
    return _timed([_whole_task(root, e) for e in dataset.shards], len(dataset.shards), limits)


def small_files_random(root: Path, dataset: Dataset, plan: list[Pread],
                       limits: Limits) -> Outcome:
    """Every small file once, in a shuffled order (same each run), by 8 threads."""
    order = list(dataset.smalls)
    random.Random("objmount-bench-epoch").shuffle(order)
    return _timed([_whole_task(root, e) for e in order], READER_THREADS, limits)


def random_preads(root: Path, dataset: Dataset, plan: list[Pread], limits: Limits) -> Outcome:
    """The planned 64 KiB preads at random offsets over the shards, by 8 threads."""
    fds = {e.key: os.open(root / e.key, os.O_RDONLY) for e in dataset.shards}
    try:
        def task(p: Pread) -> Callable[[], tuple[int, int, bool]]:
            def read() -> tuple[int, int, bool]:
                data = os.pread(fds[p.key], p.size, p.offset)
                return len(data), 1, hashlib.sha256(data).hexdigest() == p.sha256
            return read

        return _timed([task(p) for p in plan], READER_THREADS, limits)
    finally:
        for fd in fds.values():
            os.close(fd)


def list_tree(root: Path, dataset: Dataset, plan: list[Pread], limits: Limits) -> Outcome:
    """`ls -lR` of the whole tree (stats every entry); items are the entries it printed.

    Past the budget, ls is stopped and the figure is the rate of what it printed.
    """
    with tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        ls = subprocess.Popen(["ls", "-lR", str(root)], stdout=out, stderr=subprocess.DEVNULL)
        try:
            ls.wait(timeout=limits.budget_s)
            stopped = False
        except subprocess.TimeoutExpired:
            ls.kill()
            ls.wait()
            stopped = True
        seconds = time.perf_counter() - started
        out.seek(0)
        # Entry lines start with the file type and mode, e.g. "-r--r--r--" or "dr-xr-xr-x".
        listed = sum(1 for line in out if line[:1] in ("-", "d"))
    expected = dataset.tree_entries
    errors = 0 if stopped else int(ls.returncode != 0) + abs(listed - expected)
    return Outcome(seconds, 0, listed, errors, planned=expected)


def _whole_task(root: Path, entry: Entry) -> Callable[[], tuple[int, int, bool]]:
    def read() -> tuple[int, int, bool]:
        nbytes, ok = _read_whole(root / entry.key, entry)
        return nbytes, 1, ok
    return read


WORKLOADS = [
    Workload("seq1", "shards one at a time", "MB/s", shards_one_at_a_time),
    Workload("seq4", "4 shards at once", "MB/s", shards_all_at_once),
    Workload("small", "small files, 8 threads, random order", "files/s", small_files_random,
             ("cold", "warm", "hot")),
    Workload("rand", "random 64 KiB preads, 8 threads", "ops/s", random_preads),
    Workload("ls", "ls -lR", "entries/s", list_tree),
]
