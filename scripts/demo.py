"""The embedded-default demo: a local S3 server, a sample dataset, a mount, reads through it.

Run by `bash scripts/dev.sh demo`. Everything it starts (server, mount) is
stopped in a `finally`, so Ctrl-C at any point leaves nothing behind.
"""

import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers.s3_server import MotoS3Server

CLASSES = [f"class_{i:02d}" for i in range(11)]


def sample_dataset() -> dict[str, bytes]:
    """A small Food-11-shaped tree: splits, class directories, JPEG-sized files."""
    rng = random.Random(11)
    return {
        f"{split}/{cls}/{i:04d}.jpg": rng.randbytes(rng.randrange(20_000, 120_000))
        for split, count in (("training", 12), ("validation", 4), ("evaluation", 4))
        for cls in CLASSES
        for i in range(count)
    }


def objmount(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "objmount", *args], check=True)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="objmount-demo-"))
    mountpoint = work / "mnt"
    mountpoint.mkdir()
    server = MotoS3Server(work / "s3.log")
    mounted = False
    try:
        print("starting a local S3 server on 127.0.0.1 ...")
        server.start()
        config = work / "rclone.conf"
        config.write_text(server.rclone_section("demo"))
        dataset = sample_dataset()
        client = server.client()
        client.create_bucket(Bucket="food11")
        for key, data in dataset.items():
            client.put_object(Bucket="food11", Key=key, Body=data)
        print(f"loaded {len(dataset)} objects into demo:food11")

        objmount("demo:food11", str(mountpoint), "--config", str(config), "--daemon")
        mounted = True
        print(f"mounted demo:food11 on {mountpoint}")
        started = time.monotonic()
        count = size = 0
        for root, _, files in os.walk(mountpoint):
            for name in files:
                path = Path(root) / name
                key = str(path.relative_to(mountpoint))
                data = path.read_bytes()
                if hashlib.sha256(data).digest() != hashlib.sha256(dataset[key]).digest():
                    raise SystemExit(f"demo: bytes differ for {key}")
                count, size = count + 1, size + len(data)
        elapsed = time.monotonic() - started
        print(f"read {count} files ({size / 1e6:.1f} MB) through the mount in {elapsed:.2f}s: "
              f"{count / elapsed:.0f} files/s, every sha256 matches")
        if count != len(dataset):
            raise SystemExit(f"demo: found {count} files, expected {len(dataset)}")
    finally:
        if mounted:
            objmount("umount", str(mountpoint))
            print("unmounted")
        server.stop()
        print("stopped the S3 server")


if __name__ == "__main__":
    main()
