"""Checks of what a load left in a bucket: every file, its size and an ETag its bytes explain.

A single-part object's ETag is the MD5 of its content; a multipart one's
(`HEX-N`) is the MD5 of its N parts' MD5s, so the part size is the one MiB
multiple that splits the file into N parts (rclone's 5 MiB chunks, objmount's
64 MiB segments), and the ETag is recomputed from the local file with it.
Local digests are cached: the same files are checked after every load.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from objmount.etl.load import LocalFile
from objmount.etl.manifest import MANIFEST_NAME

MIB = 1 << 20
READ_BYTES = 8 * MIB


def read_all(files: list[LocalFile]) -> None:
    """Read every file once, so each tool reads them from the page cache, not the disk."""
    for file in files:
        with open(file.path, "rb") as f:
            while f.read(READ_BYTES):
                pass


class Digests:
    """MD5s of local files, whole or per part, computed once."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Path, int], str] = {}

    def etag(self, file: LocalFile, part_bytes: int) -> str:
        """The ETag of `file` uploaded in parts of `part_bytes` (0: in one PUT)."""
        key = (file.path, part_bytes)
        if key not in self._cache:
            self._cache[key] = _etag(file, part_bytes)
        return self._cache[key]

    def matches(self, file: LocalFile, etag: str) -> bool:
        """True if `etag` is what S3 lists for `file`'s bytes, in one part or in N."""
        if "-" not in etag:
            return etag == self.etag(file, 0)
        parts = int(etag.rsplit("-", 1)[1])
        part_bytes = next((m * MIB for m in range(1, file.size // MIB + 2)
                           if -(-file.size // (m * MIB)) == parts), 0)
        return part_bytes > 0 and etag == self.etag(file, part_bytes)


def _etag(file: LocalFile, part_bytes: int) -> str:
    step = part_bytes or max(file.size, 1)
    parts = []
    with open(file.path, "rb") as f:
        for offset in range(0, max(file.size, 1), step):
            part = hashlib.md5(usedforsecurity=False)
            left = min(step, file.size - offset)
            while left > 0 and (chunk := f.read(min(READ_BYTES, left))):
                part.update(chunk)
                left -= len(chunk)
            parts.append(part)
    if not part_bytes:
        return parts[0].hexdigest()
    joined = b"".join(p.digest() for p in parts)
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(parts)}"


@dataclass(frozen=True)
class Listed:
    """One listed object: size, ETag (unquoted), last-modified time."""

    size: int
    etag: str
    modified: datetime


def listing(client, bucket: str) -> dict[str, Listed]:
    """Every object in `bucket` but objmount's manifest (a boto3 client, straight to the server)."""
    out: dict[str, Listed] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", ()):
            if not o["Key"].endswith(MANIFEST_NAME):
                out[o["Key"]] = Listed(o["Size"], o["ETag"].strip('"'), o["LastModified"])
    return out


def problems(listed: dict[str, Listed], files: list[LocalFile], digests: Digests) -> list[str]:
    """What is wrong with `listed` as a copy of `files`: missing, extra, wrong size or ETag."""
    wrong = [f"extra {key}" for key in sorted(listed.keys() - {f.key for f in files})]
    for file in files:
        info = listed.get(file.key)
        if info is None:
            wrong.append(f"missing {file.key}")
        elif info.size != file.size:
            wrong.append(f"{file.key}: {info.size} bytes, not {file.size}")
        elif not digests.matches(file, info.etag):
            wrong.append(f"{file.key}: ETag {info.etag} is not its content's")
    return wrong


def delete_bucket(client, bucket: str) -> None:
    """Delete every object of `bucket`, then the bucket (frees the server's disk)."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=bucket)
