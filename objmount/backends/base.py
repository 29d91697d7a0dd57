"""The backend interface: a few blocking operations on one container.

A backend speaks to one container of one object store. Its methods block (they
wrap an SDK) and must only be called through `objmount.backends.runner.Runner`,
never on the trio thread. They raise only the errors defined here, never an
SDK's: `BackendError.transient` tells the runner whether a retry can help.

An object is its key plus its ETag: a read names the ETag it expects, and the
backend fails with ETagMismatch rather than return bytes of another version.
"""

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from objmount.errors import ObjmountError


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object: full key, size in bytes, ETag (unquoted), mtime in ns."""

    key: str
    size: int
    etag: str
    mtime_ns: int

    @property
    def version(self) -> str:
        """Which version of the object this is: its ETag; without one, size and mtime.

        The one rule for "same bytes": block keys (cache/blocks.py) and the kernel's
        page cache (pagecache.py) both compare versions this way, so an object
        without an ETag is never taken for unchanged just because "" == "".
        """
        return self.etag or f"size={self.size},mtime_ns={self.mtime_ns}"


@dataclass(slots=True)
class ListPage:
    """One page of a listing: objects, prefixes, and the token of the next page (None: last).

    `prefixes` are directories, each ending in '/': the common prefixes of a
    delimiter listing, and, in any listing, directories the store declares by
    other means (Swift's `application/directory` objects without a trailing '/').
    """

    objects: list[ObjectInfo] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    next_token: str | None = None


class BackendError(ObjmountError):
    """A request failed; `transient` says whether retrying may succeed."""

    transient = False

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient


class NotFound(BackendError):
    """The object does not exist (any more)."""


class ContainerNotFound(BackendError):
    """The container (bucket) does not exist."""


class AuthFailed(BackendError):
    """The credentials were refused, or do not allow this operation."""


class Unreachable(BackendError):
    """The endpoint did not answer (refused, timed out, DNS failure)."""

    transient = True


class ETagMismatch(BackendError):
    """The object changed since it was opened: its ETag is not the one expected."""


T = TypeVar("T")
# How put_file runs each of its requests: a caller's retry policy, or once.
Retry = Callable[[Callable[[], T]], T]


def call_once(request: Callable[[], T]) -> T:
    """Run `request` once: the retry policy of a caller that retries nothing."""
    return request()


# Segments of one file that `put_file` uploads at once: rclone's --multi-thread-streams
# default, which the Food-11 tutorial also passes.
SEGMENT_STREAMS = 4


class Backend(Protocol):
    """Blocking operations on one container; see the module docstring for the rules."""

    container: str

    def describe(self) -> str:
        """Return a human name for the container, e.g. `s3 bucket 'x' at http://...`."""
        ...

    def check(self, prefix: str) -> None:
        """Verify that the credentials work and the container exists; one bounded attempt."""
        ...

    def list_page(self, prefix: str, delimiter: str | None, token: str | None, *,
                  after: str | None = None, upto: str | None = None,
                  reverse: bool = False) -> ListPage:
        """Return one page of the objects under `prefix`; `token` continues a listing.

        `after` and `upto` keep the keys (and prefixes) of a range (after, upto],
        for a listing split into ranges listed in parallel; a page cut at `upto`
        has no next_token. `reverse`: the last keys first (Swift; S3 raises
        BackendError). Raises BackendError.
        """
        ...

    def container_version(self) -> str | None:
        """Return what the store says about the container's content as one string, to
        compare with a later answer: Swift's object count, bytes used and put
        timestamp (eventually consistent, blind to a same-size overwrite); None for a
        store without such a token (S3). One HEAD; raises BackendError."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Return the object's metadata (a HEAD request); raises NotFound."""
        ...

    def read(self, key: str, start: int, end: int, etag: str | None) -> bytes | bytearray:
        """Return bytes [start, end) of the object, which must still have `etag` if given
        (a bytearray where that saves copying it: callers never change it)."""
        ...

    # Writes: used by `objmount etl load`, never by a mount.

    def create_container(self) -> None:
        """Create the container; no error if it already exists."""
        ...

    def put_file(self, key: str, path: Path, segment_size: int, *, md5: str | None = None,
                 absent: bool = False, retry: Retry = call_once) -> None:
        """Upload a local file as `key`; above `segment_size` bytes, in parallel segments
        (S3 multipart upload, Swift Static Large Object) of that size.

        `md5`: the file's hex MD5 if the caller has it (S3 sends it for the server
        to check). `absent`: the caller listed no `key` (Swift then skips the HEAD
        that finds an old object's segments). Each request runs through `retry`,
        so a failed segment is sent again, not the whole file.
        """
        ...

    def delete(self, key: str) -> None:
        """Delete `key` (and a segmented object's segments); no error if it is missing."""
        ...


# Internal, for tests only: list in pages of this many entries (Swift; S3 keeps its 1,000
# unless smaller), so a test splits a listing into ranges without 100,000 objects.
PAGE_SIZE_ENV = "OBJMOUNT_TEST_LIST_PAGE_SIZE"


def listing_page_size_override() -> int | None:
    """The page size the test-only PAGE_SIZE_ENV asks for, or None."""
    text = os.environ.get(PAGE_SIZE_ENV, "")
    return int(text) if text.isdigit() and int(text) > 0 else None


def cut_page(page: ListPage, upto: str) -> ListPage:
    """Return `page` without the keys and prefixes past `upto` (no next page if any was).

    For a store that cannot end a listing at a key (S3): the range's last page.
    Keys compare by code point, which is UTF-8 byte order, the stores' own.
    """
    objects = [obj for obj in page.objects if obj.key <= upto]
    prefixes = [prefix for prefix in page.prefixes if prefix <= upto]
    if len(objects) == len(page.objects) and len(prefixes) == len(page.prefixes):
        return page
    return ListPage(objects=objects, prefixes=prefixes, next_token=None)


def list_all(backend: Backend, prefix: str, delimiter: str | None) -> Iterator[ListPage]:
    """Yield every page of a listing, following continuation tokens (blocking)."""
    token: str | None = None
    while True:
        page = backend.list_page(prefix, delimiter, token)
        yield page
        if page.next_token is None:
            return
        token = page.next_token
