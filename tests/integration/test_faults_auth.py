"""Auth faults (Swift + Keystone): Keystone down or blackholed just when a token must be
renewed; Keystone and the start-up check slower than the stall window.

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
from tests.integration.fault_kit import (
    EIO_BOUND_S,
    FAST,
    RECOVERY_BOUND_S,
    STALL_S,
    eio_within,
)
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


def test_keystone_and_the_start_up_check_slower_than_the_stall_window_still_mount(
    swift_stack: SwiftStack, tmp_path: Path,
) -> None:
    """A token and the mount's first HEAD each answer 1.5 stall windows late (a loaded
    Keystone, a loaded proxy). No retry follows either, so each waits for its answer as
    a retry does (up to --timeout/2), where a stall would have failed the mount."""
    stack = swift_stack
    store = SwiftStore(stack)
    store.create_container("slow-start")
    store.put("slow-start", "f.bin", content := data("slow-start", 1000))
    with FaultProxy(stack.port("keystone")) as keystone, \
            FaultProxy(stack.port("proxy")) as proxy:
        tokens = keystone.add(Rule(method="POST", path=r"/v3/auth/tokens$",
                                   delay_s=1.5 * STALL_S))
        check = proxy.add(Rule(method="HEAD", times=1, delay_s=1.5 * STALL_S))
        conf = tmp_path / "rclone.conf"
        conf.write_text(store.rclone_section(
            "slow", auth=f"{keystone.url}/v3",
            storage_url=stack.storage_url.replace(stack.proxy_url, proxy.url)))
        # --contimeout as in FAST (a 1 s stall window); a --timeout whose half leaves a
        # loaded Keystone seconds beyond the delay.
        with mounted("slow:slow-start", tmp_path / "mnt", conf, "--contimeout",
                     f"{2 * STALL_S:g}s", "--timeout", "20s") as mount:
            assert (mount.path / "f.bin").read_bytes() == content
    assert tokens.applied >= 1 and check.applied == 1

