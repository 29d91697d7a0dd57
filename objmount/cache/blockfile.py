"""The file of one cached block: its place in the cache directory, its bytes, its checks.

A block file is a header (magic, chunk size, data length), a checksum of every
CHUNK_BYTES chunk of the data (CRC-32), then the data. The header's size follows
from the data length, so a read needs no header parse to find its bytes: a
range in the first MiB is read with the header in one pread, another in two.

Invariants:
- a file name is random (16 random bytes), so never reused: a name remembered
  from an earlier lookup opens that block or fails with ENOENT, never another block;
- files live in 256 directories `xx/` that are never removed, so a
  writer never races a removal of its directory; files of diskcache's own
  layout (`ab/cd/name.val`, written before) are removed as diskcache removes them;
- a file is written whole or removed: a partial file never stays behind a
  failed write (a killed writer may leave one, with no row pointing at it).
"""

import contextlib
import os
import struct
import threading
import zlib
from typing import Any, BinaryIO, NamedTuple

import diskcache
from diskcache.core import MODE_BINARY

# Bumped whenever the file layout changes (BlockStore's keys name it, so old files
# are never read as new ones).
MAGIC = b"OMB2"
HEADER = struct.Struct("<4sIQ")  # magic, chunk size, data length
# CRC-32 per chunk: the checks are against damage (bit rot, torn or truncated files),
# not an adversary, and CRC-32 runs at ~6 GB/s here against ~1.6 GB/s for SHA-256 (the
# digest of an earlier layout): under a loaded CPU, hashing was ~100 us of a ~500 us
# warm hit of a 100 KiB file. It catches every burst up to 32 bits, and misses other
# damage with a chance of 2**-32 per chunk.
DIGEST_BYTES = 4
# Checksum granularity. A FUSE read (128 KiB, or up to 1 MiB with big writes) verifies
# only the chunks it touches: a random 64 KiB read then reads and hashes 64-128 KiB,
# not a whole 1 MiB; the checksums cost 4 bytes per chunk (512 B for an 8 MiB block).
CHUNK_BYTES = 64 << 10
# Block files go in 256 directories named by their first 2 hex digits: a few thousand
# files each at 1M blocks (ext4 finds a name through an htree), few enough that their
# inodes and name blocks stay in memory, so a warm read after drop_caches costs about
# what a plain file costs (diskcache's 65,536 two-level directories cost two more
# random disk reads per block).
_DIR_HEX_DIGITS = 2
# Writer retries when another process removed an (old-layout) directory meanwhile.
_WRITE_ATTEMPTS = 10
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC
# A range that starts in the first chunk is read with the header in one pread, up to
# this size: after drop_caches, a separate header read costs ~2.4 more disk reads per
# block of 100 KiB (measured: 3.9 reads against 1.5, the kernel's read-ahead answers
# the small read, then the rest), and copying the data out of it costs ~40 us per MiB.
ONE_READ_BYTES = 1 << 20


def header_bytes(length: int) -> int:
    """Bytes before the data in the file of a block of `length` bytes."""
    return HEADER.size + DIGEST_BYTES * chunks(length)


def chunks(length: int) -> int:
    return max(1, -(-length // CHUNK_BYTES))


def digest(chunk: bytes | memoryview, index: int) -> bytes:
    """Return the checksum of chunk `index` (seeded by its index: a moved chunk fails)."""
    return zlib.crc32(chunk, index).to_bytes(DIGEST_BYTES, "little")


def header(data: bytes) -> bytes:
    """Return the header (with digests) of a block file holding `data`."""
    view = memoryview(data)
    digests = b"".join(
        digest(view[offset : offset + CHUNK_BYTES], index)
        for index, offset in enumerate(range(0, max(1, len(data)), CHUNK_BYTES))
    )
    return HEADER.pack(MAGIC, CHUNK_BYTES, len(data)) + digests


class CorruptBlock(Exception):
    """A block file does not match its header or checksums."""


def open_block(path: str) -> int:
    """Open a block file for reading; return its descriptor. Raises OSError (ENOENT...)."""
    return os.open(path, _OPEN_FLAGS)


def read_verified(fd: int, length: int, start: int, end: int) -> bytes:
    """Return bytes [start, end) of the data of the block file `fd` (`length` data bytes).

    Reads the header and the chunks covering the range, and checks them; raises
    CorruptBlock if any does not match, OSError if the file cannot be read.
    """
    head_size = header_bytes(length)
    first, last = start // CHUNK_BYTES, max(start, end - 1) // CHUNK_BYTES
    offset = first * CHUNK_BYTES
    want = min(length, (last + 1) * CHUNK_BYTES) - offset if end > start else 0
    alone = None  # the data as read by a pread of its own
    if offset == 0 and want <= ONE_READ_BYTES:
        whole = memoryview(os.pread(fd, head_size + want, 0))
        head, data = whole[:head_size], whole[head_size:]
    else:
        head = memoryview(os.pread(fd, head_size, 0))
        alone = os.pread(fd, want, head_size + offset)
        data = memoryview(alone)
    if len(head) != head_size:
        raise CorruptBlock("truncated header")
    magic, chunk, stored_length = HEADER.unpack_from(head)
    if magic != MAGIC or chunk != CHUNK_BYTES or stored_length != length:
        raise CorruptBlock("bad header")
    if len(data) != want:
        raise CorruptBlock("truncated data")
    for i in range(first, last + 1 if want else first):
        expected = head[HEADER.size + i * DIGEST_BYTES : HEADER.size + (i + 1) * DIGEST_BYTES]
        if digest(data[(i - first) * CHUNK_BYTES : (i - first + 1) * CHUNK_BYTES], i) != expected:
            raise CorruptBlock(f"checksum mismatch in chunk {i}")
    if alone is not None and start == offset and end - offset == want:
        return alone  # no copy
    return bytes(data[start - offset : end - offset])


class BlockValue(NamedTuple):
    """A value for BlockDisk: a block file's header and data."""

    header: bytes
    data: bytes | memoryview


class BlockDisk(diskcache.Disk):
    """diskcache's Disk for block files: written in our layout, read back as a path.

    `Cache.get(key, read=True)` returns the block file's full path (no file is
    opened: the reader opens it). The last file name written is kept per thread,
    so the store can remove the file if the row insert fails after it was written.
    """

    def __init__(self, directory: str, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.local = threading.local()

    def filename(self, key: Any = diskcache.core.UNKNOWN,
                 value: Any = diskcache.core.UNKNOWN) -> tuple[str, str]:
        name = os.urandom(16).hex()
        filename = f"{name[:_DIR_HEX_DIGITS]}/{name[_DIR_HEX_DIGITS:]}.val"
        return filename, os.path.join(self._directory, filename)

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> tuple:
        if not isinstance(value, BlockValue):
            return super().store(value, read, key=key)
        filename, full_path = self.filename(key, value)
        self.local.filename = filename
        try:
            with _create(full_path) as file:
                file.write(value.header)
                file.write(value.data)
        except BaseException:
            self.remove(filename)
            raise
        return len(value.header) + len(value.data), MODE_BINARY, filename, None

    def fetch(self, mode: int, filename: str, value: Any, read: bool) -> Any:
        if read and mode == MODE_BINARY:
            return os.path.join(self._directory, filename)
        return super().fetch(mode, filename, value, read)

    def remove(self, file_path: str) -> None:
        if file_path.count("/") != 1:  # diskcache's layout: it also removes empty directories
            super().remove(file_path)
            return
        with contextlib.suppress(OSError):  # gone already (another process removed it)
            os.remove(os.path.join(self._directory, file_path))



def _create(path: str) -> BinaryIO:
    """Create the file `path` (it must not exist) and its directory.

    Retried if another process removes the directory meanwhile (an old-layout removal).
    """
    for _ in range(_WRITE_ATTEMPTS - 1):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            return open(path, "xb")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return open(path, "xb")
