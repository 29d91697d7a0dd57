"""The file of one cached block (format v3): its bytes, its checks, how it is written and opened.

A block file is a header, then the data. The header is

    magic "OMB3" | chunk size (u32) | data length (u64) | digest of the block's key (32 B)
    | CRC-32 of each CHUNK_BYTES chunk of the data (seeded by the chunk's index)
    | CRC-32 of the header before it

all little-endian. Its size follows from the data length, so a reader needs no
parse to find its bytes: a range in the first MiB is read with the header in one
pread, another in two. A read checks the magic, the chunk size, that the length
and the key digest are those of the key asked for, the header's own CRC, and the
CRCs of the chunks it covers; the file's size must be exactly header + data.

What the checks are for: damage (bit rot; a torn or truncated file after a crash
or a power loss, since files are not fsynced) and misplaced files (a block's file
under another block's name, a stray copy). They are not a defence against a user
who can write the cache directory: such a user could write a file with valid CRCs
and the right digest for any block. Ownership and modes keep others out (the
directory is the user's, 0700: see objmount/private.py and blocks.py).

Invariants:
- a file is written as `.tmp-<random>` in the directory of its final name
  (O_CREAT|O_EXCL|O_NOFOLLOW, 0600) and renamed over that name: a name holds a
  whole file or none, and a name (derived from the key) only ever gets that
  key's bytes;
- a file is opened with O_NOFOLLOW|O_NONBLOCK (a planted symlink or FIFO neither
  redirects nor blocks the read) and accepted only if it is a regular file of the
  user's of exactly the expected size;
- `verify` is pure (bytes in; bytes out or CorruptBlock), and `read_verified`
  reads through any pread: the fast path (cache/openblocks.py) reads a block
  from a descriptor it keeps open with `pread_nowait` and checks it without the
  store, against the header it verified when it opened the file.
"""

import contextlib
import os
import stat
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

from objmount.cache.keys import BlockKey, key_digest

MAGIC = b"OMB3"
# magic, chunk size, data length, key digest; then the chunk CRCs and the header CRC.
HEADER = struct.Struct("<4sIQ32s")
# CRC-32 per chunk: the checks are against damage (bit rot, torn or truncated files),
# not an adversary, and CRC-32 runs at ~6 GB/s here against ~1.6 GB/s for SHA-256:
# under a loaded CPU, hashing was ~100 us of a ~500 us warm hit of a 100 KiB file. It
# catches every burst up to 32 bits, and misses other damage with a chance of 2**-32
# per chunk.
CRC_BYTES = 4
# Checksum granularity. A FUSE read (128 KiB, or up to 1 MiB with big writes) verifies
# only the chunks it touches: a random 64 KiB read then reads and hashes 64-128 KiB,
# not a whole 1 MiB; the checksums cost 4 bytes per chunk (512 B for an 8 MiB block).
CHUNK_BYTES = 64 << 10
# What a file takes on disk is counted in whole filesystem blocks, as `du` counts it
# (ext4 and xfs allocate 4 KiB blocks): a 100 KiB block takes 104 KiB.
FS_BLOCK_BYTES = 4096
# A range that starts in the first chunk is read with the header in one pread, up to
# this size: after drop_caches, a separate header read costs ~2.4 more disk reads per
# block of 100 KiB (measured: 3.9 reads against 1.5, the kernel's read-ahead answers
# the small read, then the rest), and copying the data out of it costs ~40 us per MiB.
ONE_READ_BYTES = 1 << 20
SUFFIX = ".blk"
TMP_PREFIX = ".tmp-"
_CRC = struct.Struct("<I")
_FIXED_BYTES = HEADER.size + CRC_BYTES  # the header without its chunk CRCs
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# No atime updates: a read then never waits for an inode write (relatime still
# writes one after a file's first read), which the trio thread's RWF_NOWAIT reads
# must not. Refused (EPERM) for a file that is not ours, which is refused anyway.
_NOATIME = getattr(os, "O_NOATIME", 0)
# Read-write: the writer may keep the descriptor to read the block back (the fast path).
_CREATE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class CorruptBlock(Exception):
    """A block file does not match its key, its header or its checksums."""


def chunks(length: int) -> int:
    return max(1, -(-length // CHUNK_BYTES))


def header_bytes(length: int) -> int:
    """Bytes before the data in the file of a block of `length` bytes."""
    return _FIXED_BYTES + CRC_BYTES * chunks(length)


def file_bytes(length: int) -> int:
    """The exact size of the file of a block of `length` bytes."""
    return header_bytes(length) + length


def stored_bytes(length: int) -> int:
    """Disk the file of a block of `length` bytes takes, in whole filesystem blocks."""
    return -(-file_bytes(length) // FS_BLOCK_BYTES) * FS_BLOCK_BYTES


def crc(chunk: bytes | memoryview, index: int) -> bytes:
    """Return the checksum of chunk `index` (seeded by its index: a moved chunk fails)."""
    return zlib.crc32(chunk, index).to_bytes(CRC_BYTES, "little")


def header(digest: bytes, data: bytes | memoryview) -> bytes:
    """Return the header of the file holding `data` for the key whose digest is `digest`."""
    view = memoryview(data)
    crcs = b"".join(
        crc(view[offset : offset + CHUNK_BYTES], index)
        for index, offset in enumerate(range(0, max(1, len(data)), CHUNK_BYTES))
    )
    head = HEADER.pack(MAGIC, CHUNK_BYTES, len(data), digest) + crcs
    return head + zlib.crc32(head).to_bytes(CRC_BYTES, "little")


class ReadSpan(NamedTuple):
    """What to read of a block file for bytes [start, end) of its data."""

    header_bytes: int  # read at offset 0
    data_offset: int  # file offset of the first chunk covering the range
    data_bytes: int  # bytes of whole chunks from there (the last chunk may be short)
    first_chunk: int
    one_read: bool  # header and data are contiguous and small: read both at once


def read_span(length: int, start: int, end: int) -> ReadSpan:
    """Return the span of the file of a `length`-byte block to read for [start, end)."""
    if not 0 <= start <= end <= length:
        raise ValueError(f"range [{start}, {end}) is outside a block of {length} bytes")
    head = _FIXED_BYTES + CRC_BYTES * (-(-length // CHUNK_BYTES) or 1)
    first = start // CHUNK_BYTES
    offset = first * CHUNK_BYTES
    want = min(length, ((end - 1) // CHUNK_BYTES + 1) * CHUNK_BYTES) - offset if end > start else 0
    return ReadSpan(head, head + offset, want, first, not offset and head + want <= ONE_READ_BYTES)


def chunk_mask(start: int, end: int) -> int:
    """The chunks data bytes [start, end) of a block fall in, a bit each (chunk i: 1 << i);
    those read_span reads, or the first one for an empty range."""
    first = start // CHUNK_BYTES
    last = max(first, (end - 1) // CHUNK_BYTES)
    return ((1 << (last - first + 1)) - 1) << first


def verify(head: bytes | memoryview, data: bytes | memoryview, key: BlockKey, start: int,
           end: int, digest: bytes | None = None) -> bytes:
    """Return bytes [start, end) of the block `key`, given its file's header (`head`) and
    the span `read_span` names (`data`); raise CorruptBlock if anything does not match.

    Pure: no I/O. `digest` is key_digest(key), if the caller has it already.
    """
    return _verified(bytes(head), data, key, read_span(key.length, start, end), start, end,
                     digest or key_digest(key))


Pread = Callable[[int, int, int], bytes | bytearray]


def verify_read(fd: int, key: BlockKey, start: int, end: int, pread: Pread = os.pread,
                digest: bytes | None = None) -> bytes | bytearray:
    """Return bytes [start, end) of the block `key` from its open file `fd`, verified.

    Reads header and covering chunks with `pread(fd, size, offset)` (os.pread, or
    `pread_nowait`, which raises BlockingIOError). `digest` as for `verify`.
    Raises CorruptBlock, OSError.
    """
    return read_verified(fd, key, start, end, pread, digest)[0]


def read_verified(fd: int, key: BlockKey, start: int, end: int, pread: Pread = os.pread,
                  digest: bytes | None = None, head: bytes | None = None
                  ) -> tuple[bytes | bytearray, bytes]:
    """verify_read, also returning the file's header; with `head` (the header as read
    before from this file), only the chunks covering the range are read: the header
    is checked again against the key, and the chunks against its CRCs."""
    span = read_span(key.length, start, end)
    digest = digest or key_digest(key)
    size = span.header_bytes
    if head is not None:
        data = pread(fd, span.data_bytes, span.data_offset) if span.data_bytes else b""
        return _verified(head, data, key, span, start, end, digest), head
    if span.one_read:
        whole = pread(fd, size + span.data_bytes, 0)
        head = bytes(whole[:size])
        return _verified(head, memoryview(whole)[size:], key, span, start, end, digest), head
    head = bytes(pread(fd, size, 0))
    return _verified(head, pread(fd, span.data_bytes, span.data_offset), key, span, start, end,
                     digest), head


def pread_nowait(fd: int, size: int, offset: int) -> bytearray:
    """Read `size` bytes at `offset` without waiting for the disk (preadv with
    RWF_NOWAIT); raise BlockingIOError if some are not in the page cache (EAGAIN, or only
    some were). On a miss the kernel starts read-ahead and may still serve the read if
    that I/O ends first: no wait, not no I/O. Raises OSError (EOPNOTSUPP: the
    filesystem cannot)."""
    buffer = bytearray(size)
    if size and os.preadv(fd, [buffer], offset, os.RWF_NOWAIT) != size:
        raise BlockingIOError("only part of the range is in the page cache")
    return buffer


def _verified(head: bytes, data: bytes | bytearray | memoryview, key: BlockKey,
              span: ReadSpan, start: int, end: int, digest: bytes) -> bytes | bytearray:
    if len(head) != span.header_bytes:
        raise CorruptBlock("truncated header")
    if head[: HEADER.size] != HEADER.pack(MAGIC, CHUNK_BYTES, key.length, digest):
        magic, chunk, length, _digest = HEADER.unpack_from(head)
        if (magic, chunk, length) != (MAGIC, CHUNK_BYTES, key.length):
            raise CorruptBlock("bad header")
        raise CorruptBlock("the file holds another block")
    if zlib.crc32(head[:-CRC_BYTES]) != _CRC.unpack_from(head, len(head) - CRC_BYTES)[0]:
        raise CorruptBlock("header checksum mismatch")
    if len(data) != span.data_bytes:
        raise CorruptBlock("truncated data")
    first = span.first_chunk
    if span.data_bytes <= CHUNK_BYTES:  # one chunk (or none): no slicing
        if span.data_bytes and zlib.crc32(data, first) != _CRC.unpack_from(
                head, HEADER.size + first * CRC_BYTES)[0]:
            raise CorruptBlock(f"checksum mismatch in chunk {first}")
    else:
        view = memoryview(data)
        for i in range(first, first + (-(-span.data_bytes // CHUNK_BYTES))):
            piece = view[(i - first) * CHUNK_BYTES : (i - first + 1) * CHUNK_BYTES]
            if zlib.crc32(piece, i) != _CRC.unpack_from(head, HEADER.size + i * CRC_BYTES)[0]:
                raise CorruptBlock(f"checksum mismatch in chunk {i}")
    lo = start - first * CHUNK_BYTES
    if isinstance(data, bytes | bytearray) and lo == 0 and end - start == len(data):
        return data  # no copy
    return bytes(memoryview(data)[lo : lo + end - start])


def open_block(path: str, length: int, uid: int) -> int:
    """Open the file of a block of `length` bytes for reading; return its descriptor.

    Raises FileNotFoundError if there is none, CorruptBlock if what is there is not a
    regular file of `uid` of the right size (a symlink included), OSError otherwise.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS | _NOATIME)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        if os.path.islink(path):
            raise CorruptBlock("a symlink") from None
        if not isinstance(exc, PermissionError):
            raise
        fd = os.open(path, _OPEN_FLAGS)  # not ours (O_NOATIME): refused below
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != uid:
            raise CorruptBlock("not a regular file of yours")
        if info.st_size != file_bytes(length):
            raise CorruptBlock(f"{info.st_size} bytes, not {file_bytes(length)}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_block(directory: str, name: str, parts: Sequence[bytes | memoryview],
                keep_open: bool = False) -> int | None:
    """Write `parts` as the file `name` in `directory` (via a temporary file and a rename).

    Returns the file's descriptor (open for reading, the caller closes it) with
    `keep_open`, else None. Raises OSError; a failed write leaves no file behind.
    """
    tmp = os.path.join(directory, TMP_PREFIX + os.urandom(8).hex())
    fd = os.open(tmp, _CREATE_FLAGS, 0o600)
    try:
        try:
            _write_all(fd, parts)
            os.rename(tmp, os.path.join(directory, name))
        except BaseException:
            os.close(fd)
            raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if keep_open:
        return fd
    os.close(fd)
    return None


def _write_all(fd: int, parts: Sequence[bytes | memoryview]) -> None:
    views = [memoryview(p) for p in parts if len(p)]
    while views:
        written = os.writev(fd, views)
        if written == 0:
            raise OSError(f"writev wrote nothing ({sum(map(len, views))} bytes left)")
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
