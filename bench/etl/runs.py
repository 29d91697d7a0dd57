"""One measured load: a tool copies a directory into a fresh bucket, then reruns as a no-op.

Each command runs as a child process (its own session, stopped if this
process ends), timed from before its start to its exit (interpreter or Go
start-up included) with its CPU seconds from wait4. After the load the bucket
must hold every file with its size and an ETag its bytes explain; after the
rerun its listing must be unchanged (no object rewritten).
"""

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs
from bench.etl import verify
from bench.servers import REMOTE
from objmount.etl.load import LocalFile

# The Food-11 tutorial's flags, given to both tools.
TRANSFERS = 32
CHECKERS = 16


@dataclass(frozen=True)
class Tool:
    """How to run one loader: `command(dir, bucket)` is its argv."""

    name: str
    argv: tuple[str, ...]  # before DIR and REMOTE:BUCKET; "{run}" becomes bucket-phase
    flags: tuple[str, ...]  # after them

    def command(self, directory: Path, bucket: str, phase: str) -> list[str]:
        argv = [a.replace("{run}", f"{bucket}-{phase}") for a in self.argv]
        return [*argv, str(directory), f"{REMOTE}:{bucket}", *self.flags]


def tools(rclone: Path, config: Path, transfers: int, checkers: int, log_dir: Path,
          objmount_flags: tuple[str, ...] = (), rclone_flags: tuple[str, ...] = (),
          objmount_wrapper: tuple[str, ...] = ()) -> list[Tool]:
    """objmount etl load and rclone copy with the same parallelism, defaults otherwise.

    rclone's S3 uploads of files above --s3-upload-cutoff (200 MiB) are multipart
    in --s3-chunk-size parts (5 MiB), --multi-thread-streams (4, as the tutorial
    passes) at once; objmount's above --segment-size (64 MiB), 4 at once.
    `objmount_wrapper` goes before objmount's argv (a profiler).
    """
    common = ("--config", str(config), "--transfers", str(transfers),
              "--checkers", str(checkers))
    return [
        Tool("objmount", (*objmount_wrapper, sys.executable, "-m", "objmount", "etl", "load"),
             (*common, *objmount_flags)),
        Tool("rclone", (str(rclone), "copy"),
             (*common, "--multi-thread-streams", "4", *rclone_flags,
              "--log-level", "NOTICE", "--log-file", str(log_dir / "rclone.log"))),
    ]


@dataclass
class Timing:
    """Wall and CPU (user + system) seconds of one command, and its exit status."""

    wall_s: float
    cpu_s: float
    exit_code: int


def run_timed(argv: list[str], log_path: Path) -> Timing:
    """Run `argv` to its end (output to `log_path`); kill it if this process is interrupted."""
    started = time.perf_counter()
    proc = procs.spawn(argv, log_path)
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        procs.stop(proc)
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return Timing(time.perf_counter() - started, usage.ru_utime + usage.ru_stime,
                  proc.returncode)


@dataclass
class Measure:
    """One tool on one data set, once: the load, its no-op rerun, what was wrong."""

    tool: str
    data: str
    files: int
    bytes: int
    load: Timing
    rerun: Timing
    problems: list[str] = field(default_factory=list)

    def files_per_s(self) -> float:
        return self.files / self.load.wall_s

    def mb_per_s(self) -> float:
        return self.bytes / self.load.wall_s / 1e6


def measure(tool: Tool, data: str, directory: Path, files: list[LocalFile], bucket: str,
            client, digests: verify.Digests, log_dir: Path) -> Measure:
    """Load `directory` into the new `bucket` with `tool`, check it, rerun, check again."""
    log = log_dir / f"{tool.name}-{bucket}.log"
    verify.read_all(files)
    load = run_timed(tool.command(directory, bucket, "load"), log)
    before = verify.listing(client, bucket)
    wrong = verify.problems(before, files, digests)
    verify.read_all(files)
    rerun = run_timed(tool.command(directory, bucket, "rerun"), log)
    after = verify.listing(client, bucket)
    wrong += [f"rerun rewrote {key}" for key in sorted(before) if after.get(key) != before[key]]
    wrong += [f"{what} exited {t.exit_code} (see {log})"
              for what, t in (("load", load), ("rerun", rerun)) if t.exit_code]
    return Measure(tool.name, data, len(files), sum(f.size for f in files), load, rerun, wrong)
