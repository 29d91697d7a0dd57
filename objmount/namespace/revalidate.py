"""Is a snapshot still the container's listing? Swift's container HEAD and sampled pages.

Swift (and Ceph RGW's Swift API) answers a container HEAD with its object count,
bytes used and put timestamp (Backend.container_version). Those are eventually
consistent and blind to an overwrite of the same size, so a HEAD that shows no
change is followed by three pages of the recursive listing, compared entry by
entry with the database: the first page, the last (a reverse listing) and one
after a random known key. S3 has no such token: there a snapshot is trusted for
--snapshot-ttl, then re-listed (tree.py's freshness rules).

`sample_differs` runs its queries on the caller's thread (the namespace's reader),
yielding to trio every few hundred, and its requests through the runner.
"""

import random

import trio

from objmount.backends.base import Backend, ListPage
from objmount.backends.runner import Runner
from objmount.namespace.database import ROOT_INODE, ListingDB
from objmount.namespace.names import name_problem

# Entries compared between two checkpoints of the trio loop (~10 us each).
_BATCH = 256


def random_file_key(db: ListingDB, prefix: str, rng: random.Random) -> str | None:
    """The key of a random live file of the database (None if it has none)."""
    top = db.inodes()
    for _ in range(8):
        found = db.file_from(rng.randint(ROOT_INODE, top))
        if found is not None:
            return key_of(db, found, prefix)
    return None


def key_of(db: ListingDB, ino: int, prefix: str) -> str | None:
    """The object key of inode `ino`, from its parents' names (None if one is missing)."""
    parts = []
    while ino != ROOT_INODE:
        row = db.row(ino)
        if row is None:
            return None
        parts.append(row.name)
        ino = row.parent
    parts.reverse()
    return prefix + "/".join(parts)


async def sample_pages(backend: Backend, runner: Runner, prefix: str,
                       after: str | None) -> list[ListPage]:
    """The first page, the last page and the page after `after` of the recursive listing."""
    pages = [await runner.call(backend.list_page, prefix, None, None),
             await runner.call(backend.list_page, prefix, None, None, reverse=True)]
    if after is not None:
        pages.append(await runner.call(backend.list_page, prefix, None, None, after=after))
    return pages


async def sample_differs(db: ListingDB, prefix: str, pages: list[ListPage]) -> str | None:
    """Compare each object of `pages` with the database: return what differs (for the
    log line), or None if every one is there with its size and ETag.

    Objects under a directory the database never listed are not compared, nor are
    keys that are no file names, directory markers, or files hidden by a directory.
    """
    root = db.row(ROOT_INODE)
    dirs: dict[str, int | None] = {
        prefix: ROOT_INODE if root is not None and root.listed_at is not None else -1}
    compared = 0
    for page in pages:
        for obj in page.objects:
            compared += 1
            if compared % _BATCH == 0:
                await trio.sleep(0)
            *segments, leaf = obj.key[len(prefix):].split("/")
            if not leaf or any(name_problem(s) for s in (*segments, leaf)):
                continue
            parent = _dir_inode(db, dirs, prefix, segments)
            if parent is None:
                return f"{obj.key!r} is new"
            if parent < 0:
                continue  # a directory never listed
            row = db.lookup(parent, leaf)
            if row is None:
                return f"{obj.key!r} is new"
            if row.is_dir:
                continue
            if (row.size, row.etag) != (obj.size, obj.etag) or (
                    not obj.etag and row.mtime_ns != obj.mtime_ns):
                return f"{obj.key!r} changed"
    return None


def _dir_inode(db: ListingDB, dirs: dict[str, int | None], prefix: str,
               segments: list[str]) -> int | None:
    """The inode of the listed directory of `segments` under the root (memoized in
    `dirs` by key); None if it is missing, -1 if it or one above it was never listed."""
    key = prefix
    for segment in segments:
        parent, key = dirs[key], f"{key}{segment}/"
        if key not in dirs:
            row = db.lookup(parent, segment) if parent is not None and parent > 0 else None
            if parent is None or parent < 0:
                dirs[key] = parent
            elif row is None or not row.is_dir:
                dirs[key] = None
            else:
                dirs[key] = row.ino if row.listed_at is not None else -1
    return dirs[key]
