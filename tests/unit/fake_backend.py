"""An in-process Backend for unit tests: a dict of objects, S3-like listing semantics."""

from pathlib import Path

from objmount.backends.base import ETagMismatch, ListPage, NotFound, ObjectInfo


class FakeBackend:
    """Objects in memory; pages of `page_size`; counts list requests; `fail` raises on list."""

    container = "fake"

    def __init__(self, objects: dict[str, bytes] | None = None, page_size: int = 1000) -> None:
        self.objects = dict(objects or {})
        self.page_size = page_size
        self.list_calls = 0
        self.fail: Exception | None = None

    def describe(self) -> str:
        return "fake container"

    def info(self, key: str) -> ObjectInfo:
        data = self.objects[key]
        return ObjectInfo(key=key, size=len(data), etag=f"etag-{hash(data)}", mtime_ns=1)

    def check(self, prefix: str) -> None:
        return None

    def list_page(self, prefix: str, delimiter: str | None, token: str | None) -> ListPage:
        self.list_calls += 1
        if self.fail:
            raise self.fail
        entries: list[tuple[str, bool]] = []  # (key or prefix, is_prefix)
        for key in sorted(self.objects):
            if not key.startswith(prefix):
                continue
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = key[: cut + 1]
                if not entries or entries[-1] != (common, True):
                    entries.append((common, True))
            else:
                entries.append((key, False))
        start = int(token or 0)
        page = entries[start : start + self.page_size]
        more = start + self.page_size < len(entries)
        return ListPage(
            objects=[self.info(k) for k, is_prefix in page if not is_prefix],
            prefixes=[k for k, is_prefix in page if is_prefix],
            next_token=str(start + self.page_size) if more else None,
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
