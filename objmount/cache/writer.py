"""The block cache's writer: one thread that writes fetched blocks to the store, in batches.

A block fetched from the store goes to its readers at once, and is queued here.
The writer thread takes what is queued (after the first block, it waits up to
LINGER_S for more, at most BATCH_BLOCKS or BATCH_BYTES), writes it with
BlockStore.put_many (one index transaction per batch), and reports the batch back
to the trio thread in one call (trio's run_sync_soon): `on_written(outcomes)`,
where the read path keeps the written files open for its fast path and ends the
blocks' flights.

Why one thread, and batches: a reservation is an SQLite write transaction
(locks, WAL frames, checkpoints: ~90 us of CPU alone, ~40 us per row in batches
of 16, measured here), and file creation and transactions cost more when several
threads contend for the index and the directories. Readers never wait for it.

Invariants:
- every block submitted is reported to `on_written` exactly once, stored or not
  (a failed write is the store's to log; a bug in it is logged once here);
- `close` (blocking) writes everything queued before it, reports it, then stops;
- what is queued stays charged to the caller's memory budget until reported (the
  caller takes and gives): the writer adds no memory of its own.
"""

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from objmount import log as logs
from objmount.cache.blocks import BlockKey, BlockStore, OpenBlock

log = logging.getLogger(__name__)

# How long the writer waits for more blocks after the first of a batch: readers do
# not wait for writes, so this only delays when a block is on disk, while a batch
# shares one transaction (at ~500 cold files/s, 10 ms gathers ~5 blocks).
LINGER_S = 0.010
BATCH_BLOCKS = 32
BATCH_BYTES = 32 << 20


@dataclass(eq=False, slots=True)
class Write:
    """One block to write, and what the submitter needs back with its outcome."""

    key: BlockKey
    name: str
    data: bytes | bytearray
    token: object = None  # the submitter's (the read path's flight)


Outcome = tuple[Write, bool, OpenBlock | None]  # the write, stored, its file kept open


class BlockWriter:
    """Writes submitted blocks to `store` in a thread of its own; see the module docstring."""

    def __init__(self, store: BlockStore, on_written: Callable[[list[Outcome]], None]) -> None:
        self.store = store
        self.on_written = on_written
        self.batches = 0
        self._queue: queue.SimpleQueue[Write | None] = queue.SimpleQueue()
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread; on the trio thread whose run gets the reports."""
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._run, name="objmount-writer", daemon=True)
        self._thread.start()

    def submit(self, write: Write) -> None:
        """Queue `write` (thread-safe; never blocks)."""
        self._queue.put(write)

    def close(self) -> None:
        """Write and report everything queued, then stop the thread (blocking)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            size = len(first.data)
            deadline = time.monotonic() + LINGER_S
            while len(batch) < BATCH_BLOCKS and size < BATCH_BYTES:
                wait_s = deadline - time.monotonic()
                try:
                    write = self._queue.get(timeout=wait_s) if wait_s > 0 \
                        else self._queue.get_nowait()
                except queue.Empty:
                    break
                if write is None:
                    stopping = True
                    break
                batch.append(write)
                size += len(write.data)
            self._report(batch, self._write(batch))

    def _write(self, batch: list[Write]) -> list[tuple[bool, OpenBlock | None]]:
        self.batches += 1
        try:
            return self.store.put_many([(w.key, w.data) for w in batch], keep_open=True)
        except Exception as exc:  # a bug: the blocks are not cached, reads go on
            logs.once(log, logging.ERROR, f"cache-put:{type(exc).__name__}",
                      "internal error writing the block cache (blocks not cached): %r", exc)
            return [(False, None)] * len(batch)

    def _report(self, batch: list[Write], results: list[tuple[bool, OpenBlock | None]]) -> None:
        outcomes = [(w, stored, opened) for w, (stored, opened) in zip(batch, results,
                                                                        strict=True)]
        assert self._token is not None
        try:
            self._token.run_sync_soon(self.on_written, outcomes)
        except trio.RunFinishedError:  # nobody to tell: the files are not kept open
            for _, _, opened in outcomes:
                if opened is not None:
                    os.close(opened.fd)
