"""Checks and actions on the mountpoint itself: fail fast before mounting, unmount after.

These run before any FUSE session exists, so their errors are one-line
MountpointErrors with the fix in them.
"""

import contextlib
import re
import stat
import subprocess
from pathlib import Path

from objmount.errors import MountpointError

FUSE_CONF = Path("/etc/fuse.conf")


def check_mountpoint(path: Path) -> Path:
    """Return the absolute mountpoint, or raise MountpointError saying why it cannot be used."""
    path = path.absolute()
    # Before any stat: stat'ing a hung FUSE mount would hang us too.
    if is_mounted(path):
        raise MountpointError(
            f"mountpoint {path} is already a mount point (unmount it first: objmount umount {path})"
        )
    try:
        info = path.stat()
    except FileNotFoundError:
        raise MountpointError(
            f"mountpoint {path} does not exist (create it: mkdir -p {path})"
        ) from None
    except OSError as exc:
        raise MountpointError(f"mountpoint {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise MountpointError(f"mountpoint {path} is not a directory")
    return path


def is_mounted(path: Path) -> bool:
    """Return True if `path` is a mount point (read from /proc, never stat'ing the mount)."""
    return mount_device(path) is not None


def mount_device(path: Path) -> str | None:
    """Return the `major:minor` of the filesystem mounted on `path`, or None.

    Reads /proc/self/mountinfo: a stat of a FUSE mount would be a request to the
    filesystem itself, which may not be serving yet (or ever, if it hung).
    """
    target = str(path.absolute())
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if len(fields) > 4 and unescape_mount_field(fields[4]) == target:
                return fields[2]
    return None


def unescape_mount_field(field: str) -> str:
    """Undo the octal escapes of /proc mount tables (\\040 for a space, \\134 for '\\'...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def check_allow_other(euid: int, fuse_conf: Path = FUSE_CONF) -> None:
    """Raise MountpointError if a non-root user may not use --allow-other here."""
    if euid == 0:
        return
    try:
        lines = fuse_conf.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    if any(line.split("#", 1)[0].strip() == "user_allow_other" for line in lines):
        return
    raise MountpointError(
        f"--allow-other needs 'user_allow_other' in {fuse_conf}; enable it with: "
        f"echo user_allow_other | sudo tee -a {fuse_conf}"
    )


def unmount(path: Path, lazy: bool = False) -> subprocess.CompletedProcess[str]:
    """Run fusermount3 -u (-z when lazy); returns the completed process, never raises on failure."""
    args = ["fusermount3", "-u", *(["-z"] if lazy else []), str(path)]
    return subprocess.run(args, capture_output=True, text=True, check=False)


def raise_readahead(path: Path, kib: int) -> int | None:
    """Set the mount's kernel readahead, so reads reach us in chunks of up to `kib` KiB.

    Returns the value now in force, or None when it cannot be read (no sysfs).
    Writing needs root; otherwise the kernel's default stays.
    """
    device = mount_device(path)
    if device is None:
        return None
    bdi = Path(f"/sys/class/bdi/{device}/read_ahead_kb")
    with contextlib.suppress(OSError):
        bdi.write_text(str(kib))
    try:
        return int(bdi.read_text())
    except (OSError, ValueError):
        return None
