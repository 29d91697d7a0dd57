"""The cache commands' work: stats, clear, verify, and the warm-up's progress bar.

Plain blocking code (no trio): these run as commands, not inside a mount. Hit
rates of running mounts come from the root xattr `user.objmount.stats` of every
fuse.objmount mount in /proc/self/mountinfo, and what `warm PATH` needs of the
mount PATH is in from its root xattr `user.objmount.mount`; both are read in a
thread with a deadline, so a hung mount cannot hang a command.

Invariants:
- a cache directory is used only if it is private to the user (private.py); the
  commands open the v3 index only (never an old layout's cache.db), remove only
  paths derived from validated rows or names of the layouts' exact shapes;
- `warm PATH` trusts the root xattr only of a mount the caller or root made (its
  mountinfo `user_id=`): another user's mount could name any cache directory.
"""

import os
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from objmount.cache import legacy
from objmount.cache.blocks import BLOCKS_DIR, BlockStore, check_cache_dir, remove_store_files
from objmount.cache.index import FILE_NAME
from objmount.errors import ObjmountError
from objmount.mounts import (
    MOUNT_XATTR,
    MOUNTINFO,
    STATS_XATTR,
    XATTR_TIMEOUT_S,
    innermost_mount,
    objmount_mounts,
    root_xattr,
)

if TYPE_CHECKING:  # warmup imports trio: loaded only when `warm` runs
    from objmount.cache.warmup import WarmProgress



def human_bytes(count: float) -> str:
    """Return `count` bytes as e.g. '512 B', '1.5 MiB', '10.0 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def checked_cache_dir(cache_dir: Path) -> Path | None:
    """Return `cache_dir` if it exists and is private to the user; None if it does not
    exist. Raises ConfigError (one line, with the fix) if it is not private."""
    if not os.path.lexists(cache_dir):
        return None
    return check_cache_dir(cache_dir)


def open_existing_store(cache_dir: Path) -> BlockStore | None:
    """Open the store in `cache_dir` for inspection; None if there is no v3 store there.

    Raises ConfigError if the directory is not private to the user.
    """
    directory = checked_cache_dir(cache_dir)
    if directory is None or not os.path.lexists(directory / FILE_NAME):
        return None
    return BlockStore(directory, max_size_bytes=1 << 62, writer=False)


@dataclass(frozen=True)
class MountStats:
    mountpoint: str
    stats: dict[str, int] | None  # None: the mount did not answer in time


def mount_stats(mountpoint: str, timeout_s: float = XATTR_TIMEOUT_S) -> MountStats:
    """Read one mount's ReadStats (None if it does not answer in time)."""
    return MountStats(mountpoint, root_xattr(mountpoint, STATS_XATTR, timeout_s))


@dataclass(frozen=True)
class MountedCache:
    """What a running mount says of itself (its root xattr user.objmount.mount)."""

    target: str  # REMOTE:CONTAINER[/PREFIX], as mounted
    config: str | None  # the rclone.conf it read remotes from, if any
    cache_dir: str
    block_size: int
    cache_max_size: int


def mount_containing(path: Path, mountinfo: Path = MOUNTINFO) -> tuple[MountedCache, str]:
    """Return the objmount mount `path` is in and the object prefix `path` stands for there.

    Raises ObjmountError if `path` is in no objmount mount with a block cache, or
    the mount does not answer within XATTR_TIMEOUT_S.
    """
    found = innermost_mount(path, objmount_mounts(mountinfo))
    if found is None:
        raise ObjmountError(f"{path} is neither REMOTE:CONTAINER[/PREFIX] nor a path inside "
                            "an objmount mount")
    mount, relative = found
    mountpoint, owner, euid = mount.mountpoint, mount.user_id, os.geteuid()
    if not mount.trusted(euid):
        raise ObjmountError(
            f"the objmount mount on {mountpoint} was mounted by "
            f"{'an unknown user' if owner is None else f'uid {owner}'}: `warm` trusts only "
            f"your own mounts (uid {euid}) and root's (warm REMOTE:CONTAINER[/PREFIX] "
            "--cache-dir DIR instead)")
    info = root_xattr(mountpoint, MOUNT_XATTR)
    if info is None or "cache_dir" not in info:
        raise ObjmountError(f"the objmount mount on {mountpoint} did not say where it caches "
                            "(not answering, or mounted with --cache-mode off)")
    try:
        mounted = MountedCache(
            target=str(info["target"]), config=info.get("config"),
            cache_dir=str(info["cache_dir"]), block_size=int(info["block_size"]),
            cache_max_size=int(info["cache_max_size"]),
        )
    except (KeyError, TypeError, ValueError):
        raise ObjmountError(f"the objmount mount on {mountpoint} describes itself in a form "
                            "this objmount does not know (another version?)") from None
    return mounted, relative


def hit_rate(stats: dict[str, int]) -> str:
    hits, misses = stats.get("cache_hits", 0), stats.get("cache_misses", 0)
    if hits + misses == 0:
        return "no block lookups yet"
    return f"{100 * hits / (hits + misses):.1f}% hits ({hits} hits, {misses} misses)"


def stats_report(cache_dir: Path) -> str:
    """Return what `objmount cache stats` prints. Raises ConfigError for a cache
    directory that is not private to the user."""
    lines = [f"cache directory: {cache_dir}"]
    store = open_existing_store(cache_dir)
    if store is None:
        lines.append("  empty (no cache here yet)")
    else:
        try:
            usage = store.usage()
            lines.append(f"  {store.block_count()} blocks, {human_bytes(store.stored_bytes())}; "
                         f"{human_bytes(store.disk_bytes())} with the index and directories "
                         "(what --cache-max-size counts)")
            for entry in usage:
                lines.append(f"  {entry.source}: {entry.blocks} blocks, "
                             f"{human_bytes(entry.stored_bytes)}")
        finally:
            store.close()
    old = legacy.find(cache_dir) if checked_cache_dir(cache_dir) is not None else None
    if old is not None:
        lines.append(f"  an older objmount's cache layout: {'' if old.complete else 'at least '}"
                     f"{old.files} files, {human_bytes(old.bytes)}; ignored, not counted in "
                     "--cache-max-size (`objmount cache clear` removes it)")
    mounts = [mount_stats(m.mountpoint) for m in objmount_mounts()]
    if mounts:
        lines.append("running mounts:")
    for mount in mounts:
        if mount.stats is None:
            lines.append(f"  {mount.mountpoint}: did not answer")
            continue
        s = mount.stats
        lines.append(f"  {mount.mountpoint}: {hit_rate(s)}, {s.get('gets', 0)} GETs "
                     f"({human_bytes(s.get('bytes_fetched', 0))}), "
                     f"{human_bytes(s.get('buffer_bytes', 0))} buffered")
    return "\n".join(lines)


@dataclass(frozen=True)
class Cleared:
    """What `objmount cache clear` removed."""

    blocks: int
    old_layout_files: int


def clear(cache_dir: Path, source: str | None) -> Cleared:
    """Remove every block (of `source` only, if given; else an old layout's files too).

    A damaged index is removed with every block file when clearing everything.
    Raises ConfigError for a directory that is not private, ObjmountError when asked to
    clear one source of a damaged index.
    """
    directory = checked_cache_dir(cache_dir)
    if directory is None:
        return Cleared(0, 0)
    old_files = legacy.remove(directory) if source is None else 0
    try:
        store = open_existing_store(directory)
    except sqlite3.DatabaseError as exc:
        if source is not None:
            raise ObjmountError(f"the cache index in {directory} is damaged ({exc}): "
                                "`objmount cache clear` (everything) removes it") from None
        return Cleared(remove_store_files(directory), old_files)
    if store is None:  # block files without an index (it was removed): all go
        orphans = source is None and os.path.lexists(directory / BLOCKS_DIR)
        return Cleared(remove_store_files(directory) if orphans else 0, old_files)
    try:
        return Cleared(store.clear(source), old_files)
    finally:
        store.close()


def verify(cache_dir: Path, out: TextIO = sys.stderr) -> tuple[int, int]:
    """Reconcile the store, re-check every block, drop the corrupt ones; return
    (checked, dropped). Raises ConfigError for a directory that is not private."""
    store = open_existing_store(cache_dir)
    if store is None:
        return 0, 0

    def report(key: object, good: bool) -> None:
        if not good:
            print(f"corrupt, dropped: {key}", file=out)

    try:
        return store.verify(report)
    finally:
        store.close()


class ProgressBar:
    """One line on a terminal, redrawn at most 5 times a second; on a pipe, a line every 10 s."""

    WIDTH = 24

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last = 0.0

    def update(self, p: "WarmProgress", final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < (0.2 if self.tty else 10.0):
            return
        self._last = now
        line = self.render(p)
        if self.tty:
            self.out.write("\r" + line + ("\n" if final else ""))
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def render(self, p: "WarmProgress") -> str:
        done = p.bytes_done / p.bytes_total if p.bytes_total else 1.0
        filled = int(self.WIDTH * done)
        rate = p.bytes_fetched / p.elapsed_s if p.elapsed_s > 0 else 0.0
        left = p.bytes_total - p.bytes_done
        eta = human_duration(left / rate) if rate > 0 else "--:--:--"
        return (f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] "
                f"{p.objects_done}/{p.objects_total} objects  "
                f"{human_bytes(p.bytes_done)}/{human_bytes(p.bytes_total)}  "
                f"{human_bytes(rate)}/s  ETA {eta}")


def warm_summary(p: "WarmProgress") -> str:
    """Return the lines printed after a warm-up."""
    rate = p.bytes_fetched / p.elapsed_s if p.elapsed_s > 0 else 0.0
    lines = [
        f"warmed {p.objects_total} objects ({human_bytes(p.bytes_total)}) in "
        f"{p.elapsed_s:.1f}s: fetched {human_bytes(p.bytes_fetched)} with {p.gets} GETs "
        f"({human_bytes(rate)}/s), {human_bytes(p.already_cached_bytes)} already cached",
    ]
    if p.skipped_objects:
        lines.append(f"skipped {p.skipped_objects} objects ({human_bytes(p.skipped_bytes)}): "
                     "beyond --max-size, they would evict what was just fetched")
    if p.failed_blocks:
        lines.append(f"{p.failed_blocks} blocks failed to download:")
        lines.extend(f"  {error}" for error in p.errors)
    if p.not_stored_blocks:
        lines.append(f"{p.not_stored_blocks} blocks could not be written to the cache "
                     "(disk full?)")
    return "\n".join(lines)
