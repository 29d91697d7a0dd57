"""`python -m bench.soak`: random reads for N minutes through a fault relay, a fault every 30 s.

Not in CI. Starts the test suite's moto S3 server on 127.0.0.1, fills a
container with FILES, puts a FaultProxy (tests/servers/fault_proxy.py) in
front of it and mounts the container through it with the fault suite's short
bounds (tests/integration/fault_kit.py FAST: 5 s per request, 1 s stall window)
and --cache-mode off, so that every read is a ranged GET through the relay.
Then READERS threads read random ranges of random files for --minutes, each
read opened, read with pread and closed, and compared with the stored bytes.

Every PERIOD_S a fault starts (FAULTS, in turn: a 503 storm, resets mid-body,
truncated bodies, a trickle, a blackhole, 500s on listings) and ends FAULT_S
later. A read that fails is an error "during a fault" if it ends between a
fault's start and GRACE_S after its end (a read started in the fault may wait
out its deadline), else "outside". Every SAMPLE_S the mount process's RSS and
open file descriptors are sampled.

Report: the samples over time; RSS and fds after the warm-up (the first sample)
as spread around their first value (flat: within 10%); errors during and
outside faults by errno; bytes checked; wrong bytes (must be 0); the slowest
read (a hang would show). A short read (the bytes before a page that failed:
the kernel's answer when a read fails part-way) that keeps the file's size
counts as an error; one that changes it, as wrong bytes. Exits 1 if a byte was
wrong, a read failed outside a fault or the slowest read passed the fault
suite's EIO bound plus GRACE_S.
Take the benchmark lock: `flock /tmp/objmount-bench.lock python -m bench.soak`.

Invariant: the server, the relay and the mount are stopped and unmounted when
it ends, also on Ctrl-C, SIGTERM or an error.
"""

import argparse
import collections
import contextlib
import errno
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.facts import load_average
from tests.integration import fault_kit
from tests.integration.mounting import MountProcess, mounted
from tests.integration.stores import S3Store
from tests.servers.fault_proxy import FaultProxy, Rule
from tests.servers.s3_server import MotoS3Server

CONTAINER = "soak"
KiB, MiB = 1 << 10, 1 << 20
# Sizes from a small image to a shard's block span: reads cross GET boundaries.
FILES = {f"d{i % 4}/f{i:02d}.bin": size
         for i, size in enumerate([60 * KiB, 150 * KiB, 700 * KiB, 2 * MiB + 3] * 4)}
READERS = 8
MAX_READ_BYTES = 256 * KiB
PERIOD_S = 30.0
# A fault lasts a third of the period: the rest shows the recovery.
FAULT_S = 10.0
SAMPLE_S = 10.0
# After a fault ends, failures of reads that were waiting in it: the deadline of
# one request, its margin and the load slack (fault_kit's EIO bound), and the
# recovery (a stall window on a connection that died with the fault, then a new one).
GRACE_S = fault_kit.EIO_BOUND_S + fault_kit.RECOVERY_BOUND_S
OBJECTS = r"^/soak/."  # object GETs (path style), not the container's listings


def faults(store: S3Store) -> list[tuple[str, Rule]]:
    """The faults, in the order they are injected (then again from the first)."""
    listings = fault_kit.listings_of(store, forward=False, status=500)
    return [
        ("503 storm", Rule(method="GET", path=OBJECTS, **fault_kit.slow_down(store))),
        ("reset mid-body", Rule(method="GET", path=OBJECTS, cut_after=20_000, reset=True)),
        ("truncated body", Rule(method="GET", path=OBJECTS, cut_after=20_000)),
        ("trickle", Rule(method="GET", path=OBJECTS, rate_bytes_per_s=4_000)),
        ("blackhole", Rule(method="GET", path=OBJECTS, hold=True)),
        ("listing 500s", listings),
    ]


def content(key: str, size: int) -> bytes:
    """The bytes of `key`: the same for every run."""
    return random.Random(key).randbytes(size)


@dataclass
class Tally:
    """What the readers saw; shared, under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    reads: int = 0
    bytes_checked: int = 0
    wrong: list[str] = field(default_factory=list)
    during: collections.Counter = field(default_factory=collections.Counter)
    outside: collections.Counter = field(default_factory=collections.Counter)
    slowest_s: float = 0.0


class Faults:
    """Injects one fault every PERIOD_S for FAULT_S; says whether a time is in a fault."""

    def __init__(self, proxy: FaultProxy, store: S3Store) -> None:
        self.proxy = proxy
        self.cycle = faults(store)
        self.windows: list[tuple[float, float, str]] = []  # (start, end, name), monotonic
        self.lock = threading.Lock()
        self.started = time.monotonic()

    def run(self, until: float, stop: threading.Event) -> None:
        started = self.started
        turn = 0
        while not stop.wait(max(0.0, started + PERIOD_S * (turn + 1) - time.monotonic())):
            begin = time.monotonic()
            if begin + FAULT_S > until:
                return
            name, rule = self.cycle[turn % len(self.cycle)]
            rule.applied = 0
            with self.lock:
                self.windows.append((begin, begin + FAULT_S, name))
            self.proxy.add(rule)
            print(f"  {begin - started:6.0f}s fault: {name}", flush=True)
            stop.wait(FAULT_S)
            self.proxy.remove(rule)
            turn += 1

    def explains(self, when: float) -> bool:
        """True if a read that failed at `when` may have failed because of a fault."""
        return self.fault_at(when) != "no fault"

    def fault_at(self, when: float) -> str:
        """The fault a read that ended at `when` may have met ('no fault')."""
        with self.lock:
            return next((name for start, end, name in self.windows
                         if start <= when <= end + GRACE_S), "no fault")


def read_loop(mnt: Path, objects: dict[str, bytes], tally: Tally, faults_: Faults,
              until: float, seed: int) -> None:
    """Random ranged reads until `until`, each checked against the stored bytes."""
    rng = random.Random(seed)
    keys = sorted(objects)
    while time.monotonic() < until:
        key = rng.choice(keys)
        data = objects[key]
        offset = rng.randrange(len(data))
        size = rng.randint(1, MAX_READ_BYTES)
        began = time.monotonic()
        try:
            fd = os.open(mnt / key, os.O_RDONLY)
            try:
                # Drop the kernel's pages of the file: the read goes to the mount, and
                # with --cache-mode off to the store, through the relay.
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                got = os.pread(fd, size, offset)
                size_seen = os.fstat(fd).st_size
            finally:
                os.close(fd)
        except OSError as exc:
            ended = time.monotonic()
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            with tally.lock:
                tally.slowest_s = max(tally.slowest_s, ended - began)
                (tally.during if faults_.explains(ended) else tally.outside)[name] += 1
            continue
        ended = time.monotonic()
        with tally.lock:
            tally.reads += 1
            tally.slowest_s = max(tally.slowest_s, ended - began)
            want = data[offset : offset + size]
            if got == want:
                tally.bytes_checked += len(got)
            elif want.startswith(got) and size_seen == len(data):
                # The kernel returns the bytes read before a page that failed (EIO).
                tally.bytes_checked += len(got)
                (tally.during if faults_.explains(ended) else tally.outside)["short"] += 1
            else:
                kind = "a short read" if want.startswith(got) else "other bytes"
                tally.wrong.append(f"{key} at {offset}, {size} bytes: {kind} of {len(got)} "
                                   f"bytes, size {size_seen}, at "
                                   f"{ended - faults_.started:.1f}s ({faults_.fault_at(ended)})")


def process_sample(pid: int) -> tuple[int, int]:
    """The RSS (bytes) and open file descriptors of process `pid`."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = int(re.search(r"VmRSS:\s+(\d+)", status)[1])
    return rss_kib * KiB, len(os.listdir(f"/proc/{pid}/fd"))


def spread(values: list[int]) -> float:
    """How far the values stray from the first, as a fraction of it."""
    return max(abs(v - values[0]) for v in values) / values[0] if values and values[0] else 0.0


@contextlib.contextmanager
def soak_mount(tmp: Path) -> Iterator[tuple[MountProcess, FaultProxy, S3Store, dict[str, bytes]]]:
    """The server, filled; the relay; the mount through it. All stopped on the way out."""
    server = MotoS3Server(tmp / "moto.log").start()
    try:
        store = S3Store(server)
        store.create_container(CONTAINER)
        objects = {key: content(key, size) for key, size in FILES.items()}
        for key, data in objects.items():
            store.put(CONTAINER, key, data)
        with FaultProxy(store.data_port) as proxy:
            conf = tmp / "rclone.conf"
            conf.write_text(store.rclone_section_through("remote", proxy.url))
            with mounted(f"remote:{CONTAINER}", tmp / "mnt", conf, *fault_kit.FAST,
                         "--cache-mode", "off") as mount:
                yield mount, proxy, store, objects
    finally:
        server.stop()


def soak(minutes: float, tmp: Path) -> int:
    """Run the soak; print the report; return the exit code."""
    load_start = load_average()
    with soak_mount(tmp) as (mount, proxy, store, objects):
        tally, stop = Tally(), threading.Event()
        injector = Faults(proxy, store)
        started = injector.started
        until = started + minutes * 60
        threads = [threading.Thread(target=read_loop, daemon=True,
                                    args=(mount.path, objects, tally, injector, until, seed))
                   for seed in range(READERS)]
        threads.append(threading.Thread(target=injector.run, args=(until, stop),
                                        daemon=True))
        for thread in threads:
            thread.start()
        samples = []
        print(f"{'t':>7}  {'RSS MiB':>8}  {'fds':>4}  {'reads':>7}  {'errors':>6}", flush=True)
        try:
            while not stop.wait(SAMPLE_S if samples else 0.5):
                rss, fds = process_sample(mount.proc.pid)
                with tally.lock:
                    errors = sum(tally.during.values()) + sum(tally.outside.values())
                    reads = tally.reads
                elapsed = time.monotonic() - started
                samples.append((elapsed, rss, fds))
                print(f"{elapsed:6.0f}s  {rss / MiB:8.1f}  {fds:4d}  {reads:7d}  {errors:6d}",
                      flush=True)
                if time.monotonic() >= until:
                    break
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=fault_kit.EIO_BOUND_S + GRACE_S)
        stats = json.loads(os.getxattr(mount.path, "user.objmount.stats"))
    steady = samples[1:]  # the first is taken before the readers warmed the mount up
    rss_spread = spread([rss for _, rss, _ in steady])
    fd_spread = spread([fds for _, _, fds in steady])
    print(f"\nsoak: {minutes:g} min, {READERS} readers, faults every {PERIOD_S:.0f}s "
          f"for {FAULT_S:.0f}s: {', '.join(name for _, _, name in injector.windows)}")
    print(f"RSS: {steady[0][1] / MiB:.1f} -> {steady[-1][1] / MiB:.1f} MiB, spread "
          f"{rss_spread:.1%}; open fds: {steady[0][2]} -> {steady[-1][2]}, spread "
          f"{fd_spread:.1%}")
    print(f"reads: {tally.reads} right, {len(tally.wrong)} wrong; {tally.bytes_checked} bytes "
          f"checked; mount GETs {stats.get('gets')}")
    print(f"errors during faults: {dict(tally.during) or 'none'}; outside faults: "
          f"{dict(tally.outside) or 'none'}; slowest read {tally.slowest_s:.1f}s")
    print(f"load average (1 min) at start, end: {load_start}, {load_average()}")
    failed = tally.wrong or tally.outside or \
        tally.slowest_s > fault_kit.EIO_BOUND_S + GRACE_S
    for wrong in tally.wrong[:10]:
        print(f"wrong bytes: {wrong}")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak",
                                     description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to read")
    args = parser.parse_args()
    # SIGTERM ends the run as Ctrl-C does: the mount, relay and server are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    tmp = Path(tempfile.mkdtemp(prefix="objmount-soak-"))
    try:
        code = soak(args.minutes, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
