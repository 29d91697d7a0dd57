"""The test suite's view of a running object store, the same for every backend.

Each store knows how to write an rclone.conf section for itself and how to
put objects with its own SDK, independently of objmount's code under test.
"""

from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from tests.servers.s3_server import MotoS3Server


class TestStore(Protocol):
    """A real server the tests fill and objmount mounts."""

    __test__ = False  # a protocol, not a test class

    kind: str

    def rclone_section(self, name: str, **overrides: str) -> str: ...
    def create_container(self, container: str) -> None: ...
    def put(self, container: str, key: str, data: bytes) -> None: ...
    def delete(self, container: str, key: str) -> None: ...


def put_many(store: TestStore, container: str, objects: dict[str, bytes]) -> None:
    """Upload many objects with 16 parallel requests."""
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda item: store.put(container, *item), objects.items()))


class S3Store:
    """moto's S3 server."""

    kind = "s3"

    def __init__(self, server: MotoS3Server) -> None:
        self.server = server
        self.client = server.client()

    def rclone_section(self, name: str, **overrides: str) -> str:
        return self.server.rclone_section(name, **overrides)

    def create_container(self, container: str) -> None:
        self.client.create_bucket(Bucket=container)

    def put(self, container: str, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=container, Key=key, Body=data)

    def delete(self, container: str, key: str) -> None:
        self.client.delete_object(Bucket=container, Key=key)
