"""`python -m bench.train`: a torchvision DataLoader over objmount, rclone mount and local disk.

One run (issue #12's "Benchmark"): generate (or reuse) 10,000 real JPEGs of
60-120 KiB in ImageFolder layout; for each store (SeaweedFS's S3, the test
suite's Swift + Keystone): start it, upload the images, start its latency
relay (+20 ms); then for each cache size (the whole data set fits; half of it),
each worker count (4, 8) and each configuration (objmount, objmount with
objmount.torch.PrefetchSampler, tuned rclone mount --vfs-cache-mode full), a
fresh mount and epochs 1-3, the page cache dropped before each. Local disk
runs the same epochs once per worker count. A second mode reads the same files
cold by 8 threads outside torch (+10 ms) for the mount's CPU per file.
Prints the tables and writes bench/results/train-latest.md (and .json).

Invariant: every process this starts is stopped and every mount unmounted when
it ends, also on Ctrl-C, SIGTERM or an error.
"""

import argparse
import contextlib
import time
from dataclasses import asdict, replace
from pathlib import Path

from bench import dataset as data
from bench import direct, harness, netcheck, procs, report
from bench import facts as run_facts
from bench.facts import REPO_DIR, load_average
from bench.mounts import Tools, drop_caches, specs
from bench.servers import BACKENDS
from bench.train import table
from bench.train.runs import CacheSize, Config, Epoch, run
from bench.workloads import WORKLOADS
from objmount.backends.runner import background_share
from objmount.mount import MountOptions

BENCH_DIR = REPO_DIR / "bench"
CONTAINER = "train"
README_MARKERS = ("<!-- train-results:start -->", "<!-- train-results:end -->")
FILES_AT_SCALE_1 = 10_000
CONFIGS = ("objmount", "prefetch", "rclone", "local")
RCLONE_SPEC = "rclone full tuned"
# The cold-file CPU mode: the mounts of issue #12's measurement.
CPU_SPECS = ("objmount", "objmount tuned", "rclone off tuned", "rclone full tuned")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.train", description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0,
                        help=f"data set size: 1 = {FILES_AT_SCALE_1:,} JPEGs of 60-120 KiB")
    parser.add_argument("--backends", type=harness.backends_arg, default=list(BACKENDS),
                        help="stores to run on: s3 (SeaweedFS), swift (Swift + Keystone)")
    parser.add_argument("--rtt-ms", type=float, default=20.0,
                        help="round-trip time the relay adds for the training epochs")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", default="4,8", help="DataLoader worker counts to run")
    parser.add_argument("--cache-sizes", default="full,half",
                        help="full: the data set fits in each tool's cache; half: both capped "
                        "at half of it")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="objmount, prefetch (objmount + PrefetchSampler), rclone "
                        f"({RCLONE_SPEC}), local (local disk)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each (fresh mount, epochs) cycle N times; the table shows "
                        "the median")
    parser.add_argument("--mode", choices=("all", "epochs", "cold-cpu"), default="all",
                        help="epochs: the DataLoader runs; cold-cpu: the mount's CPU per small "
                        "cold file, 8 threads outside torch; all: both")
    parser.add_argument("--cpu-rtt-ms", type=float, default=10.0,
                        help="round-trip time of the cold-cpu mode (issue #12 measured at 10)")
    parser.add_argument("--order-ahead", default="",
                        help="a sweep: one 'objmount + PrefetchSampler' row per value of the "
                        "mount's --order-ahead (GETs in flight ahead of the order), e.g. "
                        "4,12,48; empty: the default only")
    parser.add_argument("--seed", type=int, default=12, help="the samplers' seed")
    parser.add_argument("--work-dir", type=Path, default=REPO_DIR / ".bench",
                        help="data, server state (kept between runs) and logs of the last run")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--update-readme", action="store_true",
                        help="also put the tables into bench/README.md (section 'Training')")
    args = parser.parse_args()
    args.worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    args.config_keys = [c.strip() for c in args.configs.split(",") if c.strip()]
    args.cache_names = [c.strip() for c in args.cache_sizes.split(",") if c.strip()]
    args.order_aheads = [int(n) for n in args.order_ahead.split(",") if n.strip()]
    if any(n < 1 for n in args.order_aheads):
        parser.error("--order-ahead: whole numbers of 1 or more")
    if set(args.config_keys) - set(CONFIGS) or set(args.cache_names) - {"full", "half"}:
        parser.error("--configs: objmount,prefetch,rclone,local; --cache-sizes: full,half")
    return args


def layout_at(scale: float) -> data.Layout:
    """The training data set: JPEGs only, 60-120 KiB, in 10 class directories."""
    return data.Layout(shard_count=0, shard_bytes=0,
                       small_count=max(200, round(FILES_AT_SCALE_1 * scale)),
                       small_min_bytes=60 * data.KIB, small_max_bytes=120 * data.KIB,
                       pread_count=0, pread_bytes=0)


def configs(keys: list[str], tools: Tools, prefetch_present: bool,
            order_aheads: list[int]) -> list[Config]:
    """The rows to run; with `order_aheads`, the PrefetchSampler row once per --order-ahead."""
    by_name = {s.name: s for s in specs(tools)}
    out = []
    for key in keys:
        if key == "objmount":
            out.append(Config("objmount", by_name["objmount"]))
        elif key == "prefetch" and prefetch_present and not order_aheads:
            out.append(Config("objmount + PrefetchSampler", by_name["objmount"], prefetch=True))
        elif key == "prefetch" and prefetch_present:
            objmount = by_name["objmount"]
            out += [Config(f"objmount + PrefetchSampler, --order-ahead {n}",
                           replace(objmount, args=(*objmount.args, *_order_ahead_flags(n))),
                           prefetch=True) for n in order_aheads]
        elif key == "rclone":
            out.append(Config(RCLONE_SPEC, by_name[RCLONE_SPEC]))
    return out


def _order_ahead_flags(n: int) -> tuple[str, ...]:
    """--order-ahead N, with --max-parallel raised so that N binds: prefetches may hold
    background_share(max_parallel) of its threads (a quarter is kept for demand)."""
    max_parallel = MountOptions.max_parallel
    while background_share(max_parallel) < n:
        max_parallel += 1
    return ("--order-ahead", str(n), "--max-parallel", str(max_parallel))


def cold_cpu(tools: Tools, site: harness.Site, dataset: data.Dataset,
             rtt_ms: float, cleanup: contextlib.ExitStack) -> list[report.Row]:
    """The cold small-file pass (8 threads, random order) through a relay at `rtt_ms`."""
    relayed = harness.relayed(site, rtt_ms, cleanup, "cpu")
    small = replace(next(w for w in WORKLOADS if w.key == "small"), passes=("cold",))
    ctx = harness.Context(tools, dataset, [], None, 900.0, [small])
    by_name = {s.name: s for s in specs(tools)}
    rows = []
    for name in CPU_SPECS:
        print(f"bench.train: {site.backend}: cold files, {name}", flush=True)
        rows.append(harness.run_mount(by_name[name], ctx, relayed))
    objects = site.store.objects(CONTAINER, relayed.relay.port)
    row = report.Row(f"direct {'boto3' if site.backend == 's3' else 'swiftclient'}, 8 threads",
                     "direct", backend=site.backend)
    drop_caches()
    row.set("small", "cold", direct.threaded_smalls(objects, dataset, threads=8))
    harness.progress(row.name, small, {"cold": row.get("small", "cold")})
    return [*rows, row]


def main() -> int:
    args = parse_args()
    work_dir, run_dir, tools = harness.begin(args.work_dir, "train-run")
    prefetch_present = "prefetch" in args.config_keys and _prefetch_present()
    started, load_start = time.monotonic(), load_average()
    layout = layout_at(args.scale)
    print(f"bench.train: {layout.small_count:,} JPEGs (generated once, then reused)", flush=True)
    dataset = data.prepare(work_dir, layout, images="jpeg")
    digests = {e.key.removeprefix("images/"): e.sha256 for e in dataset.smalls}
    caches = {"full": CacheSize("full", None),
              "half": CacheSize("half", dataset.total_bytes // 2)}
    facts = {
        "date": run_facts.now_utc(),
        **run_facts.machine_facts(tools.rclone),
        "data": f"scale {args.scale:g}: {layout.small_count:,} JPEGs (500 x 375, Pillow, "
                f"quality 90) of 60-120 KiB in {data.CLASSES} class dirs; "
                f"{dataset.total_bytes / 1e6:,.0f} MB",
        "loader": "torchvision ImageFolder, whole-file read + sha256 check, Pillow decode, "
                  "RandomResizedCrop(224) + PILToTensor; DataLoader batch 32, seeded "
                  "RandomSampler, persistent workers",
        "epochs": f"{args.epochs} per run, page cache dropped before each; "
                  f"workers {args.workers}",
        "cache sizes": "full: default limits (objmount --cache-max-size 10G, rclone "
                       "unlimited); half: --cache-max-size / --vfs-cache-max-size "
                       f"{caches['half'].max_bytes // (1 << 20)}M (rclone with "
                       "--vfs-cache-poll-interval 2s)",
        "injected RTT": f"{args.rtt_ms:g} ms for the epochs, {args.cpu_rtt_ms:g} ms for the "
                        "cold-file CPU mode (user-space relay, half each way)",
        "PrefetchSampler": "objmount.torch.PrefetchSampler present" if prefetch_present
                           else "objmount.torch.PrefetchSampler absent: its rows are skipped",
    }
    chosen = configs(args.config_keys, tools, prefetch_present, args.order_aheads)
    epochs: list[Epoch] = []
    cpu_rows: dict[str, list[report.Row]] = {}
    for backend in args.backends:
        with contextlib.ExitStack() as cleanup:
            site = harness.start_site(backend, tools, work_dir, run_dir, dataset, CONTAINER,
                                      args.rtt_ms, cleanup)
            title = report.STORE_TITLES[backend]
            facts[f"{title} server"] = site.store.describe()
            objects = (site.store.objects(CONTAINER),
                       site.store.objects(CONTAINER, site.relay.port))
            facts.update(netcheck.site_facts(title, objects, dataset, args.rtt_ms))
            if args.mode in ("all", "epochs"):
                for cache in args.cache_names:
                    for workers in args.worker_counts:
                        for config in chosen:
                            for rep in range(max(1, args.repeat)):
                                epochs += run(config, caches[cache], workers, args.epochs, rep,
                                              args.seed, tools, site, dataset.root, digests)
            if args.mode in ("all", "cold-cpu"):
                cpu_rows[backend] = cold_cpu(tools, site, dataset, args.cpu_rtt_ms, cleanup)
    if "local" in args.config_keys and args.mode in ("all", "epochs"):
        local = Config("local disk", None)
        for workers in args.worker_counts:
            for rep in range(max(1, args.repeat)):
                epochs += run(local, caches["full"], workers, args.epochs, rep, args.seed,
                              tools, None, dataset.root, digests)
    facts["duration"] = f"{(time.monotonic() - started) / 60:.1f} min"
    facts["load average (1 min) at start, end"] = f"{load_start}, {load_average()}"
    header = ["### Run", ""] + [f"- {k}: {v}" for k, v in facts.items()]
    text = table.markdown(header, epochs, cpu_rows, args.backends, prefetch_present,
                          args.cpu_rtt_ms)
    print()
    print(text)
    md = report.write_results(args.results_dir, "train-latest", text, {
        "facts": facts, "args": {k: str(v) for k, v in vars(args).items()},
        "epochs": [asdict(e) for e in epochs],
        "cold_cpu": {b: [asdict(r) for r in rows] for b, rows in cpu_rows.items()}})
    print(f"bench.train: wrote {md}")
    if args.update_readme and report.update_readme(BENCH_DIR / "README.md", text,
                                                   README_MARKERS):
        print("bench.train: updated bench/README.md")
    return 0


def _prefetch_present() -> bool:
    from bench.train.loader import prefetch_sampler_class

    return prefetch_sampler_class() is not None


if __name__ == "__main__":
    procs.run_main(main, "bench.train")
