"""`python -m bench`: objmount against rclone mount and s3fs, on S3 and on Swift, behind latency.

One run: generate (or reuse) the data set; for each store (SeaweedFS's S3, the
test suite's real Swift + Keystone): start it on 127.0.0.1, upload the data
(once for SeaweedFS), start its latency relay and check it, then for every
mount configuration and workload: a fresh mount with an empty cache dir, drop
the kernel caches, a cold pass, drop them again, a warm pass on the same mount
(small files: then a hot pass, page cache kept), then unmount. Direct downloads
give the cold limit, local disk the warm one. Ratios are within one store.
Prints the tables and writes bench/results/latest.md (and .json).

Invariant: every process this starts (servers, relays, mounts) is stopped and
every mount unmounted when it ends, also on Ctrl-C, SIGTERM or an error.
"""

import argparse
import contextlib
import time
from dataclasses import asdict
from pathlib import Path

from bench import dataset as data
from bench import facts as run_facts
from bench import harness, netcheck, procs, report
from bench.facts import REPO_DIR, load_average
from bench.mounts import specs
from bench.servers import BACKENDS
from bench.workloads import WORKLOADS

BENCH_DIR = REPO_DIR / "bench"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="data set size: 1 = 4 x 256 MiB shards + 5,000 small files; "
                        "0.1 for a quick run")
    parser.add_argument("--backends", type=harness.backends_arg, default=list(BACKENDS),
                        help="stores to run on: s3 (SeaweedFS), swift (Swift + Keystone)")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round-trip time the relay adds")
    parser.add_argument("--mounts", default="",
                        help="comma-separated configurations or tools to run (default: all "
                        "but the optional 'objmount cache off' and 's3fs tuned'), "
                        "e.g. 'objmount,rclone off'")
    parser.add_argument("--workloads", default="",
                        help="comma-separated: " + ",".join(w.key for w in WORKLOADS))
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each (fresh mount, passes) cycle N times; cells show the "
                        "median (the machine is noisy; a full run takes about N times longer)")
    parser.add_argument("--no-baselines", action="store_true",
                        help="skip the direct-download and local-disk rows")
    parser.add_argument("--pass-budget-s", type=float, default=40.0,
                        help="a mount's pass starts no new read after this long and reports the "
                        "rate of what it did (keeps slow configurations from taking minutes); "
                        "0: whole passes")
    parser.add_argument("--pass-timeout-s", type=float, default=0.0,
                        help="a pass still running after this long has hung: its mount is "
                        "killed; 0: the budget + 180 s (600 s without a budget)")
    parser.add_argument("--work-dir", type=Path, default=REPO_DIR / ".bench",
                        help="data, server state (kept between runs) and logs of the last run")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--update-readme", action="store_true",
                        help="also put the tables into bench/README.md")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    work_dir, run_dir, tools = harness.begin(args.work_dir, "run")
    all_specs = specs(tools)
    wanted = {s.strip() for s in args.mounts.split(",") if s.strip()}
    chosen = [s for s in all_specs
              if s.name in wanted or ((s.tool in wanted or not wanted) and not s.optional)]
    keys = {s.strip() for s in args.workloads.split(",") if s.strip()}
    workloads = [w for w in WORKLOADS if not keys or w.key in keys]
    started = time.monotonic()
    load_start = load_average()

    layout = data.Layout.from_scale(args.scale)
    print(f"bench: data set at scale {args.scale:g}: {layout.shard_count} x "
          f"{layout.shard_bytes >> 20} MiB shards, {layout.small_count} small files", flush=True)
    dataset = data.prepare(work_dir, layout)
    facts = {
        "date": run_facts.now_utc(),
        **run_facts.machine_facts(tools.rclone, tools.s3fs),
        "data": f"scale {args.scale:g}: {layout.shard_count} x {layout.shard_bytes >> 20} "
                f"MiB shards, {layout.small_count} files of 60-120 KiB in "
                f"{data.CLASSES} dirs, {layout.pread_count} preads of 64 KiB; "
                f"{dataset.total_bytes / 1e6:,.0f} MB",
        "injected RTT": f"{args.rtt_ms:g} ms (user-space relay, half each way)",
    }
    budget_s = args.pass_budget_s or None
    timeout_s = args.pass_timeout_s or (budget_s + 180.0 if budget_s else 600.0)
    ctx = harness.Context(tools, dataset, dataset.pread_plan(), budget_s, timeout_s, workloads,
                          max(1, args.repeat))
    if args.repeat > 1:
        facts["repeats"] = f"{args.repeat} cycles per mount and workload; median shown"
    if budget_s:
        facts["time budget of a pass"] = (
            f"{budget_s:g} s: past it no new read starts; figures marked * are rates "
            "over the part done (the same prefix of the same order everywhere)")
    facts.update(netcheck.relay_facts(args.rtt_ms))
    by_backend: dict[str, list[report.Row]] = {}
    for backend in args.backends:
        with contextlib.ExitStack() as cleanup:
            site = harness.start_site(backend, tools, work_dir, run_dir, dataset, data.BUCKET,
                                      args.rtt_ms, cleanup)
            title = report.STORE_TITLES[backend]
            facts[f"{title} server"] = site.store.describe()
            objects = (site.store.objects(data.BUCKET),
                       site.store.objects(data.BUCKET, site.relay.port))
            facts.update(netcheck.site_facts(title, objects, dataset, args.rtt_ms))
            for key in (k for k in facts if k.startswith(title)):
                print(f"  {key}: {facts[key]}", flush=True)
            rows: list[report.Row] = []
            for spec in chosen:
                if spec.tool == "s3fs" and site.target.s3fs is None:
                    continue
                print(f"bench: {backend}: {spec.name} {spec.note}".rstrip(), flush=True)
                rows.append(harness.run_mount(spec, ctx, site))
            if not args.no_baselines:
                print(f"bench: {backend}: direct downloads", flush=True)
                rows += harness.run_direct(ctx, site)
            by_backend[backend] = rows
    if not args.no_baselines:
        print("bench: local disk", flush=True)
        local = harness.run_local(ctx)
        for rows in by_backend.values():
            rows.append(local)
    facts["duration"] = f"{(time.monotonic() - started) / 60:.1f} min"
    facts["load average (1 min) at start, end"] = f"{load_start}, {load_average()}"

    header = ["### Run", ""] + [f"- {k}: {v}" for k, v in facts.items()]
    text = report.markdown(header, by_backend)
    print()
    print(text)
    md = report.write_results(args.results_dir, "latest", text, {
        "facts": facts, "args": {k: str(v) for k, v in vars(args).items()},
        "layout": asdict(layout),
        "rows": {b: [asdict(r) for r in rows] for b, rows in by_backend.items()}})
    print(f"bench: wrote {md}")
    if args.update_readme and report.update_readme(BENCH_DIR / "README.md", text):
        print("bench: updated bench/README.md")
    return 0


if __name__ == "__main__":
    procs.run_main(main, "bench")
