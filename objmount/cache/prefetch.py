"""Read-ahead for one open file: detect sequential reads, grow a window, fetch ahead.

A Prefetcher sits between a file's reads and a BlockSource (two callables:
fetch a whole block, read a range of one). It never talks to the network or the
disk itself, so it is tested with a fake source.

- Sequential reads (each starting near where the last ended; two in a row) open
  a window that doubles per read, from one block up to `max_window_bytes`
  (--read-ahead); every block overlapping [read end, read end + window) is
  fetched whole, in parallel, and held until the reader has passed it. The
  first window is one block because a block is fetched whole anyway: smaller
  first windows only delayed the second GET by a read or two.
- A read elsewhere closes the window and drops what was held: random reads
  fetch only the blocks they touch and trigger no read-ahead.
- A small object (one block) is fetched whole when the file is opened, so its
  one GET overlaps the open-to-read gap.
- Held blocks are charged to the global MemoryBudget before they are fetched;
  when it has no room the window stops where the room ends (windows shrink
  under pressure), and the read itself falls back to a ranged read that needs
  no buffer: reads never fail for lack of memory.
"""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from objmount.backends.base import BackendError
from objmount.backends.deadline import DeadlineExceeded
from objmount.cache.memory import MemoryBudget
from objmount.readpath_base import ReadBytes

log = logging.getLogger(__name__)

MiB = 1 << 20
# How far from the previous read's end a read may start and still count as
# sequential: the kernel's readahead sends 1 MiB reads that several pyfuse3 tasks
# serve at once, so they may arrive slightly out of order.
BACKWARD_SLACK_BYTES = 2 * MiB
FORWARD_SLACK_BYTES = 1 * MiB


class BlockSource(Protocol):
    """Where a Prefetcher gets bytes: blocks by index within one object."""

    async def fetch_block(self, index: int) -> bytes | bytearray:
        """Return the whole block `index` (the same bytes to every concurrent caller)."""
        ...

    async def read_block(self, index: int, start: int, end: int) -> ReadBytes:
        """Return bytes [start, end) within block `index`, without holding the whole block."""
        ...


Spawn = Callable[[Callable[[], Awaitable[None]]], None]


@dataclass(frozen=True)
class PrefetchSettings:
    block_size_bytes: int
    max_window_bytes: int


@dataclass(eq=False)
class _Slot:
    """One block held for the reader: charged to the budget from request to release."""

    index: int
    nbytes: int
    done: trio.Event
    data: bytes | bytearray | None = None
    error: Exception | None = None
    released: bool = False


class Prefetcher:
    """Reads of one open object through a BlockSource, with adaptive read-ahead."""

    def __init__(
        self,
        size_bytes: int,
        source: BlockSource,
        budget: MemoryBudget,
        spawn: Spawn,
        settings: PrefetchSettings,
        on_consumed: Callable[[int, bytes | bytearray], None] | None = None,
    ) -> None:
        self.size_bytes = size_bytes
        self.source = source
        self.budget = budget
        self.spawn = spawn
        self.block_size = settings.block_size_bytes
        self.max_window_bytes = settings.max_window_bytes
        self.initial_window_bytes = min(settings.block_size_bytes, settings.max_window_bytes)
        self.window_bytes = 0
        self.blocks_requested = 0
        self._on_consumed = on_consumed
        self._next_offset: int | None = None
        self._streak = 0  # sequential reads in a row
        self._slots: dict[int, _Slot] = {}
        self._closed = False

    @property
    def block_count(self) -> int:
        return -(-self.size_bytes // self.block_size)

    def block_bytes(self, index: int) -> int:
        return min(self.block_size, self.size_bytes - index * self.block_size)

    def held_blocks(self) -> list[int]:
        return sorted(self._slots)

    def start_whole(self) -> None:
        """Fetch a one-block object now (at open), if the budget has room."""
        if 0 < self.size_bytes <= self.block_size:
            self._hold(0)

    async def read(self, offset: int, size: int) -> ReadBytes:
        """Return up to `size` bytes at `offset` (fewer only at the end of the object).

        Raises the store's error of a failed read-ahead at once (the runner retried it);
        after any other failure (a deadline of another read included), a ranged read
        tries once more, and raises what the source raises.
        """
        end = min(offset + size, self.size_bytes)
        if end <= offset:
            return b""
        bs = self.block_size
        first, last = offset // bs, (end - 1) // bs
        if self._sequential(offset, end):
            for index in range(first, last + 1):
                if index not in self._slots:
                    self._hold(index)
            self._read_ahead(end)
        elif self._streak == 0:
            self._release(lambda i: not first <= i <= last)
        parts = []
        for index in range(first, last + 1):
            lo = max(offset, index * bs) - index * bs
            hi = min(end, (index + 1) * bs) - index * bs
            parts.append(await self._read_in_block(index, lo, hi))
        # Blocks the reader has read to their end are done with.
        self._release(lambda i: (i + 1) * bs <= end)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """Drop every held block (fetches in flight finish, then give their memory back)."""
        self._closed = True
        self._release(lambda _: True)

    def _sequential(self, offset: int, end: int) -> bool:
        """Update the window for a read of [offset, end); return True if read-ahead is on.

        A read is sequential if it starts near where the reads so far ended (or at 0
        for the first). The window opens on the second sequential read in a row, so
        a random read that happens to land near the previous one opens nothing.
        """
        previous = self._next_offset
        if previous is None:
            sequential = offset == 0
        else:
            reach = max(FORWARD_SLACK_BYTES, self.window_bytes)
            sequential = previous - BACKWARD_SLACK_BYTES <= offset <= previous + reach
        if not sequential:
            self._streak = 0
            self.window_bytes = 0
            self._next_offset = end
            return False
        self._streak += 1
        self._next_offset = end if previous is None else max(previous, end)
        if self._streak < 2:
            return False
        if self.window_bytes == 0:
            self.window_bytes = self.initial_window_bytes
        else:
            self.window_bytes = min(2 * self.window_bytes, self.max_window_bytes)
        return True

    def _read_ahead(self, end: int) -> None:
        target = min(self.size_bytes, end + self.window_bytes)
        if target <= end:
            return
        bs = self.block_size
        for index in range(end // bs, (target - 1) // bs + 1):
            if index not in self._slots and self._hold(index) is None:
                # No room in the budget: the window ends where the room did.
                self.window_bytes = max(0, index * bs - end)
                return

    def _hold(self, index: int) -> _Slot | None:
        """Start fetching block `index` into a slot, if the budget has room for it."""
        nbytes = self.block_bytes(index)
        if self._closed or not self.budget.try_take(nbytes):
            return None
        slot = _Slot(index, nbytes, trio.Event())
        self._slots[index] = slot
        self.blocks_requested += 1

        async def fill() -> None:
            try:
                slot.data = await self.source.fetch_block(index)
            except Exception as exc:  # handed to the reader that needs it
                slot.error = exc
            finally:
                slot.done.set()
                if slot.released:
                    self.budget.give(slot.nbytes)

        self.spawn(fill)
        return slot

    async def _read_in_block(self, index: int, lo: int, hi: int) -> ReadBytes:
        slot = self._slots.get(index)
        if slot is not None:
            await slot.done.wait()
            if slot.data is not None:
                if (lo, hi) == (0, len(slot.data)):
                    return slot.data
                return memoryview(slot.data)[lo:hi]
            # The read-ahead failed: drop it. The store's error is final (the runner
            # retried it already); a deadline was the one of the read that started
            # it, so a ranged read tries again within this read's own.
            if self._slots.get(index) is slot:
                self._release(lambda i: i == index)
            if isinstance(slot.error, BackendError) \
                    and not isinstance(slot.error, DeadlineExceeded):
                raise slot.error
        return await self.source.read_block(index, lo, hi)

    def _release(self, which: Callable[[int], bool]) -> None:
        for index in [i for i in self._slots if which(i)]:
            slot = self._slots.pop(index)
            slot.released = True
            if slot.done.is_set():
                self.budget.give(slot.nbytes)
                if slot.data is not None and self._on_consumed is not None:
                    self._on_consumed(index, slot.data)
