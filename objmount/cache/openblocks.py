"""Block files kept open, and reads of them on the trio thread while the kernel has their pages.

The fast path of a disk hit (issue #13): no thread hop, no open, no SQLite. A
block file opened once (read in a worker thread, or just written there) stays
open in a bounded LRU of descriptors, with its header as read and verified. A
later read of that block on the trio thread checks that the file is still linked
(fstat), reads the chunks the range covers with preadv(RWF_NOWAIT), which fails
with EAGAIN rather than wait when a page is not in the page cache, and verifies
the chunks' CRCs against the header (blockfile.read_verified). Anything else (no
descriptor, pages not cached, a file unlinked or renamed over, a partial read)
returns None: the caller reads in a worker thread instead. A CRC mismatch drops
the descriptor and returns None too; the thread then finds the file corrupt and
removes it.

Each file carries a hint of the chunks the kernel has in memory: all of a file
just written, those read since. A range outside the hint goes to a thread with
no syscall here; a read that finds pages missing (the kernel dropped them)
clears the hint. After drop_caches, a random reader thus pays one failed
RWF_NOWAIT per file, not one per read. The hint only picks where to read.

The one exception to "no blocking call on the trio thread" (documented in
README.md): preadv with RWF_NOWAIT, fstat and close, all on descriptors of
local files this module holds, never a path lookup. A read is at most
MAX_NOWAIT_BYTES; it copies pages already in memory and CRCs them (measured
here: ~30-60 us for 128 KiB, against ~50-100 us for the thread hop it saves).

Invariants:
- every byte served comes from a file whose header was verified for this very
  key (length, key digest, header CRC) when it was opened, and passes its chunk
  CRC now; a file changed in place fails its CRC, a file replaced or removed
  (renamed over, evicted by any process) has no link left and is let go;
- at most `max_files` descriptors; a descriptor lent to a worker thread (`lend`)
  is closed only once it is given back, so no thread ever reads a descriptor
  number that was closed and reused meanwhile;
- used on the trio thread only: no locks.
"""

import errno
import logging
import os
import resource
from collections import OrderedDict
from dataclasses import dataclass

from objmount import log as logs
from objmount.cache.blockfile import CorruptBlock, chunk_mask, pread_nowait, read_verified
from objmount.cache.blocks import OpenBlock
from objmount.cache.keys import BlockKey, key_digest

log = logging.getLogger(__name__)

# Descriptors kept at most: enough for every block of a few large files being read at
# random (4 shards of 256 MiB are 128 blocks of 8 MiB), and for the small files that
# directory read-ahead writes ahead of the readers (its default 64 MiB are ~700 files
# of 90 KiB: with 256, cold-pass measurement here, 138 of 951 such hits took the fast
# path, 721 with 1,024); a quarter of the process's limit at most (the rest: FUSE,
# sockets, SQLite).
MAX_OPEN_FILES = 1024
# The largest read served on the trio thread (a FUSE read is at most 1 MiB): a whole
# 8 MiB block would hold the loop for milliseconds, and goes to a thread instead.
MAX_NOWAIT_BYTES = (1 << 20) + (64 << 10)
# The hint of a file whose every chunk is in memory (just written, or read whole).
ALL_CHUNKS = -1


def default_max_files() -> int:
    """MAX_OPEN_FILES, or a quarter of the soft RLIMIT_NOFILE if that is less."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN_FILES
    return max(0, min(MAX_OPEN_FILES, soft // 4))


@dataclass(eq=False, slots=True)
class _Entry:
    block: OpenBlock
    resident: int = ALL_CHUNKS  # chunks believed in the page cache (a bit each)
    digest: bytes = b""  # its key's (blockfile.key_digest), once computed
    lent: int = 0  # worker threads reading through it now
    dropped: bool = False  # out of the cache: closed once no thread has it


class OpenBlocks:
    """Open block files by block name, least recently used closed first; see the module
    docstring."""

    def __init__(self, max_files: int | None = None) -> None:
        self.max_files = default_max_files() if max_files is None else max_files
        self.nowait = True  # False once the filesystem refused RWF_NOWAIT
        self.fast_reads = 0
        self.not_cached = 0  # reads that found pages missing (they went to a thread)
        self.not_tried = 0  # reads outside the hint (to a thread with no syscall)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lent_out: dict[int, _Entry] = {}  # dropped while lent, by descriptor

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def add(self, name: str, block: OpenBlock, resident: int = ALL_CHUNKS) -> None:
        """Keep `block` (its descriptor is now this cache's), whose chunks `resident` (a
        mask) were just read or written; one already kept for `name` stays (and learns
        of them), and this one is closed."""
        if name in self._entries or self.max_files == 0:
            self.note_read(name, resident)
            os.close(block.fd)
            return
        self._entries[name] = _Entry(block, resident)
        while len(self._entries) > self.max_files:
            _, entry = self._entries.popitem(last=False)
            self._let_go(entry)

    def lend(self, name: str) -> OpenBlock | None:
        """The open file of block `name` for a worker thread to read (None if none);
        `give_back(name, block)` when the thread is done."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        entry.lent += 1
        self._entries.move_to_end(name)
        return entry.block

    def note_read(self, name: str, chunks: int) -> None:
        """Chunks `chunks` (a mask) of block `name` were just read: the kernel has them."""
        entry = self._entries.get(name)
        if entry is not None:
            entry.resident |= chunks

    def give_back(self, name: str, block: OpenBlock) -> None:
        entry = self._entries.get(name)
        if entry is None or entry.block is not block:
            entry = self._lent_out[block.fd]  # dropped while lent
        entry.lent -= 1
        if entry.dropped and not entry.lent:
            del self._lent_out[block.fd]
            os.close(block.fd)

    def drop(self, name: str) -> None:
        """Let the file of block `name` go (it was found corrupt, or is gone)."""
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._let_go(entry)

    def read(self, name: str, key: BlockKey, start: int, end: int,
             digest: bytes | None = None) -> bytes | bytearray | None:
        """Bytes [start, end) of block `key` if its file is open here and all its pages
        are in memory, verified; else None (read it in a thread). Never blocks on disk."""
        entry = self._entries.get(name)
        if entry is None or not self.nowait or end - start > MAX_NOWAIT_BYTES:
            return None
        if entry.resident != ALL_CHUNKS:
            chunks = chunk_mask(start, end)
            if entry.resident & chunks != chunks:
                self.not_tried += 1
                return None
        fd = entry.block.fd
        try:
            if os.fstat(fd).st_nlink == 0:  # evicted, or replaced: the path has another
                self.drop(name)
                return None
            if not entry.digest:
                entry.digest = digest or key_digest(key)
            data, _head = read_verified(fd, key, start, end, pread_nowait, entry.digest,
                                        entry.block.head)
        except BlockingIOError:
            self.not_cached += 1
            entry.resident = 0  # the kernel dropped pages: which, it does not say
            return None
        except CorruptBlock:
            self.drop(name)  # the thread's read finds it corrupt again, and removes it
            return None
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                self.nowait = False
                logs.once(log, logging.INFO, "nowait", "the cache's filesystem cannot read "
                          "without waiting (RWF_NOWAIT: %s): every disk hit goes through a "
                          "thread", exc)
            else:
                self.drop(name)
            return None
        self._entries.move_to_end(name)
        self.fast_reads += 1
        return data

    def sweep(self) -> int:
        """Let go of files no longer linked (evicted or replaced by any process), so that
        their disk space is freed; return how many. fstat only."""
        gone = []
        for name, entry in self._entries.items():
            try:
                if os.fstat(entry.block.fd).st_nlink == 0:
                    gone.append(name)
            except OSError:
                gone.append(name)
        for name in gone:
            self.drop(name)
        return len(gone)

    def close(self) -> None:
        """Let go of every file (those lent out close when given back)."""
        while self._entries:
            _, entry = self._entries.popitem(last=False)
            self._let_go(entry)

    def _let_go(self, entry: _Entry) -> None:
        entry.dropped = True
        if entry.lent:
            self._lent_out[entry.block.fd] = entry
        else:
            os.close(entry.block.fd)
