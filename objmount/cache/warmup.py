"""`objmount warm`: fill the block cache for a subtree with many parallel GETs.

The blocks are the ones a mount with the same --block-size will look up (same
source, key, ETag and range), written through the same BlockStore, so a warm-up
may run while a mount of the same cache directory serves reads (the store's
index arbitrates, and its cap counts both).

Invariants:
- never evicts what it fetched: the subtree is cut at `max_bytes` (by default
  the cache's own size), in listing order, and blocks of the subtree already
  cached are marked as just used before anything is fetched;
- every blocking call runs through a Runner (GETs under --max-parallel, disk
  under its own limiter), never on the trio thread;
- a block that fails to download is counted and reported, not retried forever
  (the runner's bounded retries apply);
- the listing of a whole prefix is also written as its listing snapshot
  (namespace/snapshot.py): the next mount of that prefix serves it at once.
"""

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from objmount.backends.base import Backend, BackendError, ListPage, ObjectInfo, list_all
from objmount.backends.runner import Runner
from objmount.cache.blockfile import stored_bytes
from objmount.cache.blocks import BlockKey, BlockStore, block_key
from objmount.errors import ConfigError
from objmount.namespace import snapshot
from objmount.readpath_base import fetch_exact

log = logging.getLogger(__name__)


@dataclass
class WarmProgress:
    """Counts of a warm-up, updated as it goes (read by the progress bar)."""

    objects_total: int = 0
    bytes_total: int = 0
    objects_done: int = 0
    bytes_done: int = 0
    bytes_fetched: int = 0
    gets: int = 0
    already_cached_bytes: int = 0
    skipped_objects: int = 0
    skipped_bytes: int = 0
    failed_blocks: int = 0
    not_stored_blocks: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


def block_keys(source: str, obj: ObjectInfo, block_size: int) -> list[BlockKey]:
    """Return the keys of every block of `obj`, as a mount with `block_size` names them."""
    return [block_key(source, obj, block_size, index)
            for index in range(-(-obj.size // block_size))]


def fetchable(pages: list[ListPage]) -> list[ObjectInfo]:
    """Every object of a recursive listing but directory markers and empty objects."""
    return [obj for page in pages for obj in page.objects
            if obj.size > 0 and not obj.key.endswith("/")]


async def warm(
    backend: Backend,
    store: BlockStore,
    source: str,
    prefix: str,
    *,
    block_size: int,
    max_bytes: int,
    runner: Runner,
    disk_runner: Runner,
    progress: WarmProgress | None = None,
    on_progress: Callable[[WarmProgress], None] | None = None,
    only_key: str | None = None,
) -> WarmProgress:
    """Fetch every block under `prefix` (of `only_key` alone, if given) not yet cached, up
    to `max_bytes` of subtree.

    Returns the counts; raises BackendError only if the listing fails.
    """
    progress = progress or WarmProgress()
    try:
        version = await runner.call(backend.container_version)  # before the listing
    except BackendError:
        version = None
    pages = await runner.call(lambda: list(list_all(backend, prefix, None)))
    if only_key is None:  # the whole prefix was listed: the next mount of it starts from it
        await disk_runner.call_once(_write_snapshot, store, source, prefix, pages, version)
    objects = fetchable(pages)
    if only_key is not None:
        objects = [obj for obj in objects if obj.key == only_key]
    planned: list[tuple[ObjectInfo, list[BlockKey]]] = []
    planned_bytes = 0
    for obj in objects:
        keys = block_keys(source, obj, block_size)
        size = sum(stored_bytes(key.length) for key in keys)
        if planned_bytes + size > max_bytes:
            progress.skipped_objects += 1
            progress.skipped_bytes += obj.size
            continue
        planned_bytes += size
        planned.append((obj, keys))
    progress.objects_total = len(planned)
    progress.bytes_total = sum(obj.size for obj, _ in planned)
    missing = await disk_runner.call_once(_missing_and_touch, store, planned)
    progress.already_cached_bytes = progress.bytes_total - sum(k.length for _, k in missing)
    progress.bytes_done = progress.already_cached_bytes
    remaining: dict[str, int] = {}
    for obj, _ in missing:
        remaining[obj.key] = remaining.get(obj.key, 0) + 1
    progress.objects_done = sum(1 for obj, _ in planned if obj.key not in remaining)
    if on_progress:
        on_progress(progress)

    async def fetch(obj: ObjectInfo, key: BlockKey) -> None:
        try:
            data = await fetch_exact(backend, runner, progress, obj, key.start, key.end)
            if not await disk_runner.call_once(store.put, key, data):
                progress.not_stored_blocks += 1
        except BackendError as exc:
            progress.failed_blocks += 1
            if len(progress.errors) < 10:
                progress.errors.append(str(exc))
        progress.bytes_done += key.length
        remaining[obj.key] -= 1
        if remaining[obj.key] == 0:
            progress.objects_done += 1
        if on_progress:
            on_progress(progress)

    # A fixed pool of workers (one per GET thread) pulls blocks from one iterator:
    # only that many blocks are in memory at once, however large the subtree.
    todo = iter(missing)

    async def worker() -> None:
        for obj, key in todo:
            await fetch(obj, key)

    async with trio.open_nursery() as nursery:
        for _ in range(max(1, int(runner.limiter.total_tokens))):
            nursery.start_soon(worker)
    return progress


def _write_snapshot(store: BlockStore, source: str, prefix: str, pages: list[ListPage],
                    version: str | None) -> None:
    """Publish the listing as the prefix's snapshot; a failure is only logged."""
    try:
        snapshot.build(store.directory, source, prefix, pages, version, time.time())
    except (OSError, sqlite3.Error, ConfigError) as exc:
        log.warning("cannot write the listing snapshot of %r: %s", prefix, exc)


def _missing_and_touch(
    store: BlockStore, planned: list[tuple[ObjectInfo, list[BlockKey]]]
) -> list[tuple[ObjectInfo, BlockKey]]:
    """Return the blocks not stored yet; mark the stored ones as just used (blocks)."""
    missing = []
    present = []
    for obj, keys in planned:
        for key in keys:
            if store.contains(key):
                present.append(key)
            else:
                missing.append((obj, key))
    store.touch(present)
    return missing
