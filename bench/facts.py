"""Facts every benchmark report starts with: the machine, the tools' versions, the load.

Shared by `python -m bench`, `bench.etl` and `bench.train` (and later
`bench.scale` / `bench.soak`), so their reports describe a run the same way.
"""

import contextlib
import os
import platform
import subprocess
import time
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent


def version(args: list[str]) -> str:
    """The first line a program prints for its version, or "?"."""
    try:
        out = subprocess.run(args, capture_output=True, text=True, check=False, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def load_average() -> str:
    """The 1-minute load average: above ~2 on these 2 cores, other work skews the figures."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def now_utc() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def machine_facts(rclone: Path, s3fs: Path | None = None) -> dict[str, str]:
    """Machine, objmount's git revision, rclone's (and s3fs's) version, Python's."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    rev = version(["git", "-C", str(REPO_DIR), "describe", "--always", "--dirty"])
    facts = {
        "machine": f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, "
                   f"Linux {platform.release()}",
        "objmount": f"git {rev}",
        "rclone": version([str(rclone), "version"]),
    }
    if s3fs is not None:
        facts["s3fs"] = version([str(s3fs), "--version"])
    facts["python"] = platform.python_version()
    return facts
