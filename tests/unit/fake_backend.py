"""An in-process Backend for unit tests: a dict of objects, S3-like listing semantics.

Ranges (after, upto] and reverse listings work as Swift's do; `version` is the
container's change token (None: like S3, it has none).
"""

from pathlib import Path

from objmount.backends.base import ETagMismatch, ListPage, NotFound, ObjectInfo


class FakeBackend:
    """Objects in memory; pages of `page_size`; counts list requests; `fail` raises on list."""

    container = "fake"

    def __init__(self, objects: dict[str, bytes] | None = None, page_size: int = 1000,
                 version: str | None = None) -> None:
        self.objects = dict(objects or {})
        self.page_size = page_size
        self.list_calls = 0
        self.fail: Exception | None = None
        self.version = version

    def container_version(self) -> str | None:
        if self.fail:
            raise self.fail
        return self.version

    def describe(self) -> str:
        return "fake container"

    def info(self, key: str) -> ObjectInfo:
        data = self.objects[key]
        return ObjectInfo(key=key, size=len(data), etag=f"etag-{hash(data)}", mtime_ns=1)

    def check(self, prefix: str) -> None:
        return None

    def list_page(self, prefix: str, delimiter: str | None, token: str | None, *,
                  after: str | None = None, upto: str | None = None,
                  reverse: bool = False) -> ListPage:
        self.list_calls += 1
        if self.fail:
            raise self.fail
        entries: list[tuple[str, bool]] = []  # (key or prefix, is_prefix)
        # The token is the last key or prefix of the previous page, as a Swift marker;
        # ending in the delimiter, it is a prefix unless it is the listed directory's
        # own marker object (the token equals `prefix`), whose keys are still to come.
        marker = token or after
        under = token if token and delimiter and token.endswith(delimiter) \
            and len(token) > len(prefix) else None
        for key in sorted(self.objects, reverse=reverse):
            if not key.startswith(prefix) or (upto is not None and key > upto):
                continue
            if marker is not None and ((key >= marker) if reverse else (key <= marker)):
                continue
            if under is not None and key.startswith(under):
                continue
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = key[: cut + 1]
                if not entries or entries[-1] != (common, True):
                    entries.append((common, True))
            else:
                entries.append((key, False))
        page = entries[: self.page_size]
        more = len(entries) > self.page_size
        return ListPage(
            objects=[self.info(k) for k, is_prefix in page if not is_prefix],
            prefixes=[k for k, is_prefix in page if is_prefix],
            next_token=page[-1][0] if more else None,
        )

    def stat(self, key: str) -> ObjectInfo:
        if key not in self.objects:
            raise NotFound(key)
        return self.info(key)

    def read(self, key: str, start: int, end: int, etag: str | None) -> bytes:
        info = self.stat(key)
        if etag and etag != info.etag:
            raise ETagMismatch(key)
        return self.objects[key][start:end]

    def create_container(self) -> None:
        return None

    def put_file(self, key: str, path: Path, segment_size: int, **options: object) -> None:
        self.objects[key] = path.read_bytes()

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)


class TreeOrderBackend(FakeBackend):
    """A FakeBackend whose StartAfter reads as SeaweedFS's does: one that names a
    directory ("a/b", with "a/b/..." keys) starts after that directory's whole subtree,
    as a listing that walks a tree of directories does (S3 compares keys as strings)."""

    def list_page(self, prefix: str, delimiter: str | None, token: str | None, *,
                  after: str | None = None, upto: str | None = None,
                  reverse: bool = False) -> ListPage:
        if token is None and after is not None and not reverse:
            subtree = [key for key in self.objects if key.startswith(after + "/")]
            after = max(subtree, default=after)
        return super().list_page(prefix, delimiter, token, after=after, upto=upto,
                                 reverse=reverse)

