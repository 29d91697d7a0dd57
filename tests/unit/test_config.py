"""Remotes from rclone.conf and OBJMOUNT_CONFIG_* variables; targets from the command line."""

import subprocess
import sys
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


# Remotes of several rclone backends, each with its secret-bearing options (the values
# all contain SECRET) and options that are safe to show (values contain SHOWN).
BACKENDS_CONF = """\
[aws]
type = s3
provider = AWS
access_key_id = AKIA-SHOWN
secret_access_key = s3-SECRET-key
session_token = s3-SECRET-token
sse_customer_key = s3-SECRET-ssec
sse_customer_key_base64 = s3-SECRET-ssec64
sse_customer_key_md5 = s3-SECRET-md5
sse_kms_key_id = arn:aws:kms:SECRET
region = SHOWN-region
endpoint = https://SECRET-user:SECRET-pw@s3.SHOWN.example?SECRET=1

[openstack]
type = swift
user = SHOWN-user
key = swift-SECRET-password
auth = https://keystone.SHOWN.example:5000/v3
auth_token = swift-SECRET-token
application_credential_id = SHOWN-cred-id
application_credential_secret = swift-SECRET-app

[azure]
type = azureblob
account = SHOWN-account
key = azure-SECRET-key
sas_url = https://SHOWN.blob.example/c?sig=azure-SECRET-sas
client_id = SHOWN-client
client_secret = azure-SECRET-client
client_certificate_password = azure-SECRET-certpass
service_principal_file = /home/SECRET/sp.json

[google]
type = google cloud storage
project_number = SHOWN-project
client_secret = gcs-SECRET-client
token = {"access_token":"gcs-SECRET-access","refresh_token":"gcs-SECRET-refresh"}
service_account_credentials = {"private_key": "gcs-SECRET-private"}

[backblaze]
type = b2
account = SHOWN-keyid
key = b2-SECRET-appkey

[dav]
type = webdav
url = https://SECRET-u:SECRET-p@dav.SHOWN.example/remote.php
vendor = nextcloud
user = SHOWN-davuser
pass = dav-SECRET-obscured
bearer_token = dav-SECRET-bearer

[box]
type = sftp
host = sftp.SHOWN.example
user = SHOWN-sftpuser
pass = sftp-SECRET-obscured
key_pem = -----BEGIN-SECRET-KEY-----
key_file_pass = sftp-SECRET-keypass

[vault]
type = crypt
remote = aws:SHOWN-bucket
password = crypt-SECRET-obscured
password2 = crypt-SECRET-salt

[other]
type = someday
some_option = other-SECRET-value
"""


@pytest.fixture
def backends_conf(tmp_path: Path) -> Path:
    path = tmp_path / "rclone.conf"
    path.write_text(BACKENDS_CONF)
    return path


def test_remotes_show_only_the_public_options_of_every_backend(backends_conf: Path) -> None:
    described = "\n".join(r.describe() for r in load_remotes(backends_conf, env={}).values())
    assert "SECRET" not in described
    for shown in ("access_key_id=AKIA-SHOWN", "region=SHOWN-region",
                  "endpoint=https://***@s3.SHOWN.example?***", "user=SHOWN-user",
                  "auth=https://keystone.SHOWN.example:5000/v3",
                  "application_credential_id=SHOWN-cred-id", "account=SHOWN-account",
                  "client_id=SHOWN-client", "project_number=SHOWN-project",
                  "account=SHOWN-keyid", "url=https://***@dav.SHOWN.example/remote.php",
                  "host=sftp.SHOWN.example", "remote=aws:SHOWN-bucket"):
        assert shown in described
    for masked in ("secret_access_key", "sse_customer_key", "sse_kms_key_id", "key", "sas_url",
                   "client_secret", "token", "service_account_credentials", "pass",
                   "bearer_token", "key_pem", "password", "some_option"):
        assert f" {masked}=***" in described


def test_every_masked_value_is_registered_for_redaction(backends_conf: Path) -> None:
    load_remotes(backends_conf, env={})
    secrets = [line.partition(" = ")[2] for line in BACKENDS_CONF.splitlines()
               if "SECRET" in line and not line.startswith(("endpoint", "url"))]
    assert logs.redact(" ".join(secrets)) == " ".join(["***"] * len(secrets))
    assert logs.redact("via https://SECRET-u:SECRET-p@dav") == "via https://SECRET-u:***@dav"


def test_the_remotes_command_prints_no_secret(backends_conf: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "objmount", "remotes", "--config",
                             str(backends_conf)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 9
    assert "SECRET" not in result.stdout + result.stderr
    assert "dav (webdav): bearer_token=*** pass=*** url=https://***@" in result.stdout
