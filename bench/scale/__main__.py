"""`python -m bench.scale`: containers of 100k and 1M objects, mounted and walked (issue #15).

For each store (SeaweedFS's S3, the test suite's Swift + Keystone) and each
object count: write (once) and upload the ImageFolder tree (bench/scale/tree.py),
start the +20 ms relay; then, each after drop_caches:
- objmount with default flags and an empty cache directory: time to mount, time
  to the end of an ImageFolder-style scan (os.walk + a stat of every file), the
  mount's RSS after it, LISTs at the relay; then unmount (which writes the
  listing snapshot) and mount again over the same cache directory: the same
  figures, served from the snapshot;
- tuned rclone mount (`--vfs-cache-mode off` and bench/mounts.py's tuned flags):
  the same figures, cold;
- local disk: the same scan of the tree itself.
Prints the table and the issue's targets, writes bench/results/scale-latest.md
(and .json), and with --update-readme the section of bench/README.md.

Invariant: every process this starts is stopped and every mount unmounted when
it ends, also on Ctrl-C, SIGTERM or an error.
"""

import argparse
import compileall
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import facts as run_facts
from bench import harness, procs, report
from bench.facts import REPO_DIR, load_average
from bench.mounts import RCLONE_TUNED, MountSpec, Tools, drop_caches
from bench.scale import tree
from bench.servers import BACKENDS, make_store

BENCH_DIR = REPO_DIR / "bench"
README_MARKERS = ("<!-- scale-results:start -->", "<!-- scale-results:end -->")
WALK_TIMEOUT_S = 3600.0
# objmount publishes its listing snapshot as it unmounts: ~100 MB for 1M objects,
# written and synced (seconds; more under load), never to be cut short by a SIGKILL.
UNMOUNT_TIMEOUT_S = 180.0
OBJMOUNT = MountSpec("objmount", "objmount", ("-v",))  # -v: its INFO lines (the ready time)
READY = re.compile(r"ready in ([0-9.]+) s")
RCLONE = MountSpec("rclone off tuned", "rclone", ("--vfs-cache-mode", "off", *RCLONE_TUNED),
                   " ".join(RCLONE_TUNED))


@dataclass
class Run:
    """One mount (or the local disk) and one scan of the tree."""

    backend: str
    count: int
    config: str
    mount_s: float | None = None
    ready_s: float | None = None  # objmount: opening the snapshot's copy, until it serves
    walk_s: float | None = None
    files: int = 0
    rss_mib: float | None = None
    peak_rss_mib: float | None = None
    cpu_s: float | None = None
    lists: int | None = None
    heads: int | None = None
    unmount_s: float | None = None
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--backends", type=harness.backends_arg, default=list(BACKENDS))
    parser.add_argument("--counts", default="100000,1000000",
                        help="object counts on S3 (SeaweedFS)")
    parser.add_argument("--swift-counts", default="100000", help="object counts on Swift")
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--configs", default="objmount,rclone,local")
    parser.add_argument("--work-dir", type=Path, default=REPO_DIR / ".bench")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument("--keep-from", type=Path, default=None,
                        help="a previous results .json: its rows of stores, counts and "
                             "configurations this run does not measure are kept (named in "
                             "the facts)")
    args = parser.parse_args()
    args.count_list = {"s3": _counts(args.counts), "swift": _counts(args.swift_counts)}
    args.config_keys = {c.strip() for c in args.configs.split(",") if c.strip()}
    return args


def _counts(text: str) -> list[int]:
    return [int(c.replace("_", "")) for c in text.split(",") if c.strip()]


def mounted_walk(spec: MountSpec, tools: Tools, site: harness.Site, count: int,
                 label: str, fresh: bool = True) -> Run:
    """Mount, drop caches, scan, read RSS and relay counts, unmount."""
    mount = harness.new_mount(spec, tools, site, "scale")
    run = Run(site.backend, count, label)
    before = site.relay.counters()
    try:
        warm_start(spec, tools)
        started = time.monotonic()  # the tools' own start-up from the page cache
        mount.start(fresh=fresh)
        run.mount_s = time.monotonic() - started
        drop_caches()
        run.files, run.walk_s = tree.walk(mount.path / "train", WALK_TIMEOUT_S)
        rss, peak = tree.rss_kib(mount.pid)
        run.rss_mib = rss / 1024 if rss else None
        run.peak_rss_mib = peak / 1024 if peak else None
        run.cpu_s = procs.cpu_seconds(mount.pid)
        after = site.relay.counters()
        run.lists = after.get("list", 0) - before.get("list", 0)
        run.heads = after.get("head", 0) - before.get("head", 0)
        if run.files != count:
            run.note = f"{run.files:,} of {count:,} files"
    except Exception as exc:  # a failed configuration is a row, not the end of the run
        run.note = f"failed: {exc!r}"[:80]
    finally:
        started = time.monotonic()
        mount.stop(UNMOUNT_TIMEOUT_S)
        run.unmount_s = time.monotonic() - started
    if spec.tool == "objmount":
        found = READY.findall(mount.log_path.read_text(errors="replace"))
        run.ready_s = float(found[-1]) if found and fresh is False else None
        run.extra["snapshots_mib"] = sum(
            tree.disk_bytes(p) for p in mount.cache_dir.rglob("listings-v1")) / 2**20
    print(f"  {label:<28} {count:>9,}: mount {run.mount_s or 0:.2f} s, walk "
          f"{run.walk_s or 0:.2f} s, RSS {run.rss_mib or 0:.0f} MiB, LISTs {run.lists}, "
          f"unmount {run.unmount_s:.1f} s {run.note}", flush=True)
    return run


# What a mount of objmount imports, read once so that every mount starts from the page
# cache: the walk before a second mount drops the caches, and Python's start-up read
# from disk (thousands of boto3/botocore files) would count in its mount time alone.
OBJMOUNT_IMPORTS = ("import objmount.cli, objmount.mount, objmount.backends.s3, "
                    "objmount.backends.swift")


def warm_start(spec: MountSpec, tools: Tools) -> None:
    """Bring `spec`'s program into the page cache (the first mount's start-up had it)."""
    if spec.tool == "objmount":
        command = [sys.executable, "-c", OBJMOUNT_IMPORTS]
    else:
        command = [str(tools.rclone), "version"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={
        **os.environ, "PYTHONPATH": str(REPO_DIR)})


def local_walk(root: Path, count: int) -> list[Run]:
    runs = []
    for label, drop in (("local disk (after drop_caches)", True), ("local disk (cached)", False)):
        if drop:
            drop_caches()
        files, seconds = tree.walk(root / "train", WALK_TIMEOUT_S)
        runs.append(Run("", count, label, walk_s=seconds, files=files))
        print(f"  {label:<28} {count:>9,}: walk {seconds:.2f} s", flush=True)
    return runs


def start_site(backend: str, tools: Tools, work_dir: Path, run_dir: Path, count: int,
               root: Path, rtt_ms: float, cleanup: contextlib.ExitStack,
               facts: dict[str, str]) -> harness.Site:
    container = f"scale-{count}"
    site_dir = run_dir / f"{backend}-{count}"
    site_dir.mkdir(parents=True, exist_ok=True)
    store = make_store(backend, tools.weed, work_dir / "weed-scale", site_dir, tree.WEED_ARGS)
    cleanup.callback(store.stop)
    store.start()
    if backend == "s3":
        seconds = tree.upload_seaweed(tools.weed, store.filer_address, container, root, count,
                                      store.data_dir, store.client())
    else:
        seconds = tree.upload_swift(store.stack, container, count)
    if seconds is not None:
        facts[f"upload of {count:,} objects to {backend}"] = f"{seconds:.0f} s"
    facts[f"{report.STORE_TITLES[backend]} server"] = store.describe()
    return harness.behind_relay(backend, store, container, site_dir, rtt_ms, seconds is not None,
                                cleanup)


def keep_rows(path: Path, runs: list[Run], facts: dict[str, str]) -> list[Run]:
    """The rows of the results file `path` whose store, count and configuration `runs`
    lack; its facts that this run's lack are added, its date and load named."""
    old = json.loads(path.read_text())
    measured = {(r.backend, r.count, r.config) for r in runs}
    kept = [Run(**r) for r in old["runs"]
            if (r["backend"], r["count"], r["config"]) not in measured]
    if kept:
        where = sorted({f"{report.STORE_TITLES.get(r.backend, 'local')} {r.count:,}"
                        for r in kept})
        facts[f"rows of {', '.join(where)}"] = (
            f"from the run of {old['facts'].get('date')}, load average (1 min) at start, "
            f"end {old['facts'].get('load average (1 min) at start, end')}")
        for key, value in old["facts"].items():
            facts.setdefault(key, value)
    return kept


def markdown(header: list[str], runs: list[Run]) -> str:
    head = ["store", "objects", "configuration", "mount (s)", "snapshot ready (s)",
            "walk + stat (s)", "files/s",
            "RSS after (MiB)", "peak RSS (MiB)", "LISTs", "mount CPU (s)", "note"]
    rows = []
    for r in runs:
        rate = f"{r.files / r.walk_s:,.0f}" if r.walk_s else "-"
        rows.append([report.STORE_TITLES.get(r.backend, "local"), f"{r.count:,}", r.config,
                     _f(r.mount_s), _f(r.ready_s), _f(r.walk_s), rate, _f(r.rss_mib, 0),
                     _f(r.peak_rss_mib, 0),
                     "-" if r.lists is None else str(r.lists), _f(r.cpu_s, 1), r.note])
    return "\n".join([*header, "", "### Figures", "", report.md_table(head, rows), "",
                      "### Targets of issue #15", "", targets(runs), ""])


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def targets(runs: list[Run]) -> str:
    def find(backend: str, count: int, config: str) -> Run | None:
        return next((r for r in runs if (r.backend, r.count, r.config) == (backend, count,
                                                                           config)), None)

    lines = []
    for backend in BACKENDS:
        for count in sorted({r.count for r in runs if r.backend == backend}):
            warm = find(backend, count, "objmount, second mount")
            cold = find(backend, count, "objmount, first mount")
            rclone = find(backend, count, RCLONE.name)
            local = find("", count, "local disk (after drop_caches)")
            where = f"{report.STORE_TITLES[backend]}, {count:,}"
            if warm and warm.mount_s is not None and count >= 1_000_000:
                ready = f" (snapshot ready {warm.ready_s:.2f} s)" if warm.ready_s else ""
                lines.append([where, "mount returns < 1 s (from the snapshot)",
                              f"{warm.mount_s:.2f} s{ready}", _verdict(warm.mount_s < 1)])
            if warm and warm.walk_s is not None:
                bound = 2.0 if count <= 100_000 else 15.0
                lines.append([where, f"walk + stat from the snapshot <= {bound:g} s",
                              f"{warm.walk_s:.2f} s", _verdict(warm.walk_s <= bound)])
                if local and local.walk_s and count >= 1_000_000:
                    ratio = warm.walk_s / local.walk_s
                    lines.append([where, "... and <= 2x local disk", f"{ratio:.2f}x",
                                  _verdict(ratio <= 2)])
            if cold and rclone and cold.walk_s and rclone.walk_s:
                ratio = cold.walk_s / rclone.walk_s
                lines.append([where, "cold walk <= 1.0x rclone's time", f"{ratio:.2f}x",
                              _verdict(ratio <= 1.0)])
            for run in (cold, warm):
                if run and run.rss_mib and count >= 1_000_000:
                    lines.append([where, f"RSS after the walk <= 400 MB ({run.config})",
                                  f"{run.rss_mib * 1.048576:.0f} MB",
                                  _verdict(run.rss_mib * 1.048576 <= 400)])
    return report.md_table(["where", "target", "measured", "verdict"], lines)


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def main() -> int:
    args = parse_args()
    work_dir, run_dir, tools = harness.begin(args.work_dir, "scale-run")
    started, load_start = time.monotonic(), load_average()
    facts = {"date": run_facts.now_utc(), **run_facts.machine_facts(tools.rclone),
             "data": f"ImageFolder tree, {tree.FILES_PER_CLASS:,} files of 16 bytes per "
                     "class directory (train/class_CCCC/img_NNNNNNN.jpg)",
             "injected RTT": f"{args.rtt_ms:g} ms (user-space relay, half each way)",
             "walk": "os.walk + os.stat of every file, in a child process, after "
                     "drop_caches (the local-disk row also cached); mount: until the root "
                     "answers a stat, the program's start-up (from the page cache) included",
             "objmount flags": "default; the second mount reuses the first one's cache dir",
             "rclone": f"{RCLONE.name}: {RCLONE.note}"}
    # An installed objmount has its bytecode (pip compiles it); a checkout run with
    # PYTHONDONTWRITEBYTECODE would compile every module at each mount's start-up.
    compileall.compile_dir(REPO_DIR / "objmount", quiet=1)
    facts["bytecode"] = "objmount's modules compiled before the runs, as pip installs them"
    runs: list[Run] = []
    counts = sorted({c for b in args.backends for c in args.count_list[b]})
    roots = {count: tree.ensure_tree(work_dir, count) for count in counts}
    for backend in args.backends:
        for count in args.count_list[backend]:
            with contextlib.ExitStack() as cleanup:
                site = start_site(backend, tools, work_dir, run_dir, count, roots[count],
                                  args.rtt_ms, cleanup, facts)
                if "objmount" in args.config_keys:
                    runs.append(mounted_walk(OBJMOUNT, tools, site, count,
                                             "objmount, first mount"))
                    runs.append(mounted_walk(OBJMOUNT, tools, site, count,
                                             "objmount, second mount", fresh=False))
                if "rclone" in args.config_keys:
                    runs.append(mounted_walk(RCLONE, tools, site, count, RCLONE.name))
    if "local" in args.config_keys:
        for count in counts:
            runs += local_walk(roots[count], count)
    facts["duration"] = f"{(time.monotonic() - started) / 60:.1f} min"
    facts["load average (1 min) at start, end"] = f"{load_start}, {load_average()}"
    if args.keep_from is not None:
        runs += keep_rows(args.keep_from, runs, facts)
    header = ["### Run", ""] + [f"- {k}: {v}" for k, v in facts.items()]
    text = markdown(header, runs)
    print()
    print(text)
    md = report.write_results(args.results_dir, "scale-latest", text,
                              {"facts": facts, "runs": [asdict(r) for r in runs]})
    print(f"bench.scale: wrote {md}")
    if args.update_readme and report.update_readme(BENCH_DIR / "README.md", text,
                                                   README_MARKERS):
        print("bench.scale: updated bench/README.md")
    print(json.dumps({"load_average_end": load_average()}))
    return 0


if __name__ == "__main__":
    procs.run_main(main, "bench.scale")
