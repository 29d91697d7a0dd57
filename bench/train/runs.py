"""One training run: a fresh mount (or local disk), one DataLoader, epochs 1..N, each measured.

Before every epoch the page cache is dropped; around it a Meter reads the
mount process's CPU, the relay's request counters and objmount's own counters
(user.objmount.stats), so each epoch gets images/s, GETs, hit rate, bytes
fetched ahead and never used, and CPU per file. The mount's cache starts empty
and is kept across the run's epochs: epoch 1 is cold, later ones show what the
cache (whole, or half the data set) holds.
"""

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench import harness
from bench.mounts import MountSpec, Tools, drop_caches
from bench.usage import Meter, Usage

MIB = 1 << 20
# rclone evicts from its VFS cache only at each poll (default 1m): a short one keeps
# it near --vfs-cache-max-size within an epoch of tens of seconds.
RCLONE_CACHE_POLL = "2s"


@dataclass(frozen=True)
class Config:
    """A row of the training table: a mount configuration (None: local disk), sampler wrapped?"""

    name: str
    spec: MountSpec | None
    prefetch: bool = False


@dataclass(frozen=True)
class CacheSize:
    """`full` (the data set fits, default limits) or `half` (both tools capped at half of it)."""

    name: str
    max_bytes: int | None  # None: each tool's default (objmount 10 GiB, rclone unlimited)

    def flags(self, tool: str) -> tuple[str, ...]:
        if self.max_bytes is None:
            return ()
        size = f"{self.max_bytes // MIB}M"
        if tool == "objmount":
            return ("--cache-max-size", size)
        return ("--vfs-cache-max-size", size, "--vfs-cache-poll-interval", RCLONE_CACHE_POLL)


@dataclass
class Epoch:
    """One measured epoch of one run."""

    backend: str
    cache: str
    workers: int
    config: str
    tool: str  # objmount | rclone | local
    epoch: int
    repeat: int
    images: int
    bytes: int
    bad: int
    seconds: float
    note: str = ""
    usage: Usage = field(default_factory=Usage)

    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 and not self.note else 0.0


def unused_counter(stats: dict[str, int]) -> str | None:
    """objmount's counter of bytes fetched ahead and never read, once it reports one.

    By convention the first counter whose name has "unused" and ends in "bytes"
    (e.g. prefetch_unused_bytes); None while objmount has none.
    """
    return next((k for k in stats if "unused" in k and k.endswith("bytes")), None)


def run(config: Config, cache: CacheSize, workers: int, epochs: int, repeat: int, seed: int,
        tools: Tools, site: harness.Site | None, local_root: Path,
        digests: dict[str, str]) -> list[Epoch]:
    """Epochs 1..`epochs` of one configuration on a fresh mount of `site` (or local disk)."""
    from bench.train.loader import Trainer  # torch: imported only when training runs

    backend = site.backend if site else ""
    mount = None
    if config.spec is not None and site is not None:
        spec = replace(config.spec, args=config.spec.args + cache.flags(config.spec.tool))
        mount = harness.new_mount(spec, tools, site, f"{cache.name}-w{workers}-r{repeat}")
    tool = config.spec.tool if config.spec else "local"
    base = dict(backend=backend, cache=cache.name, workers=workers, config=config.name,
                tool=tool, repeat=repeat)
    out: list[Epoch] = []
    trainer = None
    try:
        if mount is not None:
            mount.start()
        root = (mount.path if mount else local_root) / "images"
        trainer = Trainer(root, digests, workers, seed, config.prefetch)
        gauge = harness.meter(mount, site) if site else None
        for number in range(1, epochs + 1):
            drop_caches()
            before = gauge.read() if gauge else None
            result = trainer.epoch()
            usage = Meter.between(before, gauge.read()) if gauge and before else Usage()
            out.append(Epoch(**base, epoch=number, images=result.images, bytes=result.bytes,
                             bad=result.bad, seconds=result.seconds, note=result.note,
                             usage=usage))
            _progress(out[-1])
            if result.note:
                break
    except (RuntimeError, OSError) as exc:
        note = f"failed: {exc}"[:80]
        print(f"  {config.name}: {note}" + (f" (log: {mount.log_path})" if mount else ""),
              flush=True)
        out.append(Epoch(**base, epoch=len(out) + 1, images=0, bytes=0, bad=1, seconds=0,
                         note=note))
    finally:
        if trainer is not None:
            trainer.close()
        if mount is not None:
            mount.stop()
            shutil.rmtree(mount.cache_dir, ignore_errors=True)
    return out


def _progress(e: Epoch) -> None:
    u = e.usage
    gets = u.stats.get("gets") if e.tool == "objmount" else u.relay.get("get")
    cpu = u.cpu_ms_per(e.images)
    print(f"  {e.backend or 'local':<5} {e.cache:<4} w{e.workers} {e.config:<26} epoch {e.epoch}: "
          + (e.note or f"{e.images_per_s():,.0f} images/s ({e.images} in {e.seconds:.1f} s)")
          + (f", {gets} GETs" if gets is not None else "")
          + (f", CPU {cpu:.2f} ms/file" if cpu is not None else "")
          + (f", {e.bad} bad" if e.bad else ""), flush=True)
