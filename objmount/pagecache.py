"""The kernel's page cache across versions: which open may keep it, bypass it, or drop it.

The kernel keeps one page cache per inode, shared by every handle open on it:
pages one handle filled are served to all. objmount pins each handle to the
version it was opened on (readpath_base.py), so when an object is replaced while a
handle is open, two versions of one inode are open at once. PageCacheVersions
decides, per open and per release, what keeps their bytes apart:

- an open keeps the cached pages (keep_cache) only if they may hold its own
  version and no handle of another version is open (one could fill pages
  meanwhile);
- while a handle of another version is open, a new handle bypasses the page
  cache (direct_io): it never reads pages the other version filled, and never
  fills pages the other reads. So at any time, the handles that use the page
  cache are all of one version: the `cached` one;
- when the last handle of the cached version closes and that version is no
  longer the object's current one, the caller must drop the inode's pages and
  attributes (pyfuse3.invalidate_inode): no page of an old version outlives its
  readers.

Versions are ObjectInfo.version strings (the ETag, else size and mtime). This
module is FUSE-free and does no I/O: fs.py sends the invalidations.

The one gap: the kernel lets a direct_io file be mmap'ed MAP_PRIVATE, through
the page cache (fuse_file_mmap -> generic_file_mmap); such a mapping of a new
handle fills pages the old handle then reads (seen on Linux 6.18). Closing it
needs one inode per version, not per key.
"""

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class OpenMode:
    """How the kernel is to treat one open: keep its cached pages, or bypass them."""

    keep_cache: bool
    direct_io: bool


@dataclass(slots=True)
class _Inode:
    open: Counter[str] = field(default_factory=Counter)  # handles open, per version
    # Version whose bytes the kernel's pages may hold; None: no pages worth keeping.
    cached: str | None = None
    # Handles open per version that read through the page cache (not direct_io).
    caching: Counter[str] = field(default_factory=Counter)


class PageCacheVersions:
    """Per inode: the versions of the open handles, and the version the page cache may hold."""

    def __init__(self) -> None:
        self._inodes: dict[int, _Inode] = {}

    def opened(self, inode: int, version: str) -> OpenMode:
        """Record an open of `version`; return how the kernel must treat it."""
        state = self._inodes.setdefault(inode, _Inode())
        other_open = any(v != version for v in state.open)
        state.open[version] += 1
        if other_open:
            return OpenMode(keep_cache=False, direct_io=True)
        keep = state.cached == version
        state.cached = version
        state.caching[version] += 1
        return OpenMode(keep_cache=keep, direct_io=False)

    def released(self, inode: int, version: str, mode: OpenMode, current: str | None) -> bool:
        """Record the release of a handle opened as `mode`; `current` is the object's
        version now (None: no longer a file). Return True if the caller must invalidate
        the inode's pages and attributes."""
        state = self._inodes[inode]
        _decrement(state.open, version)
        invalidate = False
        if not mode.direct_io:
            _decrement(state.caching, version)
            if not state.caching[version] and state.cached == version and version != current:
                state.cached = None
                invalidate = True
        if not state.open and state.cached is None:
            del self._inodes[inode]
        return invalidate


def _decrement(counter: Counter[str], version: str) -> None:
    counter[version] -= 1
    if counter[version] <= 0:
        del counter[version]
