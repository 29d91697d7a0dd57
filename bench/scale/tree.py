"""bench.scale's data: N tiny files in ImageFolder layout, on local disk and in a store.

`train/class_CCCC/img_NNNNNNN.jpg`, 1,000 files per class directory (so 1,000
classes for 1M files, 100 for 100k), each 16 bytes (its number): the benchmark
measures names, not bytes. The tree is written once under `.bench/scale-N/`
(the local-disk reference walks it too) and uploaded in bulk: to SeaweedFS by
`weed filer.copy` (its filer, Go, COPY_CONCURRENCY files at once; the S3 gateway lists the
filer's /buckets/BUCKET/), to Swift as tar archives its proxy unpacks
(tests/integration/stores.py's put_many). A marker beside the tree, and one in
SeaweedFS's state directory, say a step was done for this N.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

FILES_PER_CLASS = 1000
MARKER = ".complete"
# SeaweedFS makes volumes per bucket, several at a time, and `-volume.max=0` allows
# only as many as the free disk would hold full (1 GiB each): the 1M bucket, beside
# the 100k one, found none left ("No writable volumes"). These volumes stay nearly
# empty (16-byte files), so a fixed count is safe.
WEED_ARGS = ("-volume.max=64",)
# Files `weed filer.copy` uploads at once (its default is 8).
COPY_CONCURRENCY = 64


def key_of(index: int) -> str:
    return f"train/class_{index // FILES_PER_CLASS:04d}/img_{index:07d}.jpg"


def content_of(index: int) -> bytes:
    return f"{index:015d}\n".encode()


def ensure_tree(work_dir: Path, count: int) -> Path:
    """Write (once) the tree of `count` files; return its root (holding `train/`)."""
    root = work_dir / f"scale-{count}"
    if (root / MARKER).exists():
        return root
    started = time.monotonic()
    print(f"bench.scale: writing {count:,} files under {root}", flush=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    for index in range(count):  # os calls, not Path's: a million files in a minute or two
        path = os.path.join(root, key_of(index))
        if index % FILES_PER_CLASS == 0:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, flags, 0o644)
        try:
            os.write(fd, content_of(index))
        finally:
            os.close(fd)
    (root / MARKER).write_text(str(count))
    print(f"bench.scale: wrote the tree in {time.monotonic() - started:.0f} s", flush=True)
    return root


def upload_seaweed(weed: Path, filer_address: str, bucket: str, root: Path, count: int,
                   state_dir: Path, client) -> float | None:
    """Copy the tree into `bucket` through the filer at `filer_address` (host:port.grpc)
    unless it is there; return the seconds it took (None: it was there already). Raises
    RuntimeError if the copy fails."""
    marker = state_dir / f"bench-scale-{bucket}{MARKER}"
    if marker.exists() and marker.read_text() == str(count):
        return None
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
    started = time.monotonic()
    print(f"bench.scale: uploading {count:,} objects to SeaweedFS bucket {bucket}", flush=True)
    copy = subprocess.run([str(weed), "filer.copy", "-c", str(COPY_CONCURRENCY),
                           str(root / "train"), f"http://{filer_address}/buckets/{bucket}/"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, errors="replace")
    if copy.returncode != 0:
        last = (copy.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"weed filer.copy exited with {copy.returncode}: {last[:300]}")
    # filer.copy exits 0 when files failed: its errors on stderr say so (no marker then).
    failed = [line for line in copy.stderr.splitlines() if "copy file error" in line]
    if failed:
        raise RuntimeError(f"weed filer.copy: {len(failed)} errors, the first: {failed[0][:300]}")
    seconds = time.monotonic() - started
    marker.write_text(str(count))
    return seconds


def upload_swift(stack, container: str, count: int) -> float:
    """Upload every object to Swift (a fresh stack each run); return the seconds."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.integration.stores import SwiftStore

    store = SwiftStore(stack)
    store.create_container(container)
    started = time.monotonic()
    print(f"bench.scale: uploading {count:,} objects to Swift container {container}",
          flush=True)
    batch = 50_000  # archives of at most this many files in memory at once
    for first in range(0, count, batch):
        store.put_many(container, {key_of(i): content_of(i)
                                   for i in range(first, min(count, first + batch))})
    return time.monotonic() - started


WALK = """
import os, sys, time
root = sys.argv[1]
started = time.monotonic()
files = 0
for top, dirs, names in os.walk(root):
    for name in names:
        os.stat(os.path.join(top, name))
        files += 1
print(files, time.monotonic() - started)
"""


def walk(root: Path, timeout_s: float) -> tuple[int, float]:
    """os.walk + a stat of every file under `root`, in a child process (a hung mount cannot
    hang the benchmark): (files, seconds). Raises subprocess.TimeoutExpired."""
    out = subprocess.run([sys.executable, "-c", WALK, str(root)], capture_output=True,
                         text=True, check=True, timeout=timeout_s).stdout.split()
    return int(out[0]), float(out[1])


def rss_kib(pid: int) -> tuple[int | None, int | None]:
    """(VmRSS, VmHWM) of `pid` in KiB."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    found[name] = int(value.split()[0])
    except OSError:
        pass
    return found.get("VmRSS"), found.get("VmHWM")


def disk_bytes(path: Path) -> int:
    total = 0
    for top, _, names in os.walk(path):
        for name in names:
            try:
                info = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            total += info.st_blocks * 512
    return total
