"""Checks and actions on the mountpoint itself: fail fast before mounting, unmount after.

These run before any FUSE session exists, so their errors are one-line
MountpointErrors with the fix in them.

A dead mount (its FUSE daemon is gone: a crash, an OOM kill, SIGKILL; every
access fails with "Transport endpoint is not connected") is not in the way: it
is accepted by `check_mountpoint` and removed by `clear_dead_mount` (a lazy
unmount: processes still inside it keep their dead files) just before the new
mount, so its users see ENOTCONN only until then.
"""

import contextlib
import errno
import os
import re
import stat
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from objmount.errors import MountpointError

FUSE_CONF = Path("/etc/fuse.conf")
# How long a stat of a mounted mountpoint may take while telling a dead mount (which
# answers ENOTCONN at once, in the kernel) from a live one (which answers within
# milliseconds); a mount still silent after this is live but hung, and left alone.
PROBE_S = 2.0
_DEAD_ERRNOS = frozenset({errno.ENOTCONN, errno.ECONNABORTED})


def check_mountpoint(path: Path) -> Path:
    """Return the absolute mountpoint, or raise MountpointError saying why it cannot be used.

    A dead mount on it is accepted (see the module docstring); a live one is not.
    """
    path = path.absolute()
    # Before any stat: stat'ing a hung FUSE mount would hang us too.
    if is_mounted(path):
        if is_dead_mount(path):
            return path
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


def is_dead_mount(path: Path) -> bool:
    """True if listing the mount on `path` fails as a dead FUSE mount does (ENOTCONN).

    A listing, not a stat: the kernel answers a stat of the root from its attribute
    cache (--attr-timeout) without asking the dead daemon. The probe runs in a daemon
    thread, waited for PROBE_S: a hung mount is never dead.
    """
    found: list[int] = []

    def probe() -> None:
        try:
            with os.scandir(path) as entries:
                next(entries, None)
            found.append(0)
        except OSError as exc:
            found.append(exc.errno or 0)

    thread = threading.Thread(target=probe, name="objmount-probe", daemon=True)
    thread.start()
    thread.join(PROBE_S)
    return bool(found) and found[0] in _DEAD_ERRNOS


def clear_dead_mount(path: Path) -> bool:
    """Lazily unmount a dead mount on `path`; return True if there was one.

    Raises MountpointError if it cannot be unmounted (fusermount3's reason in it).
    """
    if not (is_mounted(path) and is_dead_mount(path)):
        return False
    result = unmount(path, lazy=True)
    if result.returncode != 0 and is_mounted(path):
        raise MountpointError(f"mountpoint {path} is a dead mount (its objmount process is "
                              f"gone) and cannot be unmounted: {result.stderr.strip()}")
    return True


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


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo: where it is mounted, and its propagation tags."""

    point: str
    # The optional fields without their peer group ids: "shared", "master", "unbindable"...
    tags: frozenset[str]

    @property
    def private(self) -> bool:
        """Neither shared nor a slave: mounts under it never reach other namespaces."""
        return not self.tags & {"shared", "master"}


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse /proc/self/mountinfo (proc(5)): field 5 is the mount point, then the mount
    options, then optional fields up to a lone "-"."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        optional = fields[6 : fields.index("-", 6)]
        entries.append(MountEntry(unescape_mount_field(fields[4]),
                                  frozenset(tag.partition(":")[0] for tag in optional)))
    return entries


def containing_mount(path: Path, entries: list[MountEntry]) -> MountEntry | None:
    """Return the mount `path` lies on: the deepest mount point above or at it (the last
    of several stacked on one point, as the kernel lists the top one last)."""
    target = str(path)
    best: MountEntry | None = None
    for entry in entries:
        inside = entry.point == "/" or target == entry.point or target.startswith(
            entry.point + "/")
        if inside and (best is None or len(entry.point) >= len(best.point)):
            best = entry
    return best


def propagation_warning(mountpoint: Path, mountinfo: str | None = None) -> str | None:
    """Return a warning if containers cannot bind `mountpoint` with rslave propagation.

    Docker refuses `bind-propagation=rslave` (as docker/docker-compose-jupyter.yaml
    binds the mount) when the source lies on a private mount. None if it is shared or
    a slave, or if /proc/self/mountinfo cannot be read.
    """
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
        except OSError:
            return None
    parent = containing_mount(mountpoint, parse_mountinfo(mountinfo))
    if parent is None or not parent.private:
        return None
    fix = ("mount --make-rshared /" if parent.point == "/" else
           f"mount --make-shared {parent.point}")
    return (f"{mountpoint} is on {parent.point}, a private mount: a Docker container binding it "
            "with bind-propagation=rslave fails with 'not a shared or slave mount'; fix: "
            f"sudo {fix}, or mount under a shared bind of a directory "
            "(sudo mount --bind DIR DIR && sudo mount --make-shared DIR)")


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
