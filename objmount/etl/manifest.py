"""The manifest object: what the loader put under a prefix, and which content each ETag holds.

It is the object `<prefix>.objmount-manifest.json`:
`{"format": "objmount-manifest", "version": 1,
"objects": [{"key", "size", "md5", "etag", "mtime_ns"}]}`, one entry per
object sorted by key; `key` is the full object key, `md5` the hex MD5 of the
object's content, `etag` the ETag the store listed for the object that held
that content, and `mtime_ns` the local file's mtime when it was hashed (absent
in older manifests): with the size, it lets a rerun skip hashing a file not
modified since, as rclone compares size and modification time. Segmented
objects (S3 multipart, Swift SLO) have ETags derived from their segments, not
from their content: an entry is the only record of their content's checksum.

Readers (the loader's resume, `objmount warm`) trust an entry only while the
store lists its key with the same size and ETag: rewriting an object changes
its ETag, so a stale entry never matches.

A sharded load (`etl load --shard I/N`) writes a part instead,
`<prefix>.objmount-manifest.part-IIII-of-NNNN.json`, of the same format, with
the entries of its own files; `etl load --merge-manifests` (or the next
unsharded load) folds every part into the manifest and deletes the parts.
"""

import hashlib
import json
import logging
import re
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from objmount.backends.base import Backend, NotFound

log = logging.getLogger(__name__)

MANIFEST_NAME = ".objmount-manifest.json"
_FORMAT = "objmount-manifest"
_VERSION = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One object: full key, size in bytes, MD5 of its content (hex), ETag it was listed with,
    mtime of the local file it was loaded from (ns; None: unknown)."""

    key: str
    size: int
    md5: str
    etag: str
    mtime_ns: int | None = None


def manifest_key(prefix: str) -> str:
    """Return the key of the manifest of the objects under `prefix` ('' or ending in '/')."""
    return prefix + MANIFEST_NAME


def part_key(prefix: str, shard: int, shards: int) -> str:
    """Return the key of shard `shard` of `shards`'s manifest part under `prefix`."""
    return f"{prefix}{MANIFEST_NAME.removesuffix('.json')}.part-{shard:04d}-of-{shards:04d}.json"


_PART = re.compile(re.escape(MANIFEST_NAME.removesuffix(".json")) + r"\.part-\d{4}-of-\d{4}\.json")


def is_part_key(prefix: str, key: str) -> bool:
    """Whether `key` is a manifest part of a sharded load under `prefix`."""
    return key.startswith(prefix) and _PART.fullmatch(key[len(prefix):]) is not None


def is_manifest_key(prefix: str, key: str) -> bool:
    """Whether `key` is the manifest or a manifest part under `prefix` (never data)."""
    return key == manifest_key(prefix) or is_part_key(prefix, key)


def md5_file(path: Path) -> str:
    """Return the hex MD5 of a local file's content (blocking; raises OSError)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()


def read_manifest(backend: Backend, prefix: str, key: str | None = None) -> dict[str, Entry]:
    """Return the manifest's entries by key (of the part `key`, if given): none if it is
    missing or unreadable (logged).

    Blocks; raises the backend's errors other than NotFound.
    """
    key = key or manifest_key(prefix)
    try:
        info = backend.stat(key)
        raw = backend.read(key, 0, info.size, info.etag)
    except NotFound:
        return {}
    try:
        document = json.loads(raw)
        if document.get("format") != _FORMAT or document.get("version") != _VERSION:
            raise ValueError(f"not a version {_VERSION} {_FORMAT}")
        entries = [Entry(**fields) for fields in document["objects"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring the manifest %s (%s): segmented objects will be uploaded again",
                    key, exc)
        return {}
    return {entry.key: entry for entry in entries}


def write_manifest(
    backend: Backend, prefix: str, entries: Iterable[Entry], segment_size: int,
    key: str | None = None,
) -> None:
    """Store `entries` as the manifest of `prefix` (as the part `key`, if given; blocking;
    raises the backend's errors)."""
    document = {
        "format": _FORMAT,
        "version": _VERSION,
        "objects": [asdict(entry) for entry in sorted(entries, key=lambda e: e.key)],
    }
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        tmp.write(json.dumps(document, indent=0).encode())
        tmp.flush()
        backend.put_file(key or manifest_key(prefix), Path(tmp.name), segment_size)
