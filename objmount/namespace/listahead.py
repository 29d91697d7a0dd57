"""Directory list-ahead: list the subdirectories of a directory being looked into.

`ls -R`, `find` and os.walk descend a tree one directory at a time, so a cold
tree costs one LIST round trip per directory, in series. Once a directory is
used on demand (looked up in, opened), ListAhead lists its subdirectories in
the background, so that the descent finds them listed.

Invariants (the bounds, for trees of any size):
- one level: only demand use queues directories; a directory listed ahead
  queues nothing until it is itself used;
- at most `parallel` listings ahead in flight, one per worker task (they share
  the runner's limiter with demand requests, so keep it below --max-parallel);
- at most `window` directories listed ahead and not yet used, counting those
  in flight: a reader that stops descending stops the list-ahead (a listing
  ahead that expires unused, after --dir-cache-time, frees its room too);
- at most QUEUE_MAX directories waiting; the newest first (a depth-first
  descent wants the subdirectories of where it is now), the farthest dropped;
- never blocks the caller, and never fails it: a listing ahead that fails is
  forgotten (the demand listing retries it, and reports its error; any other
  exception is a bug, logged with its traceback).

FUSE-free and store-free: it is given the listing callable, so it is tested
with fakes. Used on the trio thread only.
"""

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import trio

from objmount import log as logs
from objmount.backends.base import BackendError

log = logging.getLogger(__name__)

# Waiting directories kept: far more than a window, and a few KiB of inode numbers.
QUEUE_MAX = 1024


class ListAhead:
    """List directories (by inode) in the background, within the bounds above."""

    def __init__(
        self,
        list_one: Callable[[int], Awaitable[bool]],
        is_listed: Callable[[int], bool],
        *,
        parallel: int,
        window: int,
    ) -> None:
        """`list_one(inode)` lists a directory, False if it gave up (nothing stored);
        `is_listed(inode)` says whether its listing is still fresh."""
        self.list_one = list_one
        self.is_listed = is_listed
        self.parallel = parallel
        self.window = window
        self._queue: deque[int] = deque(maxlen=QUEUE_MAX)
        self._in_flight: dict[int, bool] = {}  # inode -> used on demand meanwhile
        self._ahead: set[int] = set()  # listed ahead, not used since
        self._changed = trio.Event()  # set (and replaced) when there may be work

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run `parallel` listing workers until cancelled; until then, `want` only queues."""
        async with trio.open_nursery() as nursery:
            for _ in range(self.parallel):
                nursery.start_soon(self._worker)
            task_status.started()

    def want(self, inodes: Sequence[int]) -> None:
        """Queue directories to list ahead, before any queued earlier (in this order)."""
        self._queue.extendleft(reversed(inodes))
        self._wake()

    def used(self, inode: int) -> None:
        """Note a demand use of a directory: if it was listed ahead, that frees room."""
        if inode in self._in_flight:
            self._in_flight[inode] = True
        elif inode in self._ahead:
            self._ahead.discard(inode)
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _next(self) -> int | None:
        """Return the next directory to list, or None (nothing queued, or no room)."""
        self._ahead = {inode for inode in self._ahead if self.is_listed(inode)}  # expired: room
        while self._queue and len(self._in_flight) + len(self._ahead) < self.window:
            inode = self._queue.popleft()
            if inode not in self._in_flight and inode not in self._ahead \
                    and not self.is_listed(inode):
                return inode
        return None

    async def _worker(self) -> None:
        while True:
            inode = self._next()
            if inode is None:
                await self._changed.wait()
                continue
            self._in_flight[inode] = False
            listed = False
            try:
                listed = await self.list_one(inode)
            except BackendError as exc:  # the demand listing retries it, and reports the error
                log.debug("listing ahead of inode %d failed: %s", inode, exc)
            except Exception as exc:  # a bug: logged, but never ends the mount
                logs.once(log, logging.ERROR, f"listahead:{type(exc).__name__}",
                          "listing ahead failed: %r", exc, exc_info=True)
            finally:
                used = self._in_flight.pop(inode)
            if listed and not used:
                self._ahead.add(inode)
            else:
                self._wake()  # its room is free again
