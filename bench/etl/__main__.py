"""`python -m bench.etl`: `objmount etl load` against `rclone copy`, same data, same server.

One run: reuse (or generate) the benchmark's data set, start SeaweedFS on
127.0.0.1 with an empty data directory of its own, and the latency relay in
front of it; then, for each data set (the 5,000 small files, the 4 shards) and
each repeat, each tool loads it into a fresh bucket through the relay, the
bucket is checked against the local files, the same command runs again (the
no-op rerun), and the bucket is deleted. The tools alternate which goes first.
Prints one table and writes bench/results/etl-latest.md (and .json).

Invariant: every process this starts is stopped when it ends, also on Ctrl-C,
SIGTERM or an error, and the server's data directory is removed.
"""

import argparse
import contextlib
import shlex
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench import dataset as data
from bench import facts as run_facts
from bench import procs, report
from bench.etl import runs, table, verify
from bench.facts import REPO_DIR, load_average
from bench.mounts import MountTarget, Tools
from bench.profile import summarize
from bench.relay import start_relay
from bench.servers import SeaweedS3
from objmount.etl.load import local_files

BENCH_DIR = REPO_DIR / "bench"

README_MARKERS = ("<!-- etl-results:start -->", "<!-- etl-results:end -->")
DATA_SETS = {"files": "images", "shards": "shards"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.etl", description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="data set size: 1 = 4 x 256 MiB shards + 5,000 small files; "
                        "0.1 for a quick run")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round-trip time the relay adds")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure each tool on each data set N times; the table shows medians")
    parser.add_argument("--data", default="files,shards", help="data sets: files, shards")
    parser.add_argument("--tools", default="objmount,rclone", help="loaders: objmount, rclone")
    parser.add_argument("--transfers", type=int, default=runs.TRANSFERS)
    parser.add_argument("--checkers", type=int, default=runs.CHECKERS)
    parser.add_argument("--objmount-flags", default="",
                        help="more flags for objmount etl load, e.g. '--segment-size 32M'")
    parser.add_argument("--rclone-flags", default="", help="more flags for rclone copy")
    parser.add_argument("--py-spy", action="store_true",
                        help="run objmount under py-spy (GIL holder only; CPU figures then "
                        "include py-spy's); stacks and top functions in .bench/profiles/")
    parser.add_argument("--work-dir", type=Path, default=REPO_DIR / ".bench",
                        help="the data set (shared with python -m bench) and this run's logs")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--update-readme", action="store_true",
                        help="also put the table into bench/README.md (section 'ETL load')")
    return parser.parse_args()


def _start(tools: Tools, work_dir: Path, rtt_ms: float,
           cleanup: contextlib.ExitStack) -> tuple[SeaweedS3, Path, Path]:
    """Start an empty SeaweedFS and the relay; return the server, rclone.conf and the log dir."""
    run_dir = work_dir / "etl-run"
    server_dir = work_dir / "weed-etl"
    for path in (run_dir, server_dir):
        shutil.rmtree(path, ignore_errors=True)
    run_dir.mkdir(parents=True)
    cleanup.callback(shutil.rmtree, server_dir, ignore_errors=True)
    server = SeaweedS3(tools.weed, server_dir, run_dir)
    cleanup.callback(server.stop)
    server.start()
    relay = start_relay(server.port, rtt_ms, log_path=str(run_dir / "relay.log"))
    cleanup.callback(relay.stop)
    target = MountTarget.write(run_dir, server.rclone_section(relay.port), "")
    return server, target.rclone_conf, run_dir


def _py_spy(work_dir: Path) -> tuple[str, ...]:
    """py-spy's argv to record a command's GIL holder into .bench/profiles/etl-RUN.collapsed."""
    out = work_dir / "profiles"
    out.mkdir(exist_ok=True)
    return (str(Path(sys.executable).parent / "py-spy"), "record", "--rate", "100", "--gil",
            "--nolineno", "--format", "raw", "-o", str(out / "etl-{run}.collapsed"), "--")


def _summarize_profiles(work_dir: Path) -> None:
    """Write each of this run's profiles' top functions next to it."""
    for collapsed in sorted((work_dir / "profiles").glob("etl-*.collapsed")):
        collapsed.with_suffix(".txt").write_text(summarize(collapsed, 25) + "\n")
        print(f"bench.etl: profile {collapsed.with_suffix('.txt')}")


def main() -> int:
    args = parse_args()
    procs.exit_on_signals()
    work_dir = args.work_dir.absolute()
    work_dir.mkdir(parents=True, exist_ok=True)
    tools = Tools.find()
    layout = data.Layout.from_scale(args.scale)
    dataset = data.prepare(work_dir, layout)
    chosen = [d.strip() for d in args.data.split(",") if d.strip()]
    trees = {name: dataset.root / DATA_SETS[name] for name in chosen}
    local = {name: local_files(root, "") for name, root in trees.items()}
    labels = {"files": f"{len(local.get('files', [])):,} files",
              "shards": f"{layout.shard_count} x {layout.shard_bytes >> 20} MiB"}
    started, load_start = time.monotonic(), load_average()
    measures: list[runs.Measure] = []
    with contextlib.ExitStack() as cleanup:
        server, rclone_conf, run_dir = _start(tools, work_dir, args.rtt_ms, cleanup)
        loaders = [t for t in runs.tools(tools.rclone, rclone_conf, args.transfers, args.checkers,
                                         run_dir, tuple(shlex.split(args.objmount_flags)),
                                         tuple(shlex.split(args.rclone_flags)),
                                         _py_spy(work_dir) if args.py_spy else ())
                   if t.name in args.tools.split(",")]
        client = server.client()
        digests = verify.Digests()
        for rep in range(max(1, args.repeat)):
            for name, root in trees.items():
                for tool in loaders if rep % 2 == 0 else loaders[::-1]:
                    bucket = f"etl-{rep}-{name}-{tool.name}"
                    m = runs.measure(tool, labels[name], root, local[name], bucket, client,
                                     digests, run_dir)
                    verify.delete_bucket(client, bucket)
                    measures.append(m)
                    print(f"bench.etl: {tool.name} {name} #{rep + 1}: load {m.load.wall_s:.1f} s "
                          f"({m.files_per_s():,.0f} files/s, {m.mb_per_s():,.0f} MB/s, CPU "
                          f"{m.load.cpu_s:.1f} s), rerun {m.rerun.wall_s:.1f} s"
                          + (f", {len(m.problems)} problems" if m.problems else ""), flush=True)
        facts = {
            "date": run_facts.now_utc(),
            **run_facts.machine_facts(tools.rclone),
            "server": f"SeaweedFS {server.version()} (weed server -s3), 127.0.0.1, "
                      "a fresh bucket per load",
            "injected RTT": f"{args.rtt_ms:g} ms (user-space relay, half each way)",
            "objmount command": " ".join(["etl load DIR REMOTE:BUCKET", *loaders[0].flags[2:]])
                        if loaders and loaders[0].name == "objmount" else "-",
            "rclone command": " ".join(["copy DIR REMOTE:BUCKET", *loaders[-1].flags[2:-4]])
                      if loaders and loaders[-1].name == "rclone" else "-",
            "repeats": f"{max(1, args.repeat)}; medians shown",
            "duration": f"{(time.monotonic() - started) / 60:.1f} min",
            "load average (1 min) at start, end": f"{load_start}, {load_average()}",
        }
    text = "\n".join(["### Run", "", *[f"- {k}: {v}" for k, v in facts.items()], "",
                      table.table(measures), ""])
    wrong = table.problems(measures)
    if wrong:
        text += "\nProblems:\n\n" + "\n".join(f"- {p}" for p in wrong) + "\n"
    print()
    print(text)
    md = report.write_results(args.results_dir, "etl-latest", text, {
        "facts": facts, "args": {k: str(v) for k, v in vars(args).items()},
        "measures": [asdict(m) for m in measures]})
    print(f"bench.etl: wrote {md}")
    if args.py_spy:
        _summarize_profiles(work_dir)
    if args.update_readme and report.update_readme(BENCH_DIR / "README.md", text,
                                                   README_MARKERS):
        print("bench.etl: updated bench/README.md")
    return 1 if wrong else 0


if __name__ == "__main__":
    procs.run_main(main, "bench.etl")
