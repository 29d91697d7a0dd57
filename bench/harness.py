"""The benchmark's harness: the environment (data, server, relay), passes, and rows.

`environment` brings up the data set, SeaweedFS and the latency relay under an
ExitStack (so they stop however the caller ends); `run_mount` runs the cold and
warm passes of every workload on fresh mounts of one configuration; the direct
and local rows are the limits. Each pass runs in a worker thread under a
timeout: a mount that hangs is killed, and the pass reports the timeout.
"""

import contextlib
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import dataset as data
from bench import direct, procs, report
from bench.mounts import Endpoint, Mount, MountSpec, Tools, drop_caches
from bench.relay import start_relay
from bench.servers import REGION, SeaweedS3
from bench.workloads import WORKLOADS, Limits, Outcome, Workload


@dataclass
class Context:
    """What every pass needs: the data, where mounts connect, and where they live."""

    tools: Tools
    dataset: data.Dataset
    plan: list[data.Pread]
    endpoint: Endpoint
    rclone_conf: Path
    s3fs_passwd: Path
    run_dir: Path
    budget_s: float | None  # time to start work in a mount's pass (None: whole passes)
    pass_timeout_s: float  # a pass still running then has hung: its mount is killed
    workloads: list[Workload]
    repeat: int = 1  # (mount, cold, warm) cycles per workload; cells keep the median


def run_pass(workload: Workload, root: Path, ctx: Context, on_timeout: Callable[[], None],
             limits: Limits) -> Outcome:
    """Run one pass in a worker thread; past the timeout, call `on_timeout` (kill the mount)."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["outcome"] = workload.run(root, ctx.dataset, ctx.plan, limits)
        except Exception as exc:
            box["error"] = exc

    worker = threading.Thread(target=work, daemon=True, name=f"pass-{workload.key}")
    worker.start()
    worker.join(ctx.pass_timeout_s)
    if worker.is_alive():
        on_timeout()
        worker.join(60)
        return Outcome(ctx.pass_timeout_s, 0, 0, 1, note=f"timeout {ctx.pass_timeout_s:.0f} s")
    if "error" in box:
        return Outcome(0, 0, 0, 1, note=f"failed: {box['error']!r}"[:60])
    outcome = box["outcome"]
    assert isinstance(outcome, Outcome)
    return outcome


def _progress(name: str, workload: Workload, passes: dict[str, Outcome], extra: str = "") -> None:
    shown = []
    for pass_name, o in passes.items():
        figure = o.note or f"{workload.figure(o):,.1f} {workload.unit}"
        errors = f" ({o.errors} errors)" if o.errors and not o.note else ""
        part = f" ({o.items} of {o.planned}: time budget)" if o.partial else ""
        shown.append(f"{pass_name} {figure}{errors} in {o.seconds:.1f}s{part}")
    print(f"  {name:<18} {workload.key:<5} " + ", ".join(shown) + extra, flush=True)


def run_mount(spec: MountSpec, ctx: Context) -> report.Row:
    """Every selected workload on fresh mounts of `spec`: cold pass, then warm pass.

    With ctx.repeat > 1 each (mount, cold, warm) cycle runs that many times and
    a cell keeps the median figure: one run on a shared 2-core machine is noisy.
    """
    row = report.Row(spec.name, spec.tool, note=spec.note)
    for workload in ctx.workloads:
        runs: dict[str, list[Outcome]] = {p: [] for p in report.PASSES}
        for _ in range(ctx.repeat):
            passes = _cycle(spec, workload, ctx, row)
            for pass_name, outcome in passes.items():
                runs[pass_name].append(outcome)
        for pass_name, outcomes in runs.items():
            if outcomes:
                ranked = sorted(outcomes, key=lambda o: (not o.note and not o.errors,
                                                         workload.figure(o)))
                row.set(workload.key, pass_name, ranked[len(ranked) // 2])
    return row


def _cycle(spec: MountSpec, workload: Workload, ctx: Context,
           row: report.Row) -> dict[str, Outcome]:
    """Mount `spec` fresh with an empty cache, run the cold then the warm pass, unmount."""
    slug = spec.name.replace(" ", "-")
    mount = Mount(spec, ctx.tools, ctx.rclone_conf, ctx.s3fs_passwd, ctx.endpoint,
                  ctx.run_dir / "mnt", ctx.run_dir / "cache" / slug, ctx.run_dir / f"{slug}.log")
    passes: dict[str, Outcome] = {}
    try:
        mount.start()
        for pass_name in report.PASSES:
            drop_caches()
            cold = passes.get("cold")
            # The warm pass re-reads what the cold pass read, no more.
            limits = Limits(ctx.budget_s, cold.items if cold and cold.partial else None)
            passes[pass_name] = run_pass(workload, mount.path, ctx, mount.stop, limits)
            if passes[pass_name].note:
                break
        stats = mount.stats()
        if stats.peak_rss_kib:
            row.peak_rss_kib = max(row.peak_rss_kib or 0, stats.peak_rss_kib)
        row.cpu_s += (stats.cpu_s or 0.0) / ctx.repeat
        rss = f", peak RSS {stats.peak_rss_kib / 1024:.0f} MB" if stats.peak_rss_kib else ""
        _progress(spec.name, workload, passes, rss)
    except (RuntimeError, OSError) as exc:
        passes.setdefault("cold", Outcome(0, 0, 0, 1, note="mount failed"))
        print(f"  {spec.name:<18} {workload.key:<5} mount failed: {exc} "
              f"(log: {mount.log_path})", flush=True)
    finally:
        mount.stop()
        shutil.rmtree(mount.cache_dir, ignore_errors=True)
    return passes


def run_local(ctx: Context) -> report.Row:
    """The warm limit: the workloads on the local copy, after drop_caches."""
    row = report.Row("local disk", "local", note="the same files on this machine's disk")
    for workload in ctx.workloads:
        drop_caches()
        outcome = run_pass(workload, ctx.dataset.root, ctx, lambda: None, Limits())
        row.set(workload.key, "warm", outcome)
        _progress(row.name, workload, {"warm": outcome})
    return row


def run_direct(ctx: Context, server: SeaweedS3) -> list[report.Row]:
    """The cold limits: boto3 with threads, and rclone copy --transfers 16, through the relay."""
    keys = {w.key for w in ctx.workloads}
    client = server.client(f"http://127.0.0.1:{ctx.endpoint.port}", pool=32)
    boto = report.Row("direct boto3", "direct", note="16 threads, 8 MiB ranged GETs")
    runs: list[tuple[report.Row, str, Callable[[], Outcome]]] = [
        (boto, "seq1", lambda: direct.boto3_shards(client, ctx.dataset, 1)),
        (boto, "seq4", lambda: direct.boto3_shards(client, ctx.dataset, 4)),
        (boto, "small", lambda: direct.boto3_smalls(client, ctx.dataset)),
        (boto, "rand", lambda: direct.boto3_preads(client, ctx.plan)),
        (boto, "ls", lambda: direct.boto3_list(client, ctx.dataset)),
    ]
    copy = report.Row("direct rclone copy", "direct", note="rclone copy --transfers 16 to tmpfs")
    log = ctx.run_dir / "rclone-copy.log"
    runs += [
        (copy, "seq4", lambda: direct.rclone_copy(ctx.tools.rclone, ctx.rclone_conf, ctx.dataset,
                                                  "shards", ctx.dataset.shards, log)),
        (copy, "small", lambda: direct.rclone_copy(ctx.tools.rclone, ctx.rclone_conf,
                                                   ctx.dataset, "images", ctx.dataset.smalls,
                                                   log)),
    ]
    by_key = {w.key: w for w in WORKLOADS}
    for row, key, fn in runs:
        if key not in keys:
            continue
        drop_caches()
        outcome = fn()
        row.set(key, "cold", outcome)
        _progress(row.name, by_key[key], {"cold": outcome})
    return [boto, copy]


@dataclass
class Environment:
    """A running server and relay with the data set uploaded, and the run's directory."""

    dataset: data.Dataset
    server: SeaweedS3
    relay_port: int
    run_dir: Path
    uploaded: bool


def environment(tools: Tools, work_dir: Path, layout: data.Layout, rtt_ms: float,
                cleanup: contextlib.ExitStack) -> Environment:
    """Generate (or reuse) the data, start SeaweedFS and upload once, start the relay.

    Everything started is registered on `cleanup`. `work_dir/run` is emptied
    first: it holds this run's logs, configs, mountpoint and cache dirs.
    """
    dataset = data.prepare(work_dir, layout)
    run_dir = work_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    cleanup.callback(shutil.rmtree, run_dir / "cache", ignore_errors=True)
    server = SeaweedS3(tools.weed, work_dir / f"weed-{dataset.root.name}", run_dir)
    cleanup.callback(server.stop)
    server.start()
    uploaded = data.ensure_uploaded(dataset, server.client(), server.data_dir)
    relay, relay_port = start_relay(server.port, rtt_ms, log_path=str(run_dir / "relay.log"))
    cleanup.callback(procs.stop, relay)
    return Environment(dataset, server, relay_port, run_dir, uploaded)


def context(tools: Tools, env: Environment, budget_s: float | None, timeout_s: float,
            workloads: list[Workload], repeat: int = 1) -> Context:
    """Write the mounts' configs (pointing at the relay) and return the passes' context."""
    endpoint = Endpoint(env.relay_port, env.server.access_key, env.server.secret_key, REGION)
    rclone_conf, s3fs_passwd = endpoint.write_configs(env.run_dir)
    return Context(tools, env.dataset, env.dataset.pread_plan(), endpoint, rclone_conf,
                   s3fs_passwd, env.run_dir, budget_s, timeout_s, workloads, repeat)
