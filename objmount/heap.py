"""glibc heap settings for the mount: freed block buffers go back to the OS.

Block buffers (1-16 MiB, allocated by GET threads, freed by the trio thread)
would otherwise stay in glibc's heap: its mmap threshold grows to the size of
the largest buffer freed (up to 32 MiB), after which blocks come from per-thread
arenas that keep freed memory. The process then holds far more than
--max-buffer-memory. A fixed threshold serves every allocation of 1 MiB or more
with mmap, unmapped as soon as it is freed, so RSS follows the budget.
"""

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt parameter numbers, from glibc's malloc.h
_M_ARENA_MAX = -8
# Not lower: Python's own small objects and listing pages stay on the heap, where
# allocation is cheaper than an mmap and a page fault per allocation.
MMAP_THRESHOLD_BYTES = 1 << 20
# Each thread that allocates gets an arena of its own (up to 8 per core), and each
# keeps what its buffers left behind; the GIL serialises allocation anyway.
ARENAS = 2


def release_large_buffers() -> bool:
    """Set glibc's mmap threshold; return False (and change nothing) without glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
        ok = bool(libc.mallopt(_M_ARENA_MAX, ARENAS)) and ok
    except (OSError, AttributeError):
        ok = False
    if not ok:
        log.debug("mallopt unavailable: large buffers stay in the heap when freed")
    return ok
