"""Order-driven prefetch: fetch files ahead of the readers, in the order a client published.

A training process knows the order of a whole epoch before it reads a file
(objmount.torch.PrefetchSampler, `objmount prefetch`). It publishes it over the
control channel; OrderAhead keeps up to `parallel` GETs in flight for the next
files of that order, into the read path's buffer of blocks fetched ahead
(memory.AheadBuffer), so that opens find them there.

Positions. Each order has a position: the first of its files not yet opened.
Opens advance it: an open is matched, by object key, against a window of the
order's entries around the position, so the opens of DataLoader workers may
come in any order within the window. A file not opened by the time the readers
are LAG_FILES beyond it is passed (a sampler may skip files): what was fetched
for it is dropped and counted as unused.

Invariants:
- bounded memory per order: the published paths as one bytes object, and a
  window of at most LAG_FILES + PARSE_AHEAD_FILES parsed entries (never a
  structure per path of the whole epoch); paths are resolved (namespace
  lookups) only RESOLVE_AHEAD_FILES ahead of the prefetch frontier;
- bounded work: at most `parallel` GETs in flight for all orders together (at
  the runner's background priority: demand misses go first), none further than
  AHEAD_FILES beyond the furthest open, and each only if the buffer has room
  (AheadTarget.reserve); several orders (ranks sharing the mount) take turns,
  the one with the fewest files ahead first;
- a file already cached (disk, memory or in flight) or opened before its turn
  is never fetched; a failed fetch is forgotten (the open fetches it itself);
- an order ends when its readers pass its last file, when it is replaced (a new
  order of the same client) or cancelled, when its client process exits (if it
  asked for that), or after ORDER_IDLE_S without a matching open; what it had
  fetched and was never opened is dropped and counted as unused;
- FUSE-free and store-free: given a resolve callable and an AheadTarget, tested
  with fakes. Used on the trio thread only.
"""

import contextlib
import enum
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from objmount import log as logs
from objmount.backends.base import BackendError, NotFound, ObjectInfo

log = logging.getLogger(__name__)

# Opens of a DataLoader come from its workers, each reading its own batch: with 8
# workers, batches of 32 and 2 batches queued per worker, up to 8 x 32 x 2 = 512
# files apart. A file this far behind the furthest open is taken as skipped.
LAG_FILES = 2048
# Files parsed (their keys known, for matching opens) beyond the prefetch frontier
# and the furthest open.
PARSE_AHEAD_FILES = 1024
# Files resolved (looked up in the namespace, checked in the cache) beyond the frontier.
RESOLVE_AHEAD_FILES = 256
RESOLVE_BATCH = 64
# No prefetch further than this beyond the furthest open (the buffer bounds it first
# for small files: 48 MiB is ~500 JPEGs of 100 KB).
AHEAD_FILES = 1024
# An order whose files nobody opened for this long is dropped (a job that died).
ORDER_IDLE_S = 600.0
# How often idle orders and exited clients are looked for.
TICK_S = 2.0
# At most this many orders at once (clients: ranks, loaders); a new client beyond is refused.
MAX_ORDERS = 64
# Resolved files whose sizes estimate an epoch's bytes (for the cache policy).
ESTIMATE_AFTER_FILES = 64


class TooManyOrders(Exception):
    """MAX_ORDERS clients have orders already."""


class AheadTarget(Protocol):
    """What OrderAhead needs of the read path (readpath.CachedReadPath)."""

    async def needs_get(self, objects: list[ObjectInfo]) -> list[bool]:
        """For each object: would opening it now need a GET (its first block is not on disk,
        in memory or on its way)?"""
        ...

    def reserve(self, obj: ObjectInfo) -> bool:
        """Charge the buffer for the object's first block; False if there is no room now."""
        ...

    async def fetch(self, obj: ObjectInfo) -> bool:
        """Fetch the reserved first block into the buffer (the reservation is used or given
        back); True if it is there now, or was claimed by a reader on the way."""
        ...

    def drop(self, obj: ObjectInfo) -> None:
        """Forget what was fetched for `obj` (counted as unused if no reader had it)."""
        ...


Resolve = Callable[[str], Awaitable[ObjectInfo | None]]


class State(enum.Enum):
    PARSED = "parsed"  # key known, not looked up yet
    WAITING = "waiting"  # needs a GET, not started
    CACHED = "cached"  # no GET needed (or the file is missing, or empty)
    FETCHING = "fetching"
    READY = "ready"  # in the buffer
    OPENED = "opened"


@dataclass(slots=True, eq=False)
class _Entry:
    index: int
    path: str
    key: str
    state: State = State.PARSED
    obj: ObjectInfo | None = None
    passed: bool = False  # the readers went past it while it was being fetched


@dataclass(eq=False)
class _Order:
    client: str
    payload: bytes
    count: int
    pid: int | None  # drop the order when this process is gone
    published_at: float
    cursor_bytes: int = 0  # where parsing goes on in the payload
    parsed: int = 0
    window: deque[_Entry] = field(default_factory=deque)
    by_key: dict[str, _Entry] = field(default_factory=dict)
    position: int = 0  # index of window[0] (the first file not yet opened or passed)
    frontier: int = 0  # the first entry not yet decided (fetched, skipped...)
    resolved: int = 0  # entries resolved from the frontier on: [frontier, resolved)
    furthest_open: int = -1
    last_open_at: float = 0.0
    fetching: int = 0
    ready: int = 0
    opened: int = 0
    fetched: int = 0
    missing: int = 0
    sized_files: int = 0
    sized_bytes: int = 0
    estimated: bool = False
    more: trio.Event = field(default_factory=trio.Event)  # the resolver may go on
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    ended: bool = False

    @property
    def ahead(self) -> int:
        return self.fetching + self.ready

    def entry(self, index: int) -> _Entry | None:
        offset = index - self.position
        return self.window[offset] if 0 <= offset < len(self.window) else None


def count_paths(payload: bytes) -> int:
    """The number of paths in an order's payload (LF-separated; no LF: one, or none)."""
    return payload.count(b"\n") + 1 if payload else 0


class OrderAhead:
    """The published orders of one mount, and the prefetch that follows their readers."""

    def __init__(
        self,
        target: AheadTarget,
        resolve: Resolve,
        key_prefix: str,
        *,
        parallel: int,
        on_epoch_bytes: Callable[[int | None], None] | None = None,
        clock: Callable[[], float] = trio.current_time,
        process_alive: Callable[[int], bool] | None = None,
    ) -> None:
        """`key_prefix`: the object key of the mount's root (a path's key is prefix + path).
        `on_epoch_bytes(n)`: told the estimated bytes all orders read (None: no order)."""
        self.target = target
        self.resolve = resolve
        self.key_prefix = key_prefix
        self.parallel = max(1, parallel)
        self.on_epoch_bytes = on_epoch_bytes
        self.clock = clock
        self.process_alive = process_alive or _process_alive
        self.in_flight = 0
        self.gets_started = 0
        self.files_missing = 0
        self.orders_ended = 0
        self._orders: dict[str, _Order] = {}
        self._nursery: trio.Nursery | None = None

    def __len__(self) -> int:
        return len(self._orders)

    @property
    def active(self) -> bool:
        """True while any order is published (directory read-ahead stays off meanwhile)."""
        return bool(self._orders)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the orders' resolvers and fetches until cancelled; end idle orders."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    await trio.sleep(TICK_S)
                    self._end_stale()
            finally:
                self._nursery = None

    # Orders.

    def publish(self, client: str, payload: bytes, pid: int | None = None) -> int:
        """Replace `client`'s order with the paths in `payload` (empty: cancel it); return
        the number of paths. Raises TooManyOrders, RuntimeError if not serving."""
        if self._nursery is None:
            raise RuntimeError("OrderAhead.serve is not running")
        old = self._orders.get(client)
        if old is None and payload and len(self._orders) >= MAX_ORDERS:
            raise TooManyOrders(f"{MAX_ORDERS} clients have orders already")
        if old is not None:
            self._end(old, "replaced")
        count = count_paths(payload)
        if count == 0:
            return 0
        order = _Order(client, payload, count, pid, self.clock(), last_open_at=self.clock())
        self._orders[client] = order
        self._parse(order)
        self._nursery.start_soon(self._resolver, order)
        log.info("order of %r: %d files", client, count)
        return count

    def orders(self) -> list[dict[str, object]]:
        """What each order is at (for stats)."""
        return [{"client": o.client, "files": o.count, "position": o.position,
                 "frontier": o.frontier, "ahead": o.ahead, "in_flight": o.fetching,
                 "ready": o.ready, "opened": o.opened, "fetched": o.fetched,
                 "missing": o.missing} for o in self._orders.values()]

    def ahead_files(self) -> int:
        return sum(o.ahead for o in self._orders.values())

    def _end(self, order: _Order, why: str) -> None:
        """Forget `order`: cancel its resolver, drop what it fetched and nobody opened."""
        order.ended = True
        order.scope.cancel()
        if self._orders.get(order.client) is order:
            del self._orders[order.client]
        self.orders_ended += 1
        for entry in order.window:
            self._forget(order, entry)
        order.window.clear()
        order.by_key.clear()
        log.info("order of %r ended (%s) at %d of %d files", order.client, why,
                 order.position, order.count)
        self._tell_epoch_bytes()

    def _end_stale(self) -> None:
        now = self.clock()
        for order in list(self._orders.values()):
            if now - order.last_open_at > ORDER_IDLE_S:
                self._end(order, f"no file opened for {ORDER_IDLE_S:g}s")
            elif order.pid is not None and not self.process_alive(order.pid):
                self._end(order, f"process {order.pid} exited")

    # Opens.

    def opened(self, obj: ObjectInfo) -> None:
        """A reader opened `obj`: advance the positions of the orders that list it."""
        if not self._orders:
            return
        for order in list(self._orders.values()):
            entry = order.by_key.get(obj.key)
            if entry is None or entry.state is State.OPENED:
                continue
            self._set_state(order, entry, State.OPENED)
            order.opened += 1
            order.last_open_at = self.clock()
            order.furthest_open = max(order.furthest_open, entry.index)
            self._advance(order)
        self._launch()

    def _advance(self, order: _Order) -> None:
        """Pop entries opened, or passed by the readers; end the order at its end."""
        window = order.window
        behind = order.furthest_open - LAG_FILES
        while window and (window[0].state is State.OPENED or window[0].index < behind):
            entry = window.popleft()
            order.position += 1
            if order.by_key.get(entry.key) is entry:
                del order.by_key[entry.key]
            if entry.state is not State.OPENED:
                self._forget(order, entry)
        order.frontier = max(order.frontier, order.position)
        order.resolved = max(order.resolved, order.frontier)
        if order.position >= order.count:
            self._end(order, "every file opened or passed")
            return
        self._parse(order)

    def _forget(self, order: _Order, entry: _Entry) -> None:
        """An entry leaves its order without having been opened."""
        if entry.state is State.READY and entry.obj is not None:
            self.target.drop(entry.obj)
        elif entry.state is State.FETCHING:
            entry.passed = True  # dropped once its fetch ends
        self._set_state(order, entry, State.CACHED)

    def _set_state(self, order: _Order, entry: _Entry, state: State) -> None:
        if entry.state is State.FETCHING:
            order.fetching -= 1
        elif entry.state is State.READY:
            order.ready -= 1
        if state is State.FETCHING:
            order.fetching += 1
        elif state is State.READY:
            order.ready += 1
        entry.state = state

    # Parsing and resolving.

    def _parse(self, order: _Order) -> None:
        """Parse entries up to PARSE_AHEAD_FILES beyond the frontier and the furthest open."""
        limit = min(order.count, max(order.frontier, order.furthest_open + 1) + PARSE_AHEAD_FILES)
        payload = order.payload
        while order.parsed < limit:
            end = payload.find(b"\n", order.cursor_bytes)
            end = len(payload) if end < 0 else end
            path = os.fsdecode(payload[order.cursor_bytes:end]).strip("/")
            order.cursor_bytes = end + 1
            entry = _Entry(order.parsed, path, self.key_prefix + path)
            order.parsed += 1
            if order.parsed <= order.position:  # the readers passed it already
                continue
            order.window.append(entry)
            order.by_key.setdefault(entry.key, entry)

    async def _resolver(self, order: _Order) -> None:
        """Resolve entries from the frontier on, up to RESOLVE_AHEAD_FILES beyond it."""
        with order.scope:
            while order.resolved < order.count:
                self._parse(order)
                index = order.resolved
                stop = min(order.parsed, order.frontier + RESOLVE_AHEAD_FILES)
                batch = []
                while len(batch) < RESOLVE_BATCH and index < stop:
                    entry = order.entry(index)
                    if entry is not None and entry.state is State.PARSED:
                        batch.append(entry)
                    index += 1
                if index == order.resolved:  # nothing more may be resolved yet
                    order.more = trio.Event()
                    await order.more.wait()
                    continue
                await self._resolve_batch(order, batch)
                order.resolved = max(order.resolved, index)
                self._launch()

    async def _resolve_batch(self, order: _Order, batch: list[_Entry]) -> None:
        found: list[_Entry] = []
        for entry in batch:
            obj = await self._lookup(entry.path)
            if obj is None:
                order.missing += 1
                self.files_missing += 1
                logs.once(log, logging.WARNING, f"order-missing:{order.client}",
                          "order of %r lists %r, which is not in the mount (skipped; no "
                          "more such warnings for this client)", order.client, entry.path)
            else:
                entry.obj = obj
                found.append(entry)
                order.sized_files += 1
                order.sized_bytes += obj.size
        if not order.estimated and order.sized_files >= min(ESTIMATE_AFTER_FILES,
                                                             order.count - order.missing):
            order.estimated = True
            self._tell_epoch_bytes()
        needs = await self.target.needs_get([e.obj for e in found]) if found else []
        if order.ended:
            return
        for entry in batch:
            if entry.state is State.PARSED:
                entry.state = State.CACHED
        for entry, need in zip(found, needs, strict=True):
            if entry.state is State.CACHED and need and entry.obj.size > 0:
                entry.state = State.WAITING

    async def _lookup(self, path: str) -> ObjectInfo | None:
        if not path or any(part in ("", ".", "..") for part in path.split("/")):
            return None
        try:
            return await self.resolve(path)
        except (NotFound, NotADirectoryError, BackendError) as exc:
            log.debug("order path %r: %s", path, exc)
            return None

    def _tell_epoch_bytes(self) -> None:
        if self.on_epoch_bytes is None:
            return
        estimates = [o.sized_bytes * o.count // o.sized_files
                     for o in self._orders.values() if o.sized_files]
        self.on_epoch_bytes(sum(estimates) if self._orders else None)

    # Fetching.

    def _launch(self) -> None:
        """Start fetches while there is room: the orders with the fewest files ahead first."""
        if self._nursery is None:  # shutting down
            return
        blocked: set[str] = set()
        while self.in_flight < self.parallel:
            candidates = [o for o in self._orders.values() if o.client not in blocked]
            if not candidates:
                return
            order = min(candidates, key=lambda o: o.ahead)
            entry = self._next_to_fetch(order)
            if entry is None or not self.target.reserve(entry.obj):
                blocked.add(order.client)
                continue
            self._set_state(order, entry, State.FETCHING)
            order.frontier = entry.index + 1
            self.in_flight += 1
            self.gets_started += 1
            self._nursery.start_soon(self._fetch, order, entry)

    def _next_to_fetch(self, order: _Order) -> _Entry | None:
        """Move the frontier past what needs nothing; return the entry to fetch next, if any
        is resolved, waiting, and within AHEAD_FILES of the furthest open."""
        if order.resolved - order.frontier <= RESOLVE_AHEAD_FILES - RESOLVE_BATCH:
            order.more.set()  # room for the resolver's next batch
        while order.frontier < order.resolved:
            entry = order.entry(order.frontier)
            if entry is None:  # passed already
                order.frontier += 1
                continue
            if entry.state is not State.WAITING:
                order.frontier += 1
                continue
            if entry.index > order.furthest_open + AHEAD_FILES:
                return None
            return entry
        self._parse(order)
        return None

    async def _fetch(self, order: _Order, entry: _Entry) -> None:
        assert entry.obj is not None
        ok = False
        try:
            ok = await self.target.fetch(entry.obj)
        except Exception as exc:  # the reader's own open fetches it, and reports errors
            log.debug("prefetch of %r failed: %s", entry.key, exc)
        finally:
            self.in_flight -= 1
        order.fetched += ok
        # An entry opened while its GET ran is the reader's (it claims the block, or its
        # close lets it go), also when that open ended the order.
        if entry.passed or (order.ended and entry.state is not State.OPENED):
            if ok:
                self.target.drop(entry.obj)
        elif entry.state is State.FETCHING:
            self._set_state(order, entry, State.READY if ok else State.CACHED)
        self._launch()


def _process_alive(pid: int) -> bool:
    with contextlib.suppress(OSError):
        os.kill(pid, 0)
        return True
    return os.path.exists(f"/proc/{pid}")  # EPERM: it exists, owned by someone else
