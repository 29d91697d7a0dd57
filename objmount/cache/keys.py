"""What names a cached block: its key, the key's canonical bytes, and the names derived from them.

A block is the bytes [start, end) of one version of one object. Its key names
the store (`source`: kind, endpoint, container), the object key, the version
(ETag) and the byte range, so a new version can never be served old bytes, and
a mount with another block size simply misses.

Invariants:
- one canonical, unambiguous encoding of a key (`key_bytes`): each text field
  prefixed by its length in code points, then the range, all as UTF-8 (lone
  surrogates passed through, so encoding is one-to-one); two different keys never
  have the same bytes;
- a block's file name (`name_of`, blake2b-128 of the key bytes, 32 hex digits)
  and the digest its file header carries (`key_digest`, blake2b-256) both come
  from those bytes alone, so a block's place on disk is computed, never looked up
  or read from anywhere;
- KEY_VERSION is part of the bytes: bumping it makes every old block a miss.
"""

import hashlib
import re
from typing import NamedTuple

from objmount.backends.base import ObjectInfo

# Bumped whenever the key or file layout changes (b3: store v3, content-addressed
# files with the key's digest in their header).
KEY_VERSION = "b3"
NAME_HEX_DIGITS = 32
NAME_PATTERN = re.compile(r"[0-9a-f]{32}")


class BlockKey(NamedTuple):
    """One block: bytes [start, end) of version `etag` of `key` in the store `source`."""

    source: str
    key: str
    etag: str
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def encode_text(text: str) -> bytes:
    """Return `text` as stored in key bytes and index rows (UTF-8, surrogates passed)."""
    return text.encode("utf-8", "surrogatepass")


def decode_text(raw: bytes) -> str:
    """Inverse of encode_text; raises UnicodeDecodeError."""
    return raw.decode("utf-8", "surrogatepass")


def key_bytes(key: BlockKey) -> bytes:
    """Return the canonical bytes of `key` (see the module docstring)."""
    source, name, etag, start, end = key
    return (f"{KEY_VERSION}:{len(source)}:{source}{len(name)}:{name}{len(etag)}:{etag}"
            f"{start}:{end}").encode("utf-8", "surrogatepass")


def name_of(key: BlockKey) -> str:
    """Return the block's file name stem: 32 hex digits of blake2b-128 of its key bytes."""
    return hashlib.blake2b(key_bytes(key), digest_size=16).hexdigest()


def key_digest(key: BlockKey) -> bytes:
    """Return the 32-byte digest of the key that the block's file header carries."""
    return hashlib.blake2b(key_bytes(key), digest_size=32).digest()


def name_and_digest(key: BlockKey) -> tuple[str, bytes]:
    """Return name_of(key) and key_digest(key), encoding the key once."""
    raw = key_bytes(key)
    return (hashlib.blake2b(raw, digest_size=16).hexdigest(),
            hashlib.blake2b(raw, digest_size=32).digest())


def block_key(source: str, obj: ObjectInfo, block_size: int, index: int) -> BlockKey:
    """Return the key of block `index` of `obj` cut in `block_size` blocks (a mount, a
    warm-up and directory read-ahead all name blocks this way), versioned by
    `ObjectInfo.version` (the page cache's rule too)."""
    start = index * block_size
    return BlockKey(source, obj.key, obj.version, start, min(obj.size, start + block_size))


def source_id(kind: str, endpoint: str, container: str) -> str:
    """Return the `source` of block keys for a container: the same for every remote name
    that points at the same store, so two remotes (or a mount and `warm`) share blocks."""
    return f"{kind}:{endpoint.rstrip('/')}/{container}"
