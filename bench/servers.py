"""The benchmark's S3 server: SeaweedFS (`weed server -s3`) on 127.0.0.1 only.

SeaweedFS serves ranged GETs about as fast as whole ones (moto, used by the
tests, is ~10x slower on ranges, which would measure moto, not the mounts).
Its data directory persists between runs so the data set is uploaded once; the
credentials are made up per run and exist only in its s3 config file.
"""

import json
import secrets
import subprocess
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions

from bench import procs

REGION = "us-east-1"


class SeaweedS3:
    """A single-node SeaweedFS (master, volume, filer, S3 gateway) with S3 auth on."""

    def __init__(self, weed: Path, data_dir: Path, run_dir: Path) -> None:
        self.weed = weed
        self.data_dir = data_dir
        self.run_dir = run_dir
        self.access_key = "bench-" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(20)
        self.port = 0
        self.ports: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> "SeaweedS3":
        """Start the server and wait until it accepts a signed PUT (volumes registered)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        s3_config = self.run_dir / "weed-s3.json"
        s3_config.write_text(json.dumps({"identities": [{
            "name": "bench",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))
        s3_config.chmod(0o600)
        master, volume, filer, self.port = (procs.free_port_with_grpc() for _ in range(4))
        self.ports = [p + grpc for p in (master, volume, filer, self.port) for grpc in (0, 10000)]
        args = [
            str(self.weed), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-dir={self.data_dir}", f"-master.port={master}", f"-volume.port={volume}",
            "-filer", f"-filer.port={filer}", "-s3", f"-s3.port={self.port}",
            f"-s3.config={s3_config}",
            # Nothing here talks to a host but 127.0.0.1: no usage reports to
            # SeaweedFS's public telemetry host (on by default, sent once 10 GiB
            # are stored); the Iceberg and Lance side ports (fixed 8181 and 9101
            # by default, so a second server would not start) stay closed.
            "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            # Small volumes: the data set spreads over several, as on a real cluster;
            # 0 = as many volumes as the free disk allows.
            "-master.volumeSizeLimitMB=1024", "-volume.max=0",
        ]
        self.proc = procs.spawn(args, self.run_dir / "weed.log")
        procs.wait_until(self._accepts_writes, timeout_s, "SeaweedFS S3",
                         alive=lambda: self.proc is not None and self.proc.poll() is None)
        return self

    def _accepts_writes(self) -> bool:
        if not procs.port_open(self.port):
            return False
        client = self.client()
        try:
            buckets = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            if "bench-ready" not in buckets:
                client.create_bucket(Bucket="bench-ready")
            client.put_object(Bucket="bench-ready", Key="probe", Body=b"ok")
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
            return False
        return True

    def client(self, endpoint: str | None = None, pool: int = 32):
        """Return a boto3 S3 client for this server (or for `endpoint`, e.g. the relay)."""
        return boto3.client(
            "s3", endpoint_url=endpoint or self.endpoint, region_name=REGION,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=botocore.config.Config(
                max_pool_connections=pool, retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL (weed's own shutdown retries for minutes).

        Uploads finished long before, and the next run checks the listing
        against the manifest anyway, so a kill loses nothing that matters.
        """
        procs.stop(self.proc, timeout_s=3)
        # Its gRPC unix sockets (/tmp/seaweedfs-<service>-<port>.sock) outlive a kill.
        for port in self.ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def version(self) -> str:
        out = subprocess.run([str(self.weed), "version"], capture_output=True, text=True,
                             check=False).stdout
        # "version 8000GB 4.48 pypi linux amd64": the release is the dotted word.
        return next((w for w in out.split() if w[:1].isdigit() and "." in w), "?")
