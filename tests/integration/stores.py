"""The test suite's view of a running object store, the same for every backend.

Each store knows how to write an rclone.conf section for itself and how to
put, read and list objects with its own SDK, independently of objmount's code
under test.
"""

import io
import json
import tarfile
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol
from urllib.parse import quote

import requests

from tests.servers import rclone_conf
from tests.servers.fault_proxy import FaultProxy
from tests.servers.s3_server import MotoS3Server
from tests.servers.seaweed_server import SeaweedServer
from tests.servers.swift_stack import SwiftStack


class TestStore(Protocol):
    """A real server the tests fill and objmount mounts."""

    __test__ = False  # a protocol, not a test class

    kind: str
    # The port that serves object requests (GET, HEAD, listings), for a relay in front.
    data_port: int

    def rclone_section(self, name: str, **overrides: str) -> str: ...
    def rclone_section_through(self, name: str, url: str) -> str:
        """A section whose object requests go to `url` (a relay), credentials unchanged."""
        ...
    def object_path(self, container: str, key: str) -> str:
        """The URL path of a request for the object (as objmount sends it)."""
        ...
    def create_container(self, container: str) -> None: ...
    def put(self, container: str, key: str, data: bytes,
            content_encoding: str | None = None) -> None:
        """Store `data` as is; `content_encoding` is stored as the object's Content-Encoding."""
        ...
    def delete(self, container: str, key: str) -> None: ...
    def get(self, container: str, key: str) -> bytes: ...
    def keys(self, container: str) -> set[str]: ...


def put_many(store: TestStore, container: str, objects: dict[str, bytes]) -> None:
    """Upload many objects: the store's own bulk way if it has one, else 16 requests at once."""
    bulk = getattr(store, "put_many", None)
    if bulk is not None:
        bulk(container, objects)
        return
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda item: store.put(container, *item), objects.items()))


def gets_seen(proxy: FaultProxy, store: TestStore, container: str,
              keys: Iterable[str]) -> list[str]:
    """The keys (of `keys`) of the object GETs a relay in front of `store` saw, in order."""
    by_path = {store.object_path(container, key): key for key in keys}
    return [by_path[path] for e in list(proxy.exchanges)
            if e.method == "GET" and (path := e.target.split("?")[0]) in by_path]


def get_many(store: TestStore, container: str, keys: Iterable[str]) -> dict[str, bytes]:
    """Download many objects with 16 parallel requests; return their contents by key."""
    keys = list(keys)
    with ThreadPoolExecutor(16) as pool:
        return dict(zip(keys, pool.map(lambda key: store.get(container, key), keys), strict=True))


class S3Store:
    """An S3 server: moto's, or SeaweedFS's gateway."""

    kind = "s3"

    def __init__(self, server: MotoS3Server | SeaweedServer) -> None:
        self.server = server
        self.client = server.client()
        self.data_port = server.port

    def rclone_section(self, name: str, **overrides: str) -> str:
        return self.server.rclone_section(name, **overrides)

    def rclone_section_through(self, name: str, url: str) -> str:
        return self.server.rclone_section(name, endpoint=url)

    def object_path(self, container: str, key: str) -> str:
        return f"/{container}/{quote(key, safe='/~')}"  # path style, as with any endpoint

    def create_container(self, container: str) -> None:
        self.client.create_bucket(Bucket=container)

    def put(self, container: str, key: str, data: bytes,
            content_encoding: str | None = None) -> None:
        extra = {"ContentEncoding": content_encoding} if content_encoding else {}
        self.client.put_object(Bucket=container, Key=key, Body=data, **extra)

    def delete(self, container: str, key: str) -> None:
        self.client.delete_object(Bucket=container, Key=key)

    def get(self, container: str, key: str) -> bytes:
        return self.client.get_object(Bucket=container, Key=key)["Body"].read()

    def keys(self, container: str) -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=container)
        return {o["Key"] for page in pages for o in page.get("Contents", ())}


class SwiftStore:
    """The Swift + Keystone stack, through python-swiftclient (one connection per thread)."""

    kind = "swift"
    BULK_MIN = 1000  # fewer objects go one request each
    ARCHIVES = 8  # archives unpacked in parallel

    def __init__(self, stack: SwiftStack) -> None:
        self.stack = stack
        self.data_port = stack.port("proxy")
        self._local = threading.local()

    @property
    def swift(self):
        if not hasattr(self._local, "swift"):
            self._local.swift = self.stack.swift_connection()
        return self._local.swift

    def rclone_section(self, name: str, **overrides: str) -> str:
        _, values = rclone_conf.parse(self.stack.rclone_conf_section(name))
        return rclone_conf.section(name, values | overrides)

    def rclone_section_through(self, name: str, url: str) -> str:
        # Keystone is asked directly; the storage URL (the proxy's) goes through `url`.
        return self.rclone_section(
            name, storage_url=self.stack.storage_url.replace(self.stack.proxy_url, url))

    def object_path(self, container: str, key: str) -> str:
        account = self.stack.storage_url.removeprefix(self.stack.proxy_url)
        return f"{account}/{quote(container)}/{quote(key)}"

    def create_container(self, container: str) -> None:
        self.swift.put_container(container)

    def put(self, container: str, key: str, data: bytes,
            content_encoding: str | None = None) -> None:
        if "/./" in f"/{key}" or "/../" in f"/{key}":
            assert content_encoding is None
            self._put_raw(container, key, data)
        else:
            headers = {"Content-Encoding": content_encoding} if content_encoding else None
            self.swift.put_object(container, key, data, headers=headers)

    def put_many(self, container: str, objects: dict[str, bytes]) -> None:
        """Upload many objects; above BULK_MIN of them, as tar archives Swift unpacks.

        Each PUT through the proxy costs a token validation and five server hops
        (~25 per second on two cores); an archive costs one validation, and the
        proxy stores its files one after the other, so a few go in parallel.
        """
        plain = {k: v for k, v in objects.items() if _tar_safe(k)}
        rest = {k: v for k, v in objects.items() if k not in plain}
        if len(plain) < self.BULK_MIN:
            plain, rest = {}, objects
        items = list(plain.items())
        with ThreadPoolExecutor(16) as pool:
            archives = [items[i :: self.ARCHIVES] for i in range(self.ARCHIVES)]
            jobs = [pool.submit(self._extract, container, a) for a in archives if a]
            jobs += [pool.submit(self.put, container, k, v) for k, v in rest.items()]
            for job in jobs:
                job.result()

    def _extract(self, container: str, items: list[tuple[str, bytes]]) -> None:
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for key, data in items:
                member = tarfile.TarInfo(key)
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
        url, token = self.swift.get_auth()
        response = requests.put(
            f"{url}/{quote(container)}?extract-archive=tar", data=archive.getvalue(),
            headers={"X-Auth-Token": token, "Accept": "application/json"}, timeout=600,
        )
        response.raise_for_status()
        result = json.loads(response.text)
        # An object server that timed out under load fails a few files (503): those are
        # sent again one by one; any other shortfall is a failure.
        failed = {name.removeprefix(f"{container}/") for name, _ in result.get("Errors", [])}
        assert result["Number Files Created"] + len(failed) == len(items), result
        for key, data in items:
            if key in failed:
                self.put(container, key, data)

    def _put_raw(self, container: str, key: str, data: bytes) -> None:
        """PUT a key with '.' or '..' segments, which URL normalization would remove.

        requests (urllib3) drops dot segments from a URL's path; percent-encoded
        dots reach Swift, which stores the key as written.
        """
        path = "/".join(
            {".": "%2E", "..": "%2E%2E"}.get(part, quote(part)) for part in key.split("/")
        )
        url, token = self.swift.get_auth()
        response = requests.put(f"{url}/{quote(container)}/{path}", data=data,
                                headers={"X-Auth-Token": token}, timeout=30)
        response.raise_for_status()

    def delete(self, container: str, key: str) -> None:
        self.swift.delete_object(container, key)

    def get(self, container: str, key: str) -> bytes:
        return self.swift.get_object(container, key)[1]

    def keys(self, container: str) -> set[str]:
        _, entries = self.swift.get_container(container, full_listing=True)
        return {entry["name"] for entry in entries}


def _tar_safe(key: str) -> bool:
    """Whether Swift's archive extraction stores `key` unchanged (no empty or dot segments)."""
    return all(part not in ("", ".", "..") for part in key.split("/")) and key.isascii()
