"""Directory read-ahead: fetch the small files of a directory whose files are being read.

ImageFolder-style training opens every small file of a few directories once per
epoch, in random order. Read-ahead within a file cannot help (a small file is one
block, fetched at open), so each cold file costs a round trip to the store. Once
MISSES_TO_START files of one directory have been opened and not found in the
cache, DirectoryReadAhead fetches that directory's other small files into the
cache in the background, in listing order, so that later opens find them there.

Invariants:
- bounded per directory: at most `ahead_bytes` of files fetched ahead and not
  yet opened; the reader's opens make room for more. A directory of a million
  files opened twice costs `ahead_bytes`, not the directory;
- bounded in all: at most `parallel` fetches in flight for all directories
  together (the read path gives it half of --max-parallel: demand reads keep the
  rest), shared round-robin between directories;
- a file opened since the directory started is never fetched ahead, and only
  one-block files are (larger files have their own sequential read-ahead);
- a fetch that fails is forgotten (the reader's own open retries it, and reports
  the error);
- off while `paused()` says so (an order is published, or the cache keeps its
  resident set and would not write what is fetched): nothing new starts;
- a directory starts only while the working set fits in `cache_bytes`: the small
  files of every directory with a cold open in the last WORKING_SET_S. Opens come
  in random order across those directories, so a file fetched ahead waits about
  half an epoch for its open; in a cache smaller than what is read meanwhile it
  would be evicted first, and fetched twice. A directory joining the working set
  that makes it too large stops the directories already active too;
- FUSE-free and store-free: it is given a fetch callable and a directory's
  listing, so it is tested with fakes. Used on the trio thread only.
"""

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import trio

from objmount import log as logs
from objmount.backends.base import ObjectInfo

log = logging.getLogger(__name__)

# Two cold opens in one directory: one could be a user looking at one file; two
# distinct ones are the start of a scan (the same test as sequential read-ahead's
# "two sequential reads in a row").
MISSES_TO_START = 2
# How long a directory with a cold open counts in the working set (an epoch, or more).
WORKING_SET_S = 600.0

Spawn = Callable[[Callable[[], Awaitable[None]]], None]


def directory_of(key: str) -> str:
    """Return the directory prefix of an object key ('' for a key at the top)."""
    return key[: key.rfind("/") + 1]


@dataclass(eq=False)
class _Directory:
    """The read-ahead state of one directory."""

    prefix: str
    misses: int = 0
    active: bool = False
    queue: deque[ObjectInfo] = field(default_factory=deque)
    opened: set[str] = field(default_factory=set)  # since the directory started
    listed_bytes: int = 0  # its small files' bytes, as listed at its first cold open
    missed_at: float = float("-inf")
    ahead: dict[str, int] = field(default_factory=dict)  # fetched ahead, not opened: bytes
    ahead_bytes: int = 0


class DirectoryReadAhead:
    """Fetch ahead the small files of directories being read file by file."""

    def __init__(
        self,
        fetch: Callable[[ObjectInfo], Awaitable[None]],
        files_in: Callable[[str], Iterable[ObjectInfo]],
        spawn: Spawn,
        *,
        small_bytes: int,
        ahead_bytes: int,
        parallel: int,
        paused: Callable[[], bool] = lambda: False,
        cache_bytes: int | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.fetch = fetch
        self.files_in = files_in
        self.spawn = spawn
        self.small_bytes = small_bytes
        self.ahead_bytes = ahead_bytes
        self.parallel = max(1, parallel)
        self.paused = paused
        self.cache_bytes = cache_bytes
        self.clock = clock
        self.in_flight = 0
        self.fetches_started = 0
        self._dirs: dict[str, _Directory] = {}
        self._turns: deque[_Directory] = deque()  # active directories, round-robin

    @property
    def enabled(self) -> bool:
        return self.ahead_bytes > 0

    def opened(self, obj: ObjectInfo) -> None:
        """Note that the reader opened `obj`: it is not fetched ahead, and frees room."""
        if not self.enabled:
            return
        directory = self._dirs.get(directory_of(obj.key))
        if directory is None or not directory.active:
            return
        directory.opened.add(obj.key)
        nbytes = directory.ahead.pop(obj.key, None)
        if nbytes is not None:
            directory.ahead_bytes -= nbytes
            self._pump()

    def missed(self, obj: ObjectInfo) -> None:
        """Note that opening `obj` needed a GET; the MISSES_TO_START-th starts its directory."""
        if not self.enabled or not 0 < obj.size <= self.small_bytes or self.paused():
            return
        prefix = directory_of(obj.key)
        directory = self._dirs.get(prefix)
        if directory is None:
            directory = self._dirs[prefix] = _Directory(prefix)
            directory.listed_bytes = sum(o.size for o in self.files_in(prefix)
                                         if 0 < o.size <= self.small_bytes)
        now = self.clock()
        joined = directory.missed_at < now - WORKING_SET_S
        directory.missed_at = now
        if joined and self._turns and not self._working_set_fits():
            self._stop_all()
        if directory.active:
            return
        directory.misses += 1
        directory.opened.add(obj.key)
        if directory.misses >= MISSES_TO_START:
            self._start(directory)

    def _working_set_fits(self) -> bool:
        """Whether the small files of the directories read in the last WORKING_SET_S fit in
        the cache (logged once when they do not)."""
        if self.cache_bytes is None:
            return True
        since = self.clock() - WORKING_SET_S
        working = sum(d.listed_bytes for d in self._dirs.values() if d.missed_at >= since)
        if working <= self.cache_bytes:
            return True
        logs.once(log, logging.INFO, "dirahead-working-set",
                  "directory read-ahead waits: the directories being read hold more than "
                  "the cache (%d MiB > %d MiB)", working >> 20, self.cache_bytes >> 20)
        return False

    def _stop_all(self) -> None:
        """End every active directory's read-ahead (fetches in flight finish)."""
        for directory in list(self._turns):
            self._finish(directory)

    def _start(self, directory: _Directory) -> None:
        directory.misses = 0
        if not self._working_set_fits():
            return
        directory.active = True
        directory.queue = deque(
            obj for obj in self.files_in(directory.prefix)
            if 0 < obj.size <= self.small_bytes and obj.key not in directory.opened
        )
        log.debug("directory read-ahead of %r: %d files", directory.prefix,
                  len(directory.queue))
        self._turns.append(directory)
        self._pump()

    def _pump(self) -> None:
        """Start fetches, round-robin over active directories, while there is room."""
        if self.paused():
            return
        blocked = 0  # directories in a row with no room: stop when all are
        while self.in_flight < self.parallel and self._turns and blocked < len(self._turns):
            directory = self._turns[0]
            self._turns.rotate(-1)
            obj = self._next(directory)
            if obj is None:
                if directory.queue:
                    blocked += 1
                else:
                    self._finish(directory)
                continue
            blocked = 0
            self._launch(directory, obj)

    def _next(self, directory: _Directory) -> ObjectInfo | None:
        """Return the next file to fetch ahead in `directory`, or None (empty or no room)."""
        if directory.ahead_bytes >= self.ahead_bytes:
            return None
        while directory.queue:
            obj = directory.queue.popleft()
            if obj.key not in directory.opened and obj.key not in directory.ahead:
                return obj
        return None

    def _finish(self, directory: _Directory) -> None:
        """End the directory's read-ahead (all it listed is fetched or opened, or it is
        stopped): the next misses start it afresh."""
        self._turns.remove(directory)
        directory.active = False
        directory.queue = deque()
        directory.opened = set()
        directory.ahead = {}
        directory.ahead_bytes = 0

    def _launch(self, directory: _Directory, obj: ObjectInfo) -> None:
        directory.ahead[obj.key] = obj.size
        directory.ahead_bytes += obj.size
        self.in_flight += 1
        self.fetches_started += 1

        async def fetch_one() -> None:
            try:
                await self.fetch(obj)
            except Exception as exc:  # the reader's own open will retry and report it
                log.debug("directory read-ahead of %r failed: %s", obj.key, exc)
                nbytes = directory.ahead.pop(obj.key, None)
                if nbytes is not None:
                    directory.ahead_bytes -= nbytes
            finally:
                self.in_flight -= 1
                self._pump()

        self.spawn(fetch_one)
