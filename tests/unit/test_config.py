"""Remotes from rclone.conf and OBJMOUNT_CONFIG_* variables; targets from the command line."""

from pathlib import Path

import pytest

from objmount import log as logs
from objmount.backends import Timeouts, open_backend
from objmount.config import default_config_path, load_remotes, parse_target
from objmount.errors import ConfigError

TUTORIAL_CONF = """\
[chi_tacc]
type = swift
user_id = YOUR_USER_ID
application_credential_id = APP_CRED_ID
application_credential_secret = APP_CRED_SECRET
auth = https://chi.tacc.chameleoncloud.org:5000/v3
region = CHI@TACC

[minio]
type = s3
provider = Minio
access_key_id = AKIA
secret_access_key = s3cr3t-value
endpoint = http://127.0.0.1:9000
unknown_key = ignored
"""


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "rclone.conf"
    path.write_text(TUTORIAL_CONF)
    return path


def test_reads_every_section_of_an_rclone_conf(conf: Path) -> None:
    remotes = load_remotes(conf, env={})
    assert remotes["chi_tacc"].type == "swift"
    assert remotes["chi_tacc"].get("region") == "CHI@TACC"
    assert remotes["minio"].get("endpoint") == "http://127.0.0.1:9000"


def test_default_path_follows_rclone(tmp_path: Path) -> None:
    assert default_config_path({"RCLONE_CONFIG": "/x/r.conf"}) == Path("/x/r.conf")
    assert default_config_path({"XDG_CONFIG_HOME": "/cfg"}) == Path("/cfg/rclone/rclone.conf")


def test_rclone_config_variable_is_used_when_no_path_is_given(conf: Path) -> None:
    assert "minio" in load_remotes(None, env={"RCLONE_CONFIG": str(conf)})


def test_an_explicit_missing_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_remotes(tmp_path / "absent.conf", env={})


def test_an_implicit_missing_config_means_no_remotes(tmp_path: Path) -> None:
    assert load_remotes(None, env={"RCLONE_CONFIG": str(tmp_path / "absent")}) == {}


def test_environment_overrides_and_defines_remotes(conf: Path) -> None:
    env = {
        "OBJMOUNT_CONFIG_MINIO_ENDPOINT": "http://127.0.0.1:9999",
        "OBJMOUNT_CONFIG_ENVONLY_TYPE": "s3",
        "OBJMOUNT_CONFIG_ENVONLY_ACCESS_KEY_ID": "K",
        "RCLONE_CONFIG_IGNORED_TYPE": "s3",
    }
    remotes = load_remotes(conf, env=env)
    assert remotes["minio"].get("endpoint") == "http://127.0.0.1:9999"
    assert remotes["envonly"].type == "s3"
    assert remotes["envonly"].get("access_key_id") == "K"
    assert "ignored" not in remotes


def test_secrets_are_hidden_from_descriptions_and_logs(conf: Path) -> None:
    remote = load_remotes(conf, env={})["minio"]
    assert "s3cr3t-value" not in remote.describe()
    assert "s3cr3t-value" not in repr(remote)
    assert "access_key_id=AKIA" in remote.describe()
    assert logs.redact("signing with s3cr3t-value") == "signing with ***"


def test_a_broken_config_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.conf"
    path.write_text("type = s3 without a section\n")
    with pytest.raises(ConfigError, match="cannot parse config file"):
        load_remotes(path, env={})


@pytest.mark.parametrize(
    ("spec", "container", "prefix"),
    [
        ("minio:bucket", "bucket", ""),
        ("minio:bucket/", "bucket", ""),
        ("minio:bucket/a/b", "bucket", "a/b/"),
        ("minio:/bucket/a/b/", "bucket", "a/b/"),
    ],
)
def test_targets_name_a_container_and_a_prefix(
    conf: Path, spec: str, container: str, prefix: str
) -> None:
    target = parse_target(spec, load_remotes(conf, env={}))
    assert (target.remote.name, target.container, target.prefix) == ("minio", container, prefix)


def test_on_the_fly_remotes_take_credentials_from_the_environment() -> None:
    target = parse_target(":swift:data/train", {})
    assert target.remote.type == "swift"
    assert target.remote.flag("env_auth")
    assert (target.container, target.prefix) == ("data", "train/")


@pytest.mark.parametrize("spec", ["nocolon", "minio:", ":s3", "minio:/"])
def test_malformed_targets_are_config_errors(conf: Path, spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_target(spec, load_remotes(conf, env={}))


def test_an_unknown_remote_lists_the_configured_ones_and_the_file_read(conf: Path) -> None:
    with pytest.raises(ConfigError, match=f"chi_tacc, minio; read {conf}\\)"):
        parse_target("nope:bucket", load_remotes(conf, env={}), conf)


def test_an_unknown_remote_says_no_config_file_exists_at_the_default_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "absent.conf"
    monkeypatch.setenv("RCLONE_CONFIG", str(missing))
    with pytest.raises(ConfigError, match=f"remotes: none; no config file at {missing}\\)"):
        parse_target("nope:bucket", load_remotes(None))


def test_an_unknown_type_names_the_supported_ones(tmp_path: Path) -> None:
    path = tmp_path / "r.conf"
    path.write_text("[f]\ntype = ftp\n")
    target = parse_target("f:x", load_remotes(path, env={}))
    with pytest.raises(ConfigError, match=r"supported types: .*s3"):
        open_backend(target, Timeouts())
