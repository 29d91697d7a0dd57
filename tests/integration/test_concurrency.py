"""A slow request never stalls the rest of the mount: other reads, `ls` and `stat` go on."""

import os
import threading
import time
from pathlib import Path

import pytest

from tests.integration.mounting import mounted
from tests.servers.fault_proxy import FaultProxy, Rule
from tests.servers.s3_server import MotoS3Server

pytestmark = pytest.mark.mount

DELAY_S = 6.0


def test_a_slow_get_does_not_block_other_requests(
    moto_server: MotoS3Server, tmp_path: Path
) -> None:
    client = moto_server.client()
    client.create_bucket(Bucket="slowpoke")
    client.put_object(Bucket="slowpoke", Key="slow.bin", Body=b"s" * 4096)
    client.put_object(Bucket="slowpoke", Key="fast.bin", Body=b"f" * 4096)
    proxy = FaultProxy(moto_server.port, [Rule(path="^/slowpoke/slow.bin$", delay_s=DELAY_S)])
    proxy.start()
    config = tmp_path / "rclone.conf"
    config.write_text(
        moto_server.rclone_section("remote", endpoint=f"http://127.0.0.1:{proxy.port}")
    )
    try:
        # The stall rule (--contimeout / 2) is held above the delay: the slow GET is slow,
        # not stalled (retried), which test_faults_relay.py covers.
        with mounted("remote:slowpoke", tmp_path / "mnt", config,
                     "--contimeout", f"{4 * DELAY_S:g}s") as mount:
            os.listdir(mount.path)
            slow = threading.Thread(target=(mount.path / "slow.bin").read_bytes)
            slow.start()
            time.sleep(0.5)  # the slow GET is now in flight
            started = time.monotonic()
            assert (mount.path / "fast.bin").read_bytes() == b"f" * 4096
            assert sorted(os.listdir(mount.path)) == ["fast.bin", "slow.bin"]
            assert os.stat(mount.path / "slow.bin").st_size == 4096
            assert time.monotonic() - started < DELAY_S / 2
            assert slow.is_alive()
            slow.join(timeout=DELAY_S * 3)
    finally:
        proxy.stop()
