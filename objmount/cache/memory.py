"""Block bytes in memory: one global budget, the hot tier and the buffer of blocks fetched ahead.

Everything a mount keeps in memory for reading (read-ahead blocks of every open
file, the hot tier, blocks fetched ahead of an order's readers, blocks fetched
for a read in flight, blocks waiting to be written to disk) is charged to ONE
MemoryBudget, whatever the number of open files: a thousand open files share
the budget, they do not multiply it.

Invariants:
- optional memory (read-ahead, the hot tier) is taken with `try_take`, which
  fails rather than exceed the budget; the hot tier gives its memory back first
  when read-ahead asks for it;
- memory a read cannot do without (the block it is reading right now, a block
  fetched and waiting to be written) is taken with `take`, which always
  succeeds: reads never fail for lack of buffer. Such overdraft is bounded by the
  GETs in flight times the block size, plus the writer's queue, which new GETs
  wait for once it holds half the budget (cached_readpath.py); while it lasts no
  read-ahead is granted.

Used on the trio thread only: no locks.
"""

from collections import OrderedDict
from collections.abc import Callable, Hashable


class MemoryBudget:
    """Bytes of block buffers in use, against one limit for the whole process."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self.peak_bytes = 0
        self._reclaimers: list[Callable[[int], int]] = []

    def add_reclaimer(self, reclaim: Callable[[int], int]) -> None:
        """Register `reclaim(n)`: frees up to n bytes of optional memory, returns bytes freed."""
        self._reclaimers.append(reclaim)

    def try_take(self, nbytes: int) -> bool:
        """Charge `nbytes` if they fit (after reclaiming optional memory); else charge nothing."""
        if not self._make_room(nbytes):
            return False
        self._charge(nbytes)
        return True

    def take(self, nbytes: int) -> None:
        """Charge `nbytes` even over the limit (memory a read in flight cannot do without)."""
        self._make_room(nbytes)
        self._charge(nbytes)

    def give(self, nbytes: int) -> None:
        """Return `nbytes` charged before."""
        self.used_bytes -= nbytes
        assert self.used_bytes >= 0, "budget given back more than was taken"

    @property
    def free_bytes(self) -> int:
        return max(0, self.max_bytes - self.used_bytes)

    def _make_room(self, nbytes: int) -> bool:
        for reclaim in self._reclaimers:
            missing = self.used_bytes + nbytes - self.max_bytes
            if missing <= 0:
                break
            reclaim(missing)
        return self.used_bytes + nbytes <= self.max_bytes

    def _charge(self, nbytes: int) -> None:
        self.used_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)


class HotTier:
    """Recently used whole blocks in memory, least recently used evicted first.

    Bounded by its own `max_bytes` (--cache-mem) and by the shared budget: it
    gives memory back to read-ahead on demand, and keeps a block only if the
    budget has room for it.
    """

    def __init__(self, budget: MemoryBudget, max_bytes: int) -> None:
        self.budget = budget
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self._blocks: OrderedDict[Hashable, bytes] = OrderedDict()
        budget.add_reclaimer(self.reclaim)

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._blocks

    def get(self, key: Hashable) -> bytes | None:
        data = self._blocks.get(key)
        if data is not None:
            self._blocks.move_to_end(key)
        return data

    def put(self, key: Hashable, data: bytes) -> bool:
        """Keep `data` as block `key` if it fits; return True if kept."""
        size = len(data)
        if size > self.max_bytes or size == 0:
            return False
        self.discard(key)
        self._evict(self.used_bytes + size - self.max_bytes)
        if not self.budget.try_take(size):
            return False
        self._blocks[key] = data
        self.used_bytes += size
        return True

    def discard(self, key: Hashable) -> None:
        data = self._blocks.pop(key, None)
        if data is not None:
            self._release(len(data))

    def reclaim(self, nbytes: int) -> int:
        """Evict least recently used blocks until `nbytes` are freed (or none is left)."""
        return self._evict(nbytes)

    def _evict(self, nbytes: int) -> int:
        freed = 0
        while freed < nbytes and self._blocks:
            _, data = self._blocks.popitem(last=False)
            self._release(len(data))
            freed += len(data)
        return freed

    def _release(self, size: int) -> None:
        self.used_bytes -= size
        self.budget.give(size)


class AheadBuffer:
    """Blocks fetched ahead of the readers of an order (orderahead.py), until a read claims
    them or the order drops them; at most `max_bytes`, charged to the shared budget.

    A block's memory is reserved before its GET starts (`reserve`), so blocks in flight
    count too. What leaves the buffer unclaimed is counted as unused: the figure of
    wasted prefetch.
    """

    def __init__(self, budget: MemoryBudget, max_bytes: int) -> None:
        self.budget = budget
        self.max_bytes = max_bytes
        self.held_bytes = 0  # reserved or holding data
        self.used_files = self.used_bytes = 0
        self.unused_files = self.unused_bytes = 0
        self._blocks: dict[Hashable, bytes] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._blocks

    def __len__(self) -> int:
        return len(self._blocks)

    def reserve(self, nbytes: int) -> bool:
        """Charge `nbytes` for a block about to be fetched; False if there is no room."""
        if self.held_bytes + nbytes > self.max_bytes or not self.budget.try_take(nbytes):
            return False
        self.held_bytes += nbytes
        return True

    def unreserve(self, nbytes: int) -> None:
        """Give back a reservation that will not be filled (the fetch failed or was claimed)."""
        self.held_bytes -= nbytes
        self.budget.give(nbytes)

    def fill(self, key: Hashable, data: bytes) -> None:
        """Hold `data` as block `key`, under the reservation made for it."""
        if key in self._blocks:  # fetched twice (two orders): keep one
            self.unreserve(len(data))
            return
        self._blocks[key] = data

    def claim(self, key: Hashable) -> bytes | None:
        """Hand block `key` to a reader (it leaves the buffer), or None if not held."""
        data = self._blocks.pop(key, None)
        if data is not None:
            self.used_files += 1
            self.used_bytes += len(data)
            self.unreserve(len(data))
        return data

    def drop(self, key: Hashable, *, unused: bool = True) -> None:
        """Let block `key` go without a reader (counted as unused unless told otherwise)."""
        data = self._blocks.pop(key, None)
        if data is not None:
            if unused:
                self.unused_files += 1
                self.unused_bytes += len(data)
            self.unreserve(len(data))
