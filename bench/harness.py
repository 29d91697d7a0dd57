"""The benchmarks' harness: sites (a store, its data, its relay), measured passes, and rows.

`start_site` brings up one store (SeaweedFS or Swift + Keystone) with a data
set uploaded and its own latency relay, under an ExitStack (so everything
stops however the caller ends); `measured` runs one pass in a worker thread
under a timeout (a mount that hangs is killed) and records what the mount cost
(CPU, requests at the relay, objmount's counters). `run_mount` runs the passes
of every workload on fresh mounts of one configuration; the direct and local
rows are the limits. `bench.train` and later harnesses reuse the sites, mounts
and meters; only their workloads differ.
"""

import argparse
import contextlib
import os
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import dataset as data
from bench import direct, procs, report
from bench.mounts import (
    Mount,
    MountSpec,
    MountTarget,
    Tools,
    drop_caches,
    force_unmount,
    stale_mounts,
)
from bench.relay import RelayProcess, start_relay
from bench.servers import BACKENDS, REGION, Store, make_store
from bench.usage import Meter
from bench.workloads import WORKLOADS, Limits, Outcome, Workload


def prepare_run(work_dir: Path, run_name: str) -> Path:
    """Unmount what an earlier run left under `work_dir`; return an empty `work_dir/run_name`.

    Warns when not root: drop_caches then fails and cold/warm mean little.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    for path in stale_mounts(work_dir):
        print(f"bench: unmounting {path}, left by an earlier run", flush=True)
        force_unmount(path)
    if os.geteuid() != 0:
        print("bench: not root: drop_caches will fail, warm/cold figures include page cache",
              file=sys.stderr)
    run_dir = work_dir / run_name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    return run_dir


def backends_arg(text: str) -> list[str]:
    """Parse --backends: a comma-separated subset of s3,swift, in that order."""
    chosen = [b.strip() for b in text.split(",") if b.strip()]
    unknown = set(chosen) - set(BACKENDS)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"one or more of {','.join(BACKENDS)}")
    return [b for b in BACKENDS if b in chosen]


def begin(work_dir: Path, run_name: str) -> tuple[Path, Path, Tools]:
    """A harness's first steps: SIGTERM/SIGHUP exit cleanly, a fresh run dir, the tools.

    Returns the absolute work dir, the empty run dir and the tools found.
    """
    procs.exit_on_signals()
    work_dir = work_dir.absolute()
    run_dir = prepare_run(work_dir, run_name)
    return work_dir, run_dir, Tools.find()


@dataclass
class Site:
    """One running store holding the data set, behind its own latency relay."""

    backend: str
    store: Store
    relay: RelayProcess
    target: MountTarget
    run_dir: Path
    uploaded: bool


def start_site(backend: str, tools: Tools, work_dir: Path, run_dir: Path, dataset: data.Dataset,
               container: str, rtt_ms: float, cleanup: contextlib.ExitStack) -> Site:
    """Start `backend`'s store, upload `dataset` into `container` once, start its relay.

    Everything started is registered on `cleanup`. SeaweedFS keeps its data in
    `work_dir` (one directory per data set), so a later run uploads nothing;
    Swift starts afresh in `run_dir/BACKEND` and is uploaded to every run.
    """
    site_dir = run_dir / backend
    site_dir.mkdir(parents=True, exist_ok=True)
    store = make_store(backend, tools.weed, work_dir / f"weed-{dataset.root.name}", site_dir)
    cleanup.callback(store.stop)
    print(f"bench: starting {backend} ({type(store).__name__})", flush=True)
    store.start()
    uploaded = data.ensure_uploaded(dataset, store.objects(container), store.data_dir)
    return behind_relay(backend, store, container, site_dir, rtt_ms, uploaded, cleanup)


def relayed(site: Site, rtt_ms: float, cleanup: contextlib.ExitStack, label: str) -> Site:
    """The same store behind a second relay (another RTT), with configs in a dir of its own."""
    return behind_relay(site.backend, site.store, site.target.container,
                         site.run_dir / label, rtt_ms, False, cleanup)


def behind_relay(backend: str, store: Store, container: str, site_dir: Path, rtt_ms: float,
                 uploaded: bool, cleanup: contextlib.ExitStack) -> Site:
    """A Site: `store` (running, `container` filled) behind a new relay at `rtt_ms`."""
    site_dir.mkdir(parents=True, exist_ok=True)
    relay = start_relay(store.port, rtt_ms, log_path=str(site_dir / "relay.log"))
    cleanup.callback(relay.stop)
    s3_keys = None
    if backend == "s3":
        s3_keys = (f"http://127.0.0.1:{relay.port}", REGION, store.access_key, store.secret_key)
    target = MountTarget.write(site_dir, store.rclone_section(relay.port), container, s3_keys)
    return Site(backend, store, relay, target, site_dir, uploaded)


def new_mount(spec: MountSpec, tools: Tools, site: Site, label: str = "",
              mount_cls: type[Mount] = Mount) -> Mount:
    """A Mount of `spec` on `site`, with its own cache directory and log under the site's dir."""
    slug = (spec.name + (f"-{label}" if label else "")).replace(" ", "-")
    return mount_cls(spec, tools, site.target, site.run_dir / "mnt",
                     site.run_dir / "cache" / slug, site.run_dir / f"{slug}.log")


def meter(mount: Mount | None, site: Site) -> Meter:
    """A meter of `mount`'s CPU and counters (none for local disk) and of `site`'s relay."""
    if mount is None:
        return Meter(relay=site.relay)
    return Meter(mount.pid, site.relay, mount.objmount_stats)


@dataclass
class Context:
    """What every pass needs: the data, the tools, the time limits, the workloads."""

    tools: Tools
    dataset: data.Dataset
    plan: list[data.Pread]
    budget_s: float | None  # time to start work in a mount's pass (None: whole passes)
    pass_timeout_s: float  # a pass still running then has hung: its mount is killed
    workloads: list[Workload]
    repeat: int = 1  # (mount, passes) cycles per workload; cells keep the median


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


def measured(workload: Workload, root: Path, ctx: Context, on_timeout: Callable[[], None],
             limits: Limits, gauge: Meter) -> Outcome:
    """`run_pass`, with what the mount spent on it (CPU, relay requests, counters) attached."""
    before = gauge.read()
    outcome = run_pass(workload, root, ctx, on_timeout, limits)
    with contextlib.suppress(OSError, RuntimeError):
        outcome.usage = Meter.between(before, gauge.read())
    return outcome


def progress(name: str, workload: Workload, passes: dict[str, Outcome], extra: str = "") -> None:
    shown = []
    for pass_name, o in passes.items():
        figure = o.note or f"{workload.figure(o):,.1f} {workload.unit}"
        errors = f" ({o.errors} errors)" if o.errors and not o.note else ""
        part = f" ({o.items} of {o.planned}: time budget)" if o.partial else ""
        cpu = o.usage.cpu_ms_per(o.items) if o.usage else None
        cost = f", CPU {cpu:.2f} ms/item" if cpu is not None else ""
        gets = f", {o.usage.relay.get('get', 0)} GETs at the relay" if o.usage and o.usage.relay \
            else ""
        shown.append(f"{pass_name} {figure}{errors} in {o.seconds:.1f}s{part}{cost}{gets}")
    print(f"  {name:<18} {workload.key:<5} " + ", ".join(shown) + extra, flush=True)


def run_mount(spec: MountSpec, ctx: Context, site: Site) -> report.Row:
    """Every selected workload on fresh mounts of `spec`: its passes, cold first.

    With ctx.repeat > 1 each (mount, passes) cycle runs that many times and a
    cell keeps the median figure: one run on a shared 2-core machine is noisy.
    """
    row = report.Row(spec.name, spec.tool, backend=site.backend, note=spec.note)
    for workload in ctx.workloads:
        runs: dict[str, list[Outcome]] = {p: [] for p in workload.passes}
        for _ in range(ctx.repeat):
            for pass_name, outcome in _cycle(spec, workload, ctx, site, row).items():
                runs[pass_name].append(outcome)
        for pass_name, outcomes in runs.items():
            if outcomes:
                ranked = sorted(outcomes, key=lambda o: (not o.note and not o.errors,
                                                         workload.figure(o)))
                row.set(workload.key, pass_name, ranked[len(ranked) // 2])
    return row


def _cycle(spec: MountSpec, workload: Workload, ctx: Context, site: Site,
           row: report.Row) -> dict[str, Outcome]:
    """Mount `spec` fresh with an empty cache, run the workload's passes in order, unmount."""
    mount = new_mount(spec, ctx.tools, site)
    passes: dict[str, Outcome] = {}
    try:
        mount.start()
        gauge = meter(mount, site)
        for pass_name in workload.passes:
            if pass_name != "cold":
                mount.settle_writes()  # warm: the cache as full as it gets
            if pass_name != "hot":
                drop_caches()
            cold = passes.get("cold")
            # Later passes re-read what the cold pass read, no more.
            limits = Limits(ctx.budget_s, cold.items if cold and cold.partial else None)
            passes[pass_name] = measured(workload, mount.path, ctx, mount.stop, limits, gauge)
            if passes[pass_name].note:
                break
        stats = mount.stats()
        if stats.peak_rss_kib:
            row.peak_rss_kib = max(row.peak_rss_kib or 0, stats.peak_rss_kib)
        row.cpu_s += (stats.cpu_s or 0.0) / ctx.repeat
        rss = f", peak RSS {stats.peak_rss_kib / 1024:.0f} MB" if stats.peak_rss_kib else ""
        progress(spec.name, workload, passes, rss)
    except (RuntimeError, OSError) as exc:
        passes.setdefault("cold", Outcome(0, 0, 0, 1, note="mount failed"))
        print(f"  {spec.name:<18} {workload.key:<5} mount failed: {exc} "
              f"(log: {mount.log_path})", flush=True)
    finally:
        mount.stop()
        shutil.rmtree(mount.cache_dir, ignore_errors=True)
    return passes


def run_local(ctx: Context) -> report.Row:
    """The warm limit: the workloads on the local copy, after drop_caches (hot: without)."""
    row = report.Row("local disk", "local", note="the same files on this machine's disk")
    for workload in ctx.workloads:
        passes: dict[str, Outcome] = {}
        for pass_name in workload.passes:
            if pass_name == "cold":
                continue
            if pass_name != "hot":
                drop_caches()
            passes[pass_name] = run_pass(workload, ctx.dataset.root, ctx, lambda: None, Limits())
            row.set(workload.key, pass_name, passes[pass_name])
        progress(row.name, workload, passes)
    return row


def run_direct(ctx: Context, site: Site) -> list[report.Row]:
    """The cold limits through the relay: the store's client with threads, and rclone copy."""
    keys = {w.key for w in ctx.workloads}
    objects = site.store.objects(site.target.container, site.relay.port)
    client_name = "boto3" if site.backend == "s3" else "swiftclient"
    threaded = report.Row(f"direct {client_name}", "direct", backend=site.backend,
                          note="16 threads, 8 MiB ranged GETs")
    runs: list[tuple[report.Row, str, Callable[[], Outcome]]] = [
        (threaded, "seq1", lambda: direct.threaded_shards(objects, ctx.dataset, 1)),
        (threaded, "seq4", lambda: direct.threaded_shards(objects, ctx.dataset, 4)),
        (threaded, "small", lambda: direct.threaded_smalls(objects, ctx.dataset)),
        (threaded, "rand", lambda: direct.threaded_preads(objects, ctx.plan)),
        (threaded, "ls", lambda: direct.listing(objects, ctx.dataset)),
    ]
    copy = report.Row("direct rclone copy", "direct", backend=site.backend,
                      note="rclone copy --transfers 16 to tmpfs")
    log = site.run_dir / "rclone-copy.log"
    for key, prefix, entries in (("seq4", "shards", ctx.dataset.shards),
                                 ("small", "images", ctx.dataset.smalls)):
        runs.append((copy, key, lambda p=prefix, e=entries: direct.rclone_copy(
            ctx.tools.rclone, site.target, ctx.dataset, p, e, log)))
    by_key = {w.key: w for w in WORKLOADS}
    for row, key, fn in runs:
        if key not in keys:
            continue
        drop_caches()
        outcome = fn()
        row.set(key, "cold", outcome)
        progress(row.name, by_key[key], {"cold": outcome})
    return [threaded, copy]
