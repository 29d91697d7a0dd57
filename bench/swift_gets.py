"""`python -m bench.swift_gets`: client CPU per GET on Swift, swiftclient vs the lean path.

Issue 13 asks what a Swift GET costs objmount. This micro-benchmark starts the
test suite's real Swift + Keystone stack (tests/servers/swift_stack.py) on
127.0.0.1, fills a container with small objects (60-120 KiB), and runs the
same ranged, conditional GETs (Range + If-Match, as objmount's read path sends
them), 8 threads, through:

- `swiftclient get_object`: python-swiftclient alone, one Connection per
  thread over one keystoneauth1 session (the way objmount read before);
- `SwiftBackend swiftclient`: objmount's backend forced onto its swiftclient
  path (what a mount does where a proxy applies);
- `SwiftBackend lean`: objmount's backend as a mount uses it (http_get.py).

CPU is this process's (user + system, getrusage): the servers run in their own
processes and are not counted. Each round runs every path once, alternating;
the table gives the median of the rounds. Take the benchmark lock first:
`flock /tmp/objmount-bench.lock python -m bench.swift_gets`.
"""

import argparse
import hashlib
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.gets import _cpu_s, measure
from objmount.backends import Timeouts
from objmount.backends.swift import SwiftBackend
from objmount.config import Remote
from tests.integration.stores import SwiftStore
from tests.servers.swift_stack import SwiftStack

CONTAINER = "gets"


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.swift_gets",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=1000, help="small objects (60-120 KiB)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per path")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="objmount-swift-gets-"))
    try:
        # Tokens cached by the proxy for 5 minutes: the servers answer faster, and the
        # client's CPU per GET, which is measured, does not change.
        with SwiftStack(tmp / "stack", token_cache_s=300) as stack:
            run(stack, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(stack: SwiftStack, args: argparse.Namespace) -> None:
    store = SwiftStore(stack)
    store.create_container(CONTAINER)
    rng = random.Random("objmount-bench-swift-gets")
    bodies = {f"small/img_{i:05d}.jpg": random.Random(i).randbytes(rng.randint(60 << 10, 120 << 10))
              for i in range(args.objects)}
    store.put_many(CONTAINER, bodies)
    section = stack.rclone_conf_section("bench").splitlines()
    remote = Remote("bench", "swift", dict(line.split(" = ", 1) for line in section[1:]))
    timeouts = Timeouts(pool_size=max(16, args.threads))
    lean = SwiftBackend(remote, CONTAINER, timeouts)
    forced = SwiftBackend(remote, CONTAINER, timeouts)
    forced._lean = False  # the swiftclient read path, as where a proxy applies
    objects = []
    for key, body in bodies.items():
        info = lean.stat(key)
        objects.append((key, len(body), info.etag, hashlib.sha256(body).hexdigest()))
    local = threading.local()

    def swiftclient_get(key: str, start: int, end: int, etag: str) -> bytes:
        if not hasattr(local, "conn"):
            local.conn = stack.swift_connection()
        _, body = local.conn.get_object(CONTAINER, key, headers={
            "Range": f"bytes={start}-{end - 1}", "If-Match": f'"{etag}"'})
        return body

    paths: dict[str, Callable[[str, int, int, str], bytes]] = {
        "swiftclient get_object": swiftclient_get,
        "SwiftBackend swiftclient": forced.read,
        "SwiftBackend lean": lean.read,
    }
    # Warm-up: connections, tokens and the catalog, outside the measurement.
    with ThreadPoolExecutor(args.threads) as pool:
        for get in paths.values():
            list(pool.map(lambda o, get=get: get(o[0], 0, 1, o[2]), objects[: args.threads * 2]))
    print(f"bench.swift_gets: {args.objects} objects of 60-120 KiB, {args.threads} threads, "
          f"Swift {stack.proxy_url}; load average {_loadavg()}", flush=True)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
    for round_no in range(args.rounds):
        print(f" round {round_no + 1}", flush=True)
        for name, get in paths.items():
            results[name].append(measure(name, get, objects, args.threads))
    print(f" medians of {args.rounds} rounds (load average {_loadavg()}):")
    for name, rounds in results.items():
        cpu = statistics.median(r["cpu_ms_per_get"] for r in rounds)
        rate = statistics.median(r["gets_per_s"] for r in rounds)
        bad = sum(r["bad"] for r in rounds)
        print(f"  {name:<26} {cpu:6.2f} ms CPU/GET  {rate:8,.0f} GETs/s  bad {bad}")
    big = random.Random(-1).randbytes(64 << 20)
    store.put(CONTAINER, "big.bin", big)
    big_etag = lean.stat("big.bin").etag
    blocks = [(off, off + (8 << 20)) for off in range(0, 64 << 20, 8 << 20)] * 2
    print(" 8 MiB ranged GETs of one 64 MiB object (block fetches)", flush=True)
    for name, get in paths.items():
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            datas = list(pool.map(lambda b, get=get: get("big.bin", b[0], b[1], big_etag), blocks))
        wall, cpu = time.perf_counter() - wall0, _cpu_s() - cpu0
        assert all(d == big[b[0]:b[1]] for d, b in zip(datas, blocks, strict=True)), name
        nbytes = sum(b[1] - b[0] for b in blocks)
        print(f"  {name:<26} {nbytes / wall / 1e6:8,.0f} MB/s  "
              f"{cpu / (nbytes / 1e9):6.2f} CPU s/GB", flush=True)


if __name__ == "__main__":
    main()
