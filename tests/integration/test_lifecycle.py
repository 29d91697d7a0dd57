"""Mount lifecycle: --daemon, signals, `objmount umount`, and one-line errors before mounting."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from objmount.mountpoint import is_mounted
from tests.integration.mounting import MountProcess, force_unmount, mounted, objmount
from tests.integration.stores import TestStore
from tests.servers.net import wait_until

pytestmark = pytest.mark.mount

NOBODY = 65534


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """The command failed before mounting with exactly one line on stderr naming the problem."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# A test process that mounts, then waits: the suite's own `mounted`, as any test uses it.
HOLDER = """
import sys, time
from pathlib import Path
from tests.integration.mounting import mounted
with mounted("remote:dataset", Path(sys.argv[1]), Path(sys.argv[2])):
    print("mounted", flush=True)
    time.sleep(600)
"""


def test_a_test_process_killed_with_its_mount_up_leaves_no_mount(
    dataset: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    """SIGKILL runs no clean-up in the test process: the mount is told by the kernel
    (its parent died: PR_SET_PDEATHSIG) and unmounts itself."""
    mnt = tmp_path / "mnt"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(mnt), str(config)],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "mounted\n"
        assert is_mounted(mnt)
        holder.kill()
        holder.wait(timeout=15)
        wait_until(lambda: not is_mounted(mnt), 30, "the orphaned mount's unmount")
    finally:
        holder.kill()
        holder.wait()
        if is_mounted(mnt):
            force_unmount(mnt)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_unmounts_cleanly(
    dataset: dict[str, bytes], config: Path, tmp_path: Path, signum: int
) -> None:
    with mounted("remote:dataset", tmp_path / "mnt", config) as mount:
        os.kill(mount.proc.pid, signum)
        assert mount.proc.wait(timeout=15) == 0
        assert not is_mounted(mount.path)


@pytest.fixture(scope="module")
def shared_dir() -> Iterator[Path]:
    """A directory everyone may enter (pytest's own are 0700): another user reaching a
    mountpoint inside meets the mount's own permission check, not its parent's."""
    shared = Path(tempfile.mkdtemp(prefix="objmount-shared-"))
    shared.chmod(0o755)
    try:
        yield shared
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture(scope="module")
def allow_other_mount(
    dataset: dict[str, bytes], config: Path, shared_dir: Path
) -> Iterator[MountProcess]:
    """`dataset` mounted with --allow-other in `shared_dir`, once per module and backend,
    for the tests that only look at it."""
    with mounted("remote:dataset", shared_dir / f"allow-other-{config.parent.name}", config,
                 "--allow-other") as mount:
        yield mount


def test_allow_other_is_a_mount_option(allow_other_mount: MountProcess) -> None:
    options = next(
        line.split()[3] for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1] == str(allow_other_mount.path)
    )
    assert "allow_other" in options.split(",")


def read_as_nobody(path: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["cat", str(path)], capture_output=True,
                          preexec_fn=lambda: os.setuid(NOBODY), check=False)


def test_allow_other_lets_another_user_read(
    dataset: dict[str, bytes], allow_other_mount: MountProcess
) -> None:
    as_nobody = read_as_nobody(allow_other_mount.path / "nested" / "top.txt")
    assert as_nobody.stdout == dataset["nested/top.txt"]


def test_without_allow_other_another_user_is_denied(
    dataset: dict[str, bytes], config: Path, shared_dir: Path
) -> None:
    with mounted("remote:dataset", shared_dir / f"private-{config.parent.name}",
                 config) as mount:
        as_nobody = read_as_nobody(mount.path / "nested" / "top.txt")
        assert as_nobody.returncode != 0
        assert b"Permission denied" in as_nobody.stderr


def test_daemon_returns_once_mounted_and_umount_unmounts(
    dataset: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        result = objmount("remote:dataset", str(mnt), "--config", str(config), "--daemon")
        assert result.returncode == 0, result.stderr
        assert is_mounted(mnt)
        assert (mnt / "one.bin").read_bytes() == dataset["one.bin"]
        result = objmount("umount", str(mnt))
        assert result.returncode == 0, result.stderr
        assert not is_mounted(mnt)
    finally:
        force_unmount(mnt)


@pytest.mark.parametrize("shared", [False, True])
def test_allow_other_on_a_private_parent_mount_warns_once_with_the_docker_fix(
    dataset: dict[str, bytes], config: Path, tmp_path: Path, shared: bool
) -> None:
    parent = tmp_path / "parent"  # a mount of its own, whatever the host's / is
    mnt = parent / "mnt"
    mnt.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(parent), str(parent)], check=True)
    try:
        propagation = "--make-shared" if shared else "--make-private"
        subprocess.run(["mount", propagation, str(parent)], check=True)
        result = objmount("remote:dataset", str(mnt), "--config", str(config), "--allow-other",
                          "--daemon", "--log-file", str(tmp_path / "log"))
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if "warning" in line]
        if shared:
            assert warnings == []
        else:
            assert len(warnings) == 1, result.stderr
            assert "a private mount" in warnings[0] and "not a shared or slave mount" in warnings[0]
            assert f"sudo mount --make-shared {parent}" in warnings[0]
    finally:
        force_unmount(mnt)
        subprocess.run(["umount", str(parent)], check=False)


def test_daemon_reports_a_failed_mount(config: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = objmount("remote:no-such-bucket", str(mnt), "--config", str(config), "--daemon")
    assert_one_line_error(result, "no-such-bucket", "does not exist")
    assert not is_mounted(mnt)


def test_umount_of_a_busy_mount_detaches_lazily(
    dataset: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    with mounted("remote:dataset", tmp_path / "mnt", config) as mount:
        busy = open(mount.path / "one.bin", "rb")  # noqa: SIM115
        try:
            result = objmount("umount", str(mount.path))
            assert result.returncode == 0
            assert "busy" in result.stderr
            assert not is_mounted(mount.path)
        finally:
            busy.close()
        mount.proc.wait(timeout=15)


@pytest.mark.parametrize("store", ["s3"], indirect=True)  # boto3 is S3's SDK
def test_s3_with_static_keys_mounts_lists_and_reads_without_boto3s_client(
    store: TestStore, dataset: dict[str, bytes], config: Path, tmp_path: Path
) -> None:
    """Keys from rclone.conf at an endpoint: the start-up check, listings and GETs go the
    lean way, so boto3's client (~0.3 s of start-up, ~20 MB) is never made; botocore
    logs its creation at -vv."""
    with mounted("remote:dataset", tmp_path / "mnt", config, "-vv") as mount:
        assert sorted(os.listdir(mount.path / "nested" / "a")) == ["b", "sibling.txt"]
        assert (mount.path / "one.bin").read_bytes() == dataset["one.bin"]
        log = mount.log()
    assert " DEBUG " in log  # -vv (and the -v mounted() adds): every library's DEBUG lines
    assert "botocore" not in log


def test_umount_of_something_not_mounted_fails(tmp_path: Path) -> None:
    assert_one_line_error(objmount("umount", str(tmp_path)), "is not mounted")


class TestFailFast:
    """Each problem found before mounting: one line, exit code != 0, nothing mounted."""

    def run(self, spec: str, mnt: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
        was_mounted = is_mounted(mnt)
        started = time.monotonic()
        result = objmount(spec, str(mnt), "--config", str(config), *args, timeout_s=40)
        assert time.monotonic() - started < 30
        assert is_mounted(mnt) == was_mounted
        return result

    def test_wrong_credentials(self, store: TestStore, tmp_path: Path) -> None:
        conf = tmp_path / "rclone.conf"
        secret_key = "secret_access_key" if store.kind == "s3" else "application_credential_secret"
        conf.write_text(store.rclone_section("bad", **{secret_key: "Xwrong-secret-value"}))
        result = self.run("bad:dataset", tmp_path, conf)
        assert_one_line_error(result)
        assert "Xwrong-secret-value" not in result.stderr
        assert any(word in result.stderr.lower() for word in ("denied", "credential", "auth"))

    def test_missing_container(self, config: Path, tmp_path: Path) -> None:
        result = self.run("remote:no-such-bucket", tmp_path, config)
        assert_one_line_error(result, "no-such-bucket", "does not exist")

    def test_unreachable_endpoint(self, store: TestStore, tmp_path: Path) -> None:
        conf = tmp_path / "rclone.conf"
        key = "endpoint" if store.kind == "s3" else "auth"
        conf.write_text(store.rclone_section("down", **{key: "http://127.0.0.1:9/"}))
        result = self.run("down:dataset", tmp_path, conf, "--contimeout", "2s")
        assert_one_line_error(result, "127.0.0.1:9")

    def test_missing_mountpoint(self, config: Path, tmp_path: Path) -> None:
        result = self.run("remote:dataset", tmp_path / "absent", config)
        assert_one_line_error(result, "does not exist", "mkdir -p")

    def test_mountpoint_is_a_file(self, config: Path, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        result = self.run("remote:dataset", tmp_path / "file", config)
        assert_one_line_error(result, "not a directory")

    def test_mountpoint_already_mounted(
        self, allow_other_mount: MountProcess, config: Path
    ) -> None:
        result = self.run("remote:dataset", allow_other_mount.path, config)
        assert_one_line_error(result, "already a mount point")
        assert is_mounted(allow_other_mount.path)
        assert allow_other_mount.proc.poll() is None

    def test_unknown_remote(self, config: Path, tmp_path: Path) -> None:
        result = self.run("nosuch:dataset", tmp_path, config)
        assert_one_line_error(result, "'nosuch' is not configured", "remote")

    def test_unsupported_remote_type(self, tmp_path: Path) -> None:
        conf = tmp_path / "rclone.conf"
        conf.write_text("[ftp1]\ntype = ftp\nhost = example\n")
        result = self.run("ftp1:x", tmp_path, conf)
        assert_one_line_error(result, "type 'ftp'", "supported types")
