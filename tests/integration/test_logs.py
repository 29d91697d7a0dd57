"""The log of a real mount: private to the user, never written through a planted symlink, and
free of the credentials env_auth resolves, even at -vvv where the SDKs log every request."""

import os
import re
import stat
from pathlib import Path

import pytest

from objmount.mountpoint import is_mounted
from tests.integration.mounting import MountProcess, force_unmount, mounted, objmount
from tests.integration.stores import S3Store, SwiftStore, TestStore
from tests.integration.test_lifecycle import NOBODY, assert_one_line_error
from tests.servers.s3_server import MotoS3Server

pytestmark = pytest.mark.mount

# A Keystone fernet token: urlsafe base64 of version 0x80 and a timestamp, ~180 characters.
# swiftclient logs its first 16 characters only, which this does not match.
FERNET_TOKEN = re.compile(r"gAAAAAB[\w-]{30,}")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("daemon", [False, True], ids=["foreground", "daemon"])
def test_a_planted_log_symlink_is_refused_and_its_target_untouched(
    config: Path, tmp_path: Path, daemon: bool
) -> None:
    victim = tmp_path / "root-only"
    victim.write_text("root's own data\n")
    victim.chmod(0o600)
    link = tmp_path / "objmount.log"
    os.symlink(victim, link)
    os.lchown(link, NOBODY, NOBODY)  # planted by another user
    (tmp_path / "mnt").mkdir()
    result = objmount("remote:dataset", str(tmp_path / "mnt"), "--config", str(config),
                      "--log-file", str(link), *(["--daemon"] if daemon else []))
    assert_one_line_error(result, "--log-file", "objmount.log is a symlink (refused)")
    assert victim.read_text() == "root's own data\n" and mode(victim) == 0o600
    assert not is_mounted(tmp_path / "mnt")


def test_the_log_file_is_created_0600_in_the_foreground_and_by_the_daemon(
    dataset: dict[str, bytes], shared_mount: MountProcess, config: Path, tmp_path: Path
) -> None:
    assert (shared_mount.path / "one.bin").read_bytes() == dataset["one.bin"]
    assert mode(shared_mount.log_file) == 0o600  # the foreground mount's (mounting.mounted)
    mnt, log_file = tmp_path / "daemon-mnt", tmp_path / "daemon.log"
    mnt.mkdir()
    try:
        result = objmount("remote:dataset", str(mnt), "--config", str(config), "--daemon",
                          "--log-file", str(log_file), "-v", "--cache-dir",
                          str(tmp_path / "daemon-cache"))
        assert result.returncode == 0, result.stderr
        assert (mnt / "one.bin").read_bytes() == dataset["one.bin"]
        assert mode(log_file) == 0o600
        assert "mounted" in log_file.read_text()
        assert objmount("umount", str(mnt)).returncode == 0
    finally:
        force_unmount(mnt)


def s3_env_auth(server: MotoS3Server, token_of: str = "") -> tuple[str, dict[str, str]]:
    """An rclone.conf section with env_auth for moto, and AWS_* variables holding an assumed
    role's credentials (with another role session's token if `token_of` says so)."""
    key, secret, token = server.temporary_credentials()
    if token_of == "another session":
        token = server.temporary_credentials()[2]
    section = server.rclone_section("envauth", access_key_id="", secret_access_key="",
                                    env_auth="true")
    return section, {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
                     "AWS_SESSION_TOKEN": token}


def env_auth_remote(store: TestStore) -> tuple[str, dict[str, str], list[str], str]:
    """An rclone.conf section with env_auth, the variables it reads, the secrets among them,
    and a request header that carries a credential."""
    if isinstance(store, S3Store):
        section, env = s3_env_auth(store.server)
        secrets = [env["AWS_SECRET_ACCESS_KEY"], env["AWS_SESSION_TOKEN"]]
        return section, env, secrets, "x-amz-security-token"
    assert isinstance(store, SwiftStore)
    env = store.stack.openrc_env()
    return ("[envauth]\ntype = swift\nenv_auth = true\n", env,
            [env["OS_APPLICATION_CREDENTIAL_SECRET"]], "X-Auth-Token")


def test_env_auth_credentials_never_show_in_a_vvv_log(
    store: TestStore, dataset: dict[str, bytes], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    section, env, secrets, header = env_auth_remote(store)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    conf = tmp_path / "rclone.conf"
    conf.write_text(section)
    with mounted("envauth:dataset", tmp_path / "mnt", conf, "-vv") as mount:  # -v -vv: -vvv
        for name in ("one.bin", "m1-plus-1.bin", "nested/a/b/c/deep.txt"):
            assert (mount.path / name).read_bytes() == dataset[name]
        log = mount.log()
    assert header.lower() in log.lower(), "the SDKs did not log the requests' headers"
    for secret in secrets:
        assert secret not in log
    assert not FERNET_TOKEN.search(log)


def test_moto_refuses_another_sessions_token_so_the_token_is_sent(
    moto_server: MotoS3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Holds the test above to account: with env_auth, the session token reaches the store."""
    section, env = s3_env_auth(moto_server, token_of="another session")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    conf = tmp_path / "rclone.conf"
    conf.write_text(section)
    (tmp_path / "mnt").mkdir()
    result = objmount("envauth:any-bucket", str(tmp_path / "mnt"), "--config", str(conf),
                      "-vvv")
    assert result.returncode != 0
    assert "InvalidToken" in result.stderr or "denied" in result.stderr.lower(), result.stderr
    assert env["AWS_SESSION_TOKEN"] not in result.stderr
    assert env["AWS_SECRET_ACCESS_KEY"] not in result.stderr
