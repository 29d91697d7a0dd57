"""`python -m bench`: objmount against rclone mount and s3fs on one S3 server behind latency.

One run: generate (or reuse) the data set, start SeaweedFS on 127.0.0.1 and
upload (once), start the latency relay and check it, then for every mount
configuration and workload: a fresh mount with an empty cache dir, drop the
kernel caches, a cold pass, drop them again, a warm pass on the same mount,
then unmount. Direct downloads give the cold limit, local disk the warm one.
Prints one table and writes bench/results/latest.md (and .json).

Invariant: every process this starts (server, relays, mounts) is stopped and
every mount unmounted when it ends, also on Ctrl-C, SIGTERM or an error.
"""

import argparse
import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench import dataset as data
from bench import harness, netcheck, report
from bench.mounts import Tools, force_unmount, specs, stale_mounts
from bench.servers import SeaweedS3
from bench.workloads import WORKLOADS

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="data set size: 1 = 4 x 256 MiB shards + 5,000 small files; "
                        "0.1 for a quick run")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round-trip time the relay adds")
    parser.add_argument("--mounts", default="",
                        help="comma-separated configurations or tools to run (default: all "
                        "but the optional 'objmount cache off' and 's3fs tuned'), "
                        "e.g. 'objmount,rclone off'")
    parser.add_argument("--workloads", default="",
                        help="comma-separated: " + ",".join(w.key for w in WORKLOADS))
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each (fresh mount, cold, warm) cycle N times; cells show the "
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


def _version(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, check=False, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def _load_average() -> str:
    """The 1-minute load average: above ~2 on these 2 cores, other work skews the figures."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def machine_facts(tools: Tools) -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    rev = _version(["git", "-C", str(REPO_DIR), "describe", "--always", "--dirty"])
    return {
        "machine": f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, "
                   f"Linux {platform.release()}",
        "objmount": f"git {rev}",
        "rclone": _version([str(tools.rclone), "version"]),
        "s3fs": _version([str(tools.s3fs), "--version"]) if tools.s3fs else "not installed",
        "python": platform.python_version(),
    }


def network_facts(server: SeaweedS3, relay_port: int, rtt_ms: float,
                  dataset: data.Dataset) -> dict[str, str]:
    """Check the relay adds one RTT per request, and measure its own ceiling."""
    facts: dict[str, str] = {}
    small = dataset.smalls[0].key

    def url(endpoint: str, key: str) -> str:
        return server.client(endpoint).generate_presigned_url(
            "get_object", Params={"Bucket": data.BUCKET, "Key": key}, ExpiresIn=3600)

    relay_endpoint = f"http://127.0.0.1:{relay_port}"
    latency = netcheck.request_latency(url(server.endpoint, small), url(relay_endpoint, small))
    if latency:
        facts["relay check (curl, median of 5)"] = (
            f"small GET on a kept-alive connection {latency.direct_reused_s * 1e3:.1f} ms direct, "
            f"{latency.relay_reused_s * 1e3:.1f} ms through the relay "
            f"(+{(latency.relay_reused_s - latency.direct_reused_s) * 1e3:.1f} ms, RTT {rtt_ms:g}"
            f" ms); on a new connection +"
            f"{(latency.relay_new_s - latency.direct_new_s) * 1e3:.1f} ms (handshake + request)")
    ceilings = [f"{netcheck.relay_ceiling(rtt_ms, n):,.0f} MB/s with {n} connection(s)"
                for n in (1, 4)]
    facts["relay ceiling (relay alone, RTT applied)"] = ", ".join(ceilings)
    return facts


def main() -> int:
    args = parse_args()

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    work_dir = args.work_dir.absolute()
    work_dir.mkdir(parents=True, exist_ok=True)
    for path in stale_mounts(work_dir):
        print(f"bench: unmounting {path}, left by an earlier run", flush=True)
        force_unmount(path)
    if os.geteuid() != 0:
        print("bench: not root: drop_caches will fail, warm/cold figures include page cache",
              file=sys.stderr)
    tools = Tools.find()
    all_specs = specs(tools)
    wanted = {s.strip() for s in args.mounts.split(",") if s.strip()}
    chosen = [s for s in all_specs
              if s.name in wanted or ((s.tool in wanted or not wanted) and not s.optional)]
    keys = {s.strip() for s in args.workloads.split(",") if s.strip()}
    workloads = [w for w in WORKLOADS if not keys or w.key in keys]
    started = time.monotonic()
    load_start = _load_average()

    layout = data.Layout.from_scale(args.scale)
    print(f"bench: data set at scale {args.scale:g}: {layout.shard_count} x "
          f"{layout.shard_bytes >> 20} MiB shards, {layout.small_count} small files", flush=True)
    with contextlib.ExitStack() as cleanup:
        env = harness.environment(tools, work_dir, layout, args.rtt_ms, cleanup)
        dataset, server = env.dataset, env.server
        if env.uploaded:
            print(f"bench: uploaded {dataset.total_bytes / 1e6:,.0f} MB", flush=True)
        facts = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            **machine_facts(tools),
            "server": f"SeaweedFS {server.version()} (weed server -s3), 127.0.0.1",
            "data": f"scale {args.scale:g}: {layout.shard_count} x {layout.shard_bytes >> 20} "
                    f"MiB shards, {layout.small_count} files of 60-120 KiB in "
                    f"{data.CLASSES} dirs, {layout.pread_count} preads of 64 KiB; "
                    f"{dataset.total_bytes / 1e6:,.0f} MB",
            "injected RTT": f"{args.rtt_ms:g} ms (user-space relay, half each way)",
        }
        facts.update(network_facts(server, env.relay_port, args.rtt_ms, dataset))
        for key, value in facts.items():
            print(f"  {key}: {value}", flush=True)
        budget_s = args.pass_budget_s or None
        timeout_s = args.pass_timeout_s or (budget_s + 180.0 if budget_s else 600.0)
        ctx = harness.context(tools, env, budget_s, timeout_s, workloads, max(1, args.repeat))
        if args.repeat > 1:
            facts["repeats"] = f"{args.repeat} cycles per mount and workload; median shown"
        if budget_s:
            facts["time budget of a pass"] = (
                f"{budget_s:g} s: past it no new read starts; figures marked * are rates "
                "over the part done (the same prefix of the same order everywhere)")

        rows: list[report.Row] = []
        for spec in chosen:
            print(f"bench: {spec.name} {spec.note}".rstrip(), flush=True)
            rows.append(harness.run_mount(spec, ctx))
        if not args.no_baselines:
            print("bench: baselines", flush=True)
            rows += harness.run_direct(ctx, server)
            rows.append(harness.run_local(ctx))
        facts["duration"] = f"{(time.monotonic() - started) / 60:.1f} min"
        facts["load average (1 min) at start, end"] = f"{load_start}, {_load_average()}"

    header = ["### Run", ""] + [f"- {k}: {v}" for k, v in facts.items()]
    text = report.markdown(header, rows)
    print()
    print(text)
    md = report.write(args.results_dir, text, rows, {"facts": facts, "args": {
        k: str(v) for k, v in vars(args).items()}, "layout": asdict(layout)})
    print(f"bench: wrote {md}")
    if args.update_readme and report.update_readme(BENCH_DIR / "README.md", text):
        print("bench: updated bench/README.md")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started is stopped", file=sys.stderr)
        sys.exit(130)
