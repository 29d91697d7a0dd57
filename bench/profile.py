"""`python -m bench.profile`: where an objmount mount spends its CPU during one workload.

Same data, server and relay as `python -m bench`; one objmount mount (flags
from --mount-args), one workload, cold pass (and warm with --passes both).
With py-spy (every thread, sampled from outside) it writes a flame graph and
prints the top functions by own and by total samples; with pyinstrument (the
trio thread only, from inside) it writes pyinstrument's text report.
Output goes to .bench/profiles/.
"""

import argparse
import collections
import contextlib
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import dataset as data
from bench import harness, procs
from bench.mounts import Mount, MountSpec, Tools, drop_caches
from bench.servers import BACKENDS
from bench.workloads import WORKLOADS, Limits

REPO_DIR = Path(__file__).resolve().parent.parent
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")


# For A/B profiles: the mount as it was before s3_get.py, every GET through boto3.
BOTO3_GETS = ("import sys, objmount.backends.s3 as s3; s3.lean_get_supported = lambda url: False; "
              "from objmount.cli import main; sys.argv[0] = 'objmount'; main()")


class Boto3GetsMount(Mount):
    """objmount with the lean GET path disabled (its S3 reads use boto3's get_object)."""

    def command(self) -> list[str]:
        cmd = super().command()
        assert cmd[1:3] == ["-m", "objmount"]
        return [cmd[0], "-c", BOTO3_GETS, *cmd[3:]]


class PyinstrumentMount(Mount):
    """objmount run under `python -m pyinstrument`, which reports when the mount exits."""

    report_path = Path()

    def command(self) -> list[str]:
        cmd = super().command()
        assert cmd[1:3] == ["-m", "objmount"]
        return [cmd[0], "-m", "pyinstrument", "-r", "text", "-o", str(self.report_path),
                "--show-all", "-m", *cmd[2:]]


def summarize(collapsed: Path, top: int) -> str:
    """Top functions by own samples and by samples anywhere on the stack (py-spy raw format)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        count = int(match["count"])
        frames = match["stack"].split(";")[1:]  # the first frame is the thread's name
        samples += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples", "", "own samples:"]
    lines += [f"  {100 * c / samples:5.1f}%  {f}" for f, c in own.most_common(top)]
    lines += ["", "total samples (function anywhere on the stack):"]
    lines += [f"  {100 * c / samples:5.1f}%  {f}" for f, c in total.most_common(top)]
    return "\n".join(lines)


# The mount's counters (its root's stats xattr) a pass line shows the change of.
PASS_COUNTERS = ("reads", "bytes_read", "gets", "memory_hits", "disk_hits", "fast_disk_hits",
                 "cache_misses", "blocks_stored")


def counters_since(before: dict[str, int], after: dict[str, int]) -> str:
    """`name +N` for each counter that changed, and the mean FUSE read size."""
    changed = {name: after.get(name, 0) - before.get(name, 0) for name in PASS_COUNTERS
               if after.get(name, 0) != before.get(name, 0)}
    words = [f"{name} +{count:,}" for name, count in changed.items()]
    if changed.get("reads"):
        words.append(f"mean read {changed.get('bytes_read', 0) / changed['reads'] / 1024:.0f} KiB")
    return ", ".join(words) or "no change"


def _attach(cmd: list[str]) -> subprocess.Popen:
    """Start a profiler that attaches to the mount (it writes its output on SIGINT)."""
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # it attaches
    return spy


def start_py_spy(mount: Mount, stem: Path, args: argparse.Namespace) -> subprocess.Popen:
    """Attach py-spy to the mount process; it writes collapsed stacks when interrupted."""
    assert mount.proc is not None
    return _attach(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
         str(mount.proc.pid), "--rate", str(args.rate), "--nolineno", "--format", "raw",
         # Only the thread holding the GIL: Python's CPU, not threads waiting
         # on sockets or queues (py-spy counts some of those as busy).
         *(["--gil"] if not args.all_threads else []),
         "-o", str(stem.with_suffix(".collapsed"))])


# What `--profiler syscalls` counts (perf tracepoints: no ptrace, so no slowdown that
# would change the threads' contention for the GIL, as strace's does).
SYSCALL_EVENTS = ("raw_syscalls:sys_enter", "sched:sched_switch", *(
    f"syscalls:sys_enter_{name}" for name in (
        "futex", "epoll_wait", "epoll_ctl", "read", "writev", "recvfrom", "sendto", "openat",
        "newfstatat", "pread64", "preadv2", "pwrite64", "rename", "close", "fcntl",
        "getrandom", "fdatasync")))


def start_system_profiler(mount: Mount, stem: Path, profiler: str) -> subprocess.Popen:
    """Attach `perf record` (CPU by native symbol, the kernel's included) or `perf stat`
    (syscalls and context switches by count) to every thread of the mount; both stop on
    SIGINT."""
    assert mount.proc is not None
    pid = str(mount.proc.pid)
    if profiler == "perf":
        cmd = ["perf", "record", "-F", "499", "-g", "-p", pid, "-o", str(stem.with_suffix(".perf"))]
    else:
        cmd = ["perf", "stat", "-e", ",".join(SYSCALL_EVENTS), "-p", pid,
               "-o", str(stem.with_suffix(".txt"))]
    return _attach(cmd)


def perf_summary(stem: Path, top: int) -> str:
    """perf's own samples by shared object, then by shared object and symbol."""
    def report(sort: str) -> list[str]:
        out = subprocess.run(["perf", "report", "-i", str(stem.with_suffix(".perf")), "--stdio",
                              "--no-children", "-g", "none", "--sort", sort, "--percent-limit",
                              "0.5"], capture_output=True, text=True, check=False).stdout
        return [line for line in out.splitlines() if line.strip() and not line.startswith("#")]
    return "\n".join(["by shared object:", *report("dso")[:top], "", "by symbol:",
                      *report("dso,sym")[:top]])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--workload", default="small", choices=[w.key for w in WORKLOADS])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--backend", choices=BACKENDS, default="s3")
    parser.add_argument("--profiler", choices=["py-spy", "pyinstrument", "perf", "syscalls"],
                        help="py-spy: Python stacks; pyinstrument: the trio thread from inside; "
                             "perf: native and kernel CPU by symbol; syscalls: syscall counts",
                        default="py-spy")
    parser.add_argument("--mount-args", default="", help="extra `objmount mount` flags")
    parser.add_argument("--passes", choices=["cold", "both", "warm"], default="cold",
                        help="which passes to profile; 'warm' runs the cold pass unprofiled")
    parser.add_argument("--boto3-gets", action="store_true",
                        help="disable objmount's lean GET path (A/B against boto3 get_object)")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--all-threads", action="store_true",
                        help="py-spy: sample every thread, not just the GIL holder")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    work_dir = REPO_DIR / ".bench"
    out_dir = work_dir / "profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    variant = "boto3gets-" if args.boto3_gets else ""
    stem = out_dir / f"{args.workload}-{variant}{args.profiler}-{time.strftime('%H%M%S')}"
    tools = Tools.find()
    workload = next(w for w in WORKLOADS if w.key == args.workload)
    with contextlib.ExitStack() as cleanup:
        run_dir = harness.prepare_run(work_dir, "run")
        dataset = data.prepare(work_dir, data.Layout.from_scale(args.scale))
        site = harness.start_site(args.backend, tools, work_dir, run_dir, dataset, data.BUCKET,
                                  args.rtt_ms, cleanup)
        ctx = harness.Context(tools, dataset, dataset.pread_plan(), None, 900, [workload])
        spec = MountSpec("objmount", "objmount", tuple(shlex.split(args.mount_args)))
        mount_cls = PyinstrumentMount if args.profiler == "pyinstrument" else (
            Boto3GetsMount if args.boto3_gets else Mount)
        mount = harness.new_mount(spec, tools, site, "profile", mount_cls)
        if isinstance(mount, PyinstrumentMount):
            mount.report_path = stem.with_suffix(".txt")
        cleanup.callback(mount.stop)
        mount.start()
        profiled = {"cold": ("cold",), "both": ("cold", "warm"), "warm": ("warm",)}[args.passes]
        spy: subprocess.Popen | None = None
        for pass_name in ("cold",) if args.passes == "cold" else ("cold", "warm"):
            if spy is None and args.profiler != "pyinstrument" and pass_name in profiled:
                spy = (start_py_spy(mount, stem, args) if args.profiler == "py-spy"
                       else start_system_profiler(mount, stem, args.profiler))
                cleanup.callback(spy.kill)
            if pass_name != "cold":
                print(f"  cache writes settled in {mount.settle_writes():.1f} s", flush=True)
            drop_caches()
            before = procs.cpu_times(mount.proc.pid) if mount.proc else None
            counted = mount.objmount_stats()
            outcome = harness.run_pass(workload, mount.path, ctx, mount.stop, Limits())
            after = procs.cpu_times(mount.proc.pid) if mount.proc else None
            cpu = (f"; mount CPU user {after[0] - before[0]:.2f} s, system "
                   f"{after[1] - before[1]:.2f} s" if before and after else "")
            print(f"{workload.key} {pass_name}: {workload.figure(outcome):,.1f} {workload.unit} "
                  f"({outcome.errors} bad) in {outcome.seconds:.1f}s{cpu}", flush=True)
            print(f"  read path: {counters_since(counted, mount.objmount_stats())}",
                  flush=True)
        stats = mount.stats()
        buffered = mount.objmount_stats().get("buffer_peak_bytes", 0) / (1 << 20)
        print(f"mount: peak RSS {(stats.peak_rss_kib or 0) / 1024:.0f} MB, "
              f"CPU {stats.cpu_s or 0:.1f}s, peak memory held for reads {buffered:.0f} MiB",
              flush=True)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        mount.stop()
    summary = stem.with_suffix(".txt")
    where = str(summary)
    if args.profiler == "py-spy":
        collapsed = stem.with_suffix(".collapsed")
        text = summarize(collapsed, args.top)
        where = f"{collapsed} (flame graph: any collapsed-stack viewer, e.g. speedscope)"
    elif args.profiler == "perf":
        text = perf_summary(stem, args.top)
    else:  # pyinstrument's report, perf stat's counts: the tool wrote the summary file
        text = summary.read_text() if args.profiler == "syscalls" else ""
    if args.profiler in ("py-spy", "perf"):
        summary.write_text(text + "\n")
    if text:
        print(text)
    print(f"profile: {where}")


if __name__ == "__main__":
    main()
