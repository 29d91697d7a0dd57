"""Which blocks the disk cache keeps: LRU, and a stable resident set for epochs larger than it.

A training job reads every file once per epoch, in a new random order each
time. When an epoch reads more than --cache-max-size holds, LRU evicts exactly
what the next epoch needs: with a cache half the data set's size it hits about
15% of the files of an epoch. Keeping a fixed subset resident instead (and
serving the rest from memory, unwritten) hits cache/data set of them, the best
any policy can do for a permutation (CoorDL's MinIO cache, NoPFS).

The rule (ResidentSetPolicy, behind blocks.EvictionPolicy):
- LRU by default: every fetched block is admitted, the store evicts the least
  recently used blocks of the index;
- it switches to keeping the resident set ("holding") when
  * reads cycle over more than the cache holds: of the last DETECT_MISSES
    misses, at least ENTER_GHOST_SHARE were of blocks the store evicted before
    (ghosts); or
  * an order (orderahead.py) announces an epoch larger than the cache
    (`expect_reads`), known at once;
- while holding, a missed block is written only while the cache has room (until
  the store evicts for the first time); after that, blocks are not written, so
  no resident is evicted by a one-time read. Every PROBE_EVERY refusals one
  block is admitted, to notice room that was freed;
- it goes back to LRU when the data changes: of the last EXIT_MISSES misses,
  fewer than EXIT_SEEN_SHARE were of blocks fetched before (new data, which LRU
  takes in), and no order asks for holding; or when an order announces an
  epoch that fits.

Ghosts and blocks fetched before are told by compact filters (SeenFilter: two
generations of Bloom filters of FILTER_BYTES each, allocated on first use),
never sets of a million keys; a false positive (about 2%) only makes a new
block look like an old one.

Called by the store under its lock, from disk threads; `expect_reads` and the
properties from the trio thread: the policy has a lock of its own.
"""

import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable

# Misses looked at to detect cycling, and the share of ghosts that means it: a cycle
# over more than the cache shows ~100% ghosts once the cache is full; reading new data
# shows none, and a hot set that fits is hit, not missed.
DETECT_MISSES = 64
ENTER_GHOST_SHARE = 0.5
# Misses looked at to notice new data while holding, and the share below which it is.
EXIT_MISSES = 256
EXIT_SEEN_SHARE = 0.2
# While holding and full, one refused block in this many is admitted (it evicts one
# resident if there still is no room): how freed room is noticed.
PROBE_EVERY = 1024
# Each generation of the filter of fetched blocks: 1 MiB of bits, 4 hashes, 1M keys
# (2.4% false positives when full); two generations remember 1-2M blocks.
FILTER_BYTES = 1 << 20
FILTER_HASHES = 4
FILTER_KEYS = 1 << 20

LRU, HOLDING = "lru", "holding"


class SeenFilter:
    """Approximate membership of the keys added lately (no false negatives for the last
    `keys_per_generation` keys added; ~2% false positives when full). Its memory is
    allocated with the first key."""

    def __init__(self, nbytes: int = FILTER_BYTES, keys_per_generation: int = FILTER_KEYS,
                 hashes: int = FILTER_HASHES) -> None:
        self._nbytes = nbytes
        self._bits = nbytes * 8
        self._hashes = hashes
        self._per_generation = keys_per_generation
        self._current: bytearray | None = None
        self._previous: bytearray | None = None
        self._added = 0

    def _positions(self, key: Hashable) -> list[int]:
        h = hash(key) & 0xFFFFFFFFFFFFFFFF
        h1, h2 = h & 0xFFFFFFFF, (h >> 32) | 1
        return [(h1 + i * h2) % self._bits for i in range(self._hashes)]

    def __contains__(self, key: Hashable) -> bool:
        if self._current is None:
            return False
        positions = self._positions(key)
        return any(all(bits[p >> 3] & (1 << (p & 7)) for p in positions)
                   for bits in (self._current, self._previous) if bits is not None)

    def add(self, key: Hashable) -> None:
        if self._current is None or self._added >= self._per_generation:
            self._previous, self._current = self._current, bytearray(self._nbytes)
            self._added = 0
        for p in self._positions(key):
            self._current[p >> 3] |= 1 << (p & 7)
        self._added += 1


class _Share:
    """The share of True among the last `size` values."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: deque[bool] = deque(maxlen=size)
        self._true = 0

    def add(self, value: bool) -> None:
        if len(self._values) == self.size:
            self._true -= self._values[0]
        self._values.append(value)
        self._true += value

    def share(self) -> float | None:
        """None until `size` values were added."""
        return self._true / self.size if len(self._values) == self.size else None


class ResidentSetPolicy:
    """LRU, or the stable resident set when an epoch reads more than the cache holds."""

    def __init__(self, capacity_bytes: int,
                 on_change: Callable[[str, str], None] | None = None) -> None:
        """`capacity_bytes`: what the cache holds (--cache-max-size). `on_change(mode, why)`
        is told of every switch (called under the store's lock: it must not block)."""
        self.capacity_bytes = capacity_bytes
        self.on_change = on_change
        self.mode = LRU
        self.reason = "default"
        self.full = False  # the store evicted since holding began: admit nothing more
        self.admitted = 0
        self.refused = 0
        self.switches = 0
        self._ghosts = SeenFilter()  # blocks the store removed
        self._seen = SeenFilter()  # blocks missed (fetched) by this mount
        self._ghost_share = _Share(DETECT_MISSES)
        self._seen_share = _Share(EXIT_MISSES)
        self._order_bytes: int | None = None
        self._refusals_since_probe = 0
        self._lock = threading.Lock()

    @property
    def holding(self) -> bool:
        """True while the resident set is kept and full (misses are not written)."""
        return self.mode == HOLDING and self.full

    def expect_reads(self, nbytes: int | None) -> None:
        """An order says the epoch reads `nbytes` (None: no order any more)."""
        with self._lock:
            self._order_bytes = nbytes
            if nbytes is None:
                return
            if nbytes > self.capacity_bytes and self.mode == LRU:
                self._switch(HOLDING, f"an order reads {nbytes >> 20} MiB, more than the "
                             f"cache's {self.capacity_bytes >> 20} MiB")
            elif nbytes <= self.capacity_bytes and self.mode == HOLDING:
                self._switch(LRU, f"an order reads {nbytes >> 20} MiB: it fits")

    # EvictionPolicy (blocks.py).

    def admit(self, key: Hashable, size: int) -> bool:
        with self._lock:
            ghost = key in self._ghosts
            self._ghost_share.add(ghost)
            self._seen_share.add(ghost or key in self._seen)
            self._seen.add(key)
            if self.mode == LRU:
                ghosts = self._ghost_share.share()
                if ghosts is None or ghosts < ENTER_GHOST_SHARE:
                    self.admitted += 1
                    return True
                self._switch(HOLDING, f"{ghosts:.0%} of the last {DETECT_MISSES} misses "
                             "were of blocks evicted before")
                self.full = True  # evictions happened: the cache is full
            else:
                seen = self._seen_share.share()
                if (seen is not None and seen < EXIT_SEEN_SHARE
                        and not self._order_wants_holding()):
                    self._switch(LRU, f"only {seen:.0%} of the last {EXIT_MISSES} misses "
                                 "were of blocks read before: new data")
                    self.admitted += 1
                    return True
            if not self.full:
                self.admitted += 1
                return True
            self._refusals_since_probe += 1
            if self._refusals_since_probe >= PROBE_EVERY:
                self._refusals_since_probe = 0
                self.admitted += 1
                return True
            self.refused += 1
            return False

    def inserted(self, key: Hashable) -> None:
        pass

    def accessed(self, key: Hashable) -> None:
        pass

    def removed(self, key: Hashable) -> None:
        """A block left the store (evicted, mostly): a ghost; while holding, the cache is
        full."""
        with self._lock:
            self._ghosts.add(key)
            if self.mode == HOLDING:
                self.full = True

    def discovered(self, keys_oldest_first: Iterable[Hashable]) -> None:
        pass

    def victim(self, skip: Callable[[Hashable], bool]) -> Hashable | None:
        return None  # the index's least recently used rows, of every process

    # Internals (under the lock).

    def _order_wants_holding(self) -> bool:
        return self._order_bytes is not None and self._order_bytes > self.capacity_bytes

    def _switch(self, mode: str, why: str) -> None:
        self.mode, self.reason = mode, why
        self.switches += 1
        self.full = False
        self._refusals_since_probe = 0
        if self.on_change is not None:
            self.on_change(mode, why)
