"""Auth faults (Swift + Keystone): Keystone down or blackholed just when a token must be renewed.

The second stack's tokens live TOKEN_LIFETIME_S; Keystone is reached through a
FaultProxy (the `auth` URL of the remote), Swift directly. A read that needs a
new token while Keystone is gone answers EIO within the deadline, and reads work
again as soon as Keystone is back. A token that expires between two blocks of
one read: test_swift.py's test_a_token_that_expires_between_two_blocks_of_one_read
(bounded there too).
"""

import time
from pathlib import Path

import pytest

from tests.integration.bounds import within
from tests.integration.conftest import TOKEN_LIFETIME_S, MiB, data
from tests.integration.fault_kit import EIO_BOUND_S, FAST, RECOVERY_BOUND_S, eio_within
from tests.integration.mounting import mounted
from tests.integration.stores import SwiftStore
from tests.servers.fault_proxy import FaultProxy, Rule
from tests.servers.swift_stack import SwiftStack

pytestmark = pytest.mark.mount


@pytest.mark.parametrize("outage", ["refused", "blackholed"])
def test_keystone_gone_while_a_token_needs_renewal_is_eio_then_reads_resume(
    short_token_stack: SwiftStack, tmp_path: Path, outage: str,
) -> None:
    stack = short_token_stack
    with FaultProxy(stack.port("keystone")) as keystone:
        conf = tmp_path / "rclone.conf"
        conf.write_text(SwiftStore(stack).rclone_section("short", auth=f"{keystone.url}/v3"))
        with mounted("short:tokens", tmp_path / "mnt", conf, *FAST) as mount:
            assert (mount.path / "f0.bin").read_bytes() == data("token-0", MiB)
            hole = keystone.add(Rule(hold=True)) if outage == "blackholed" else None
            if hole is None:
                keystone.go_down()
            time.sleep(TOKEN_LIFETIME_S + 1.5)  # the token expires: Swift refuses it
            eio_within(EIO_BOUND_S, f"Keystone {outage}, token expired", mount.path / "f1.bin")
            if hole is None:
                keystone.accept()
            else:
                keystone.remove(hole)
            with within(RECOVERY_BOUND_S, f"Keystone back after {outage}: reads work"):
                assert (mount.path / "f1.bin").read_bytes() == data("token-1", MiB + 1)
            assert "Keystone" in mount.log()
            assert "Traceback" not in mount.log()
