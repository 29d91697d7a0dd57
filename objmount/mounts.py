"""The objmount mounts of this machine and what each says of itself (its root's xattrs).

Plain blocking code, standard library only: the cache commands, the control
channel's clients (`objmount prefetch`, `objmount stats`, objmount.torch) and
anything else that starts from a path use it.

Invariants:
- mounts are found in /proc/self/mountinfo (fstype fuse.objmount), never by
  stat'ing a path, which a hung mount would answer never;
- a mount's self-description (root xattr MOUNT_XATTR: where it caches, its
  control socket) is trusted only if the caller or root made the mount (its
  `user_id=` super option): another user's mount could name any cache
  directory or socket;
- an xattr is read in a thread with a deadline: a hung mount cannot hang the caller.
"""

import contextlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from objmount.mountpoint import unescape_mount_field

MOUNTINFO = Path("/proc/self/mountinfo")
STATS_XATTR = "user.objmount.stats"
MOUNT_XATTR = "user.objmount.mount"
XATTR_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ObjmountMount:
    """An objmount mount as /proc/self/mountinfo lists it."""

    mountpoint: str
    user_id: int | None  # the `user_id=` super option: who mounted it (None: not given)

    def trusted(self, euid: int | None = None) -> bool:
        """True if the caller (`euid`, default the process's) or root made this mount."""
        return self.user_id in (os.geteuid() if euid is None else euid, 0)


def objmount_mounts(mountinfo: Path = MOUNTINFO) -> list[ObjmountMount]:
    """Return every objmount mount (fstype fuse.objmount), with who mounted it."""
    found = []
    for line in mountinfo.read_text(encoding="utf-8").splitlines():
        fields, _, rest = line.partition(" - ")
        fstype, *others = rest.split(" ")
        if fstype != "fuse.objmount":
            continue
        options = others[1].split(",") if len(others) > 1 else []
        user_ids = [o.removeprefix("user_id=") for o in options if o.startswith("user_id=")]
        user_id = int(user_ids[0]) if len(user_ids) == 1 and user_ids[0].isdigit() else None
        found.append(ObjmountMount(unescape_mount_field(fields.split()[4]), user_id))
    return found


def innermost_mount(path: Path, mounts: list[ObjmountMount]) -> tuple[ObjmountMount, str] | None:
    """Return the innermost of `mounts` that `path` (made absolute, not resolved) is in, and
    `path` relative to it ("" for its root); None if it is in none."""
    resolved = path.absolute()
    by_path = {Path(m.mountpoint): m for m in mounts}
    inside = [m for m in by_path if resolved == m or m in resolved.parents]
    if not inside:
        return None
    mountpoint = max(inside, key=lambda m: len(m.parts))
    relative = resolved.relative_to(mountpoint).as_posix()
    return by_path[mountpoint], "" if relative == "." else relative


def root_xattr(mountpoint: str, name: str, timeout_s: float = XATTR_TIMEOUT_S) -> dict | None:
    """Return the JSON xattr `name` of a mount's root; None if unreadable or not answered
    within `timeout_s` (the reading thread is then left behind)."""
    result: list[dict] = []

    def read() -> None:
        with contextlib.suppress(OSError, ValueError):
            value = json.loads(os.getxattr(mountpoint, name))
            if isinstance(value, dict):
                result.append(value)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return result[0] if result else None
