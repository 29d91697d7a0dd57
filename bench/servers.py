"""The benchmark's object stores, on 127.0.0.1 only: SeaweedFS (S3) and Swift + Keystone.

SeaweedFS (`weed server -s3`) serves ranged GETs about as fast as whole ones
(moto, used by the tests, is ~10x slower on ranges, which would measure moto,
not the mounts). Its data directory persists between runs so the data set is
uploaded once; the credentials are made up per run and exist only in its s3
config file.

Swift is the test suite's real Swift + Keystone stack (tests/servers/swift_stack.py),
started fresh under the run's directory (its identities live in one process's
memory, so it is not reused across runs), with 2 worker processes per server
and the proxy caching validated tokens, as a deployment does with memcached.

Each store gives the same few things to the harness: the port the latency
relay forwards to, an rclone.conf section (read by objmount and rclone alike)
whose data path goes through the relay, and an object client (`Objects`) for
uploads, listings and the direct-download limits, straight or through the relay.
"""

import json
import secrets
import subprocess
import threading
from importlib import metadata
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import boto3
import botocore.config
import botocore.exceptions

from bench import procs
from tests.servers import net

REGION = "us-east-1"
REMOTE = "bench"  # the rclone.conf section every mount and copy uses
BACKENDS = ("s3", "swift")
# How long the Swift proxy trusts a validated token (keystonemiddleware's
# token_cache_time): a deployment caches them in memcached; without it every
# request would also wait for Keystone.
SWIFT_TOKEN_CACHE_S = 300
# Worker processes per Swift server (proxy, object, container, account): the
# tests run one process each; deployments run several. On 2 cores, 2 workers
# served 165-170 small GETs/s to curl against 110 with one process.
SWIFT_WORKERS = 2


class Objects(Protocol):
    """The object operations the benchmark needs, on one container of one store."""

    container: str

    def sizes(self) -> dict[str, int]:
        """Every object's size, from a full listing."""
        ...

    def create(self) -> None:
        """Create the container if it does not exist."""
        ...

    def delete(self, key: str) -> None: ...

    def put(self, key: str, path: Path) -> None: ...

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes, or bytes [start, end) of it."""
        ...

    def curl_target(self, key: str) -> tuple[str, list[str]]:
        """A URL curl can GET for `key`, and the headers to send with it (secrets included)."""
        ...


class Store(Protocol):
    """A running object store the benchmark can relay to and mount."""

    backend: str  # "s3" | "swift"
    port: int  # where the latency relay forwards
    data_dir: Path  # the store's data (the upload marker lives here)

    def start(self) -> "Store": ...

    def stop(self) -> None: ...

    def describe(self) -> str:
        """What it is, for the report (name and version)."""
        ...

    def rclone_section(self, relay_port: int) -> str:
        """rclone.conf section REMOTE whose object requests go through the relay."""
        ...

    def objects(self, container: str, relay_port: int | None = None) -> Objects:
        """An object client for `container`, straight to the store or through the relay."""
        ...


class SeaweedS3:
    """A single-node SeaweedFS (master, volume, filer, S3 gateway) with S3 auth on."""

    backend = "s3"

    def __init__(self, weed: Path, data_dir: Path, run_dir: Path,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.weed = weed
        self.extra_args = extra_args  # more `weed server` flags (a later one wins)
        self.data_dir = data_dir
        self.run_dir = run_dir
        self.access_key = "bench-" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(20)
        self.port = 0
        # The filer, as weed's own clients (filer.copy) name it: "127.0.0.1:HTTP.GRPC" (its
        # gRPC port is not HTTP + 10000, the default they would assume).
        self.filer_address = ""
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
        # Its 4 services and their gRPC ports, all given explicitly, below the ephemeral
        # range (under pytest-xdist, from the worker's own slice: tests/servers/net.py).
        self.ports = []
        while len(self.ports) < 8:  # distinct, each free when picked
            if (port := net.free_port()) not in self.ports:
                self.ports.append(port)
        master, volume, filer, self.port, *grpc = self.ports
        self.filer_address = f"127.0.0.1:{filer}.{grpc[2]}"
        args = [
            str(self.weed), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-dir={self.data_dir}", f"-master.port={master}", f"-volume.port={volume}",
            "-filer", f"-filer.port={filer}", "-s3", f"-s3.port={self.port}",
            f"-master.port.grpc={grpc[0]}", f"-volume.port.grpc={grpc[1]}",
            f"-filer.port.grpc={grpc[2]}", f"-s3.port.grpc={grpc[3]}",
            f"-s3.config={s3_config}",
            # Nothing here talks to a host but 127.0.0.1: no usage reports to
            # SeaweedFS's public telemetry host (on by default, sent once 10 GiB
            # are stored); the Iceberg and Lance side ports (fixed 8181 and 9101
            # by default, so a second server would not start) stay closed.
            "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            # Small volumes: the data set spreads over several, as on a real cluster;
            # 0 = as many volumes as the free disk allows.
            "-master.volumeSizeLimitMB=1024", "-volume.max=0", *self.extra_args,
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

    def describe(self) -> str:
        return f"SeaweedFS {self.version()} (weed server -s3), 127.0.0.1"

    def rclone_section(self, relay_port: int) -> str:
        return (f"[{REMOTE}]\ntype = s3\nprovider = SeaweedFS\n"
                f"access_key_id = {self.access_key}\nsecret_access_key = {self.secret_key}\n"
                f"endpoint = http://127.0.0.1:{relay_port}\nregion = {REGION}\n")

    def objects(self, container: str, relay_port: int | None = None) -> "S3Objects":
        endpoint = f"http://127.0.0.1:{relay_port}" if relay_port else None
        return S3Objects(self.client(endpoint), container)


class S3Objects:
    """Objects of one bucket through a boto3 client (thread-safe)."""

    def __init__(self, client, container: str) -> None:
        self.client = client
        self.container = container

    def sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.container):
            sizes.update({o["Key"]: o["Size"] for o in page.get("Contents", ())})
        return sizes

    def create(self) -> None:
        existing = {b["Name"] for b in self.client.list_buckets().get("Buckets", [])}
        if self.container not in existing:
            self.client.create_bucket(Bucket=self.container)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.container, Key=key)

    def put(self, key: str, path: Path) -> None:
        with open(path, "rb") as f:
            self.client.put_object(Bucket=self.container, Key=key, Body=f)

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        args = {"Bucket": self.container, "Key": key}
        if start is not None and end is not None:
            args["Range"] = f"bytes={start}-{end - 1}"
        return self.client.get_object(**args)["Body"].read()

    def curl_target(self, key: str) -> tuple[str, list[str]]:
        url = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.container, "Key": key}, ExpiresIn=3600)
        return url, []


class SwiftServer:
    """The test suite's Swift + Keystone stack, with an application credential (the tutorial's)."""

    backend = "swift"

    def __init__(self, base_dir: Path) -> None:
        # Imported here: the stack's module is the suite's, and S3-only runs need none of it.
        from tests.servers.swift_stack import SwiftStack

        self.stack = SwiftStack(base_dir, token_cache_s=SWIFT_TOKEN_CACHE_S,
                                workers=SWIFT_WORKERS)
        self.port = self.stack.port("proxy")
        self.data_dir = base_dir

    def start(self) -> "SwiftServer":
        """Start the stack with the project's account created, and no worker remembering
        it missing.

        The stack's readiness probe HEADs the account before it exists; with
        several proxy workers, each caching in its own memory, the worker that
        answered kept "no such account" and refused object PUTs to a container
        another worker had just created. So: start, create the account (its
        first container PUT autocreates it), restart (caches empty; 4-7 s).
        """
        self.stack.start()
        self.stack.swift_connection().put_container("bench-ready")
        self.stack.stop()
        self.stack.start()
        return self

    def stop(self) -> None:
        self.stack.stop()

    def describe(self) -> str:
        versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("swift", "keystone"))
        return (f"OpenStack Swift + Keystone ({versions}; tests/servers/swift_stack.py), "
                f"127.0.0.1, {SWIFT_WORKERS} workers per server, proxy token cache "
                f"{SWIFT_TOKEN_CACHE_S} s")

    def storage_url(self, relay_port: int | None = None) -> str:
        """The project's account URL, through the relay if `relay_port` is given."""
        if relay_port is None:
            return self.stack.storage_url
        return f"http://127.0.0.1:{relay_port}/v1/AUTH_{self.stack.project_id}"

    def rclone_section(self, relay_port: int) -> str:
        # The tutorial's application-credential remote; Keystone is asked
        # directly, and storage_url replaces the catalog's proxy URL.
        return (self.stack.rclone_conf_section(REMOTE)
                + f"storage_url = {self.storage_url(relay_port)}\n")

    def objects(self, container: str, relay_port: int | None = None) -> "SwiftObjects":
        token = self.stack.app_cred_session().get_token()
        return SwiftObjects(self.storage_url(relay_port), token, container)


class SwiftObjects:
    """Objects of one container through python-swiftclient, one connection per thread."""

    def __init__(self, storage_url: str, token: str, container: str) -> None:
        self.storage_url = storage_url
        self.token = token
        self.container = container
        self._local = threading.local()

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            from swiftclient.client import Connection

            conn = Connection(preauthurl=self.storage_url, preauthtoken=self.token, retries=2)
            self._local.conn = conn
        return conn

    def sizes(self) -> dict[str, int]:
        _, listing = self._conn().get_container(self.container, full_listing=True)
        return {o["name"]: o["bytes"] for o in listing}

    def create(self) -> None:
        self._conn().put_container(self.container)

    def delete(self, key: str) -> None:
        self._conn().delete_object(self.container, key)

    def put(self, key: str, path: Path) -> None:
        with open(path, "rb") as f:
            self._conn().put_object(self.container, key, f, content_length=path.stat().st_size)

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        headers = {"Range": f"bytes={start}-{end - 1}"} if start is not None and end else {}
        return self._conn().get_object(self.container, key, headers=headers)[1]

    def curl_target(self, key: str) -> tuple[str, list[str]]:
        url = f"{self.storage_url}/{quote(self.container)}/{quote(key)}"
        return url, [f"X-Auth-Token: {self.token}"]


def make_store(backend: str, tools_weed: Path, state_dir: Path, run_dir: Path,
               weed_args: tuple[str, ...] = ()) -> Store:
    """The store of `backend`: SeaweedFS keeps `state_dir` between runs, Swift starts afresh.
    `weed_args`: more flags of SeaweedFS's server."""
    if backend == "s3":
        return SeaweedS3(tools_weed, state_dir, run_dir, weed_args)
    if backend == "swift":
        return SwiftServer(run_dir / "swift")
    raise ValueError(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
