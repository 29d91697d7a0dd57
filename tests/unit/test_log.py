"""Logs: secrets masked wherever a record carries them, URLs shown without credentials, and a
log file private to the user."""

import logging
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from objmount import log as logs
from objmount.errors import ConfigError

NOBODY = 65534


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, its handlers and levels restored after the test (setup replaces them)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level


def logged(path: Path, verbosity: int, emit: Callable[[logging.Logger], None]) -> str:
    logs.setup(verbosity, path)
    emit(logging.getLogger("objmount.test"))
    for handler in logging.getLogger().handlers:
        handler.flush()
    return path.read_text()


def test_a_registered_secret_is_masked_in_messages_tracebacks_and_stacks(
    tmp_path: Path, root_logger: logging.Logger
) -> None:
    logs.register_secret("Sekr1t-registered")

    def emit(log: logging.Logger) -> None:
        log.warning("key %s", "Sekr1t-registered")
        try:
            raise ValueError("refused Sekr1t-registered")
        except ValueError:
            log.exception("failed")
        log.warning("%s", "Sekr1t-registered", stack_info=True)  # the stack shows this line

    text = logged(tmp_path / "objmount.log", 0, emit)
    assert "Sekr1t-registered" not in text
    assert "key ***" in text and "ValueError: refused ***" in text
    assert 'log.warning("%s", "***", stack_info=True)' in text


CREDENTIAL_FIELDS = {
    "canonical request": "x-amz-security-token:FwoGZXIvYXdzEJr//+/token=\nhost:s3",
    "headers dict": "headers={'X-Amz-Security-Token': b'FwoGZXIvYXdzEJr+/token='}",
    "presigned query": "GET /b/k?X-Amz-Security-Token=FwoGZXIvYXdz%2Btoken&X-Amz-Date=1",
    "sts xml": "<SessionToken>FwoGZXIvYXdz+token</SessionToken>"
               "<SecretAccessKey>wJalrXUtnFEMIsecret</SecretAccessKey>",
    "imds json": '{"AccessKeyId": "ASIAX", "SecretAccessKey": "wJalrXUtnFEMIsecret", '
                 '"Token": "FwoGZXIvYXdz+token"}',
    "sso json": '{"roleCredentials": {"secretAccessKey": "wJalrXUtnFEMIsecret", '
                '"sessionToken": "FwoGZXIvYXdz+token"}}',
    "credentials file": "aws_secret_access_key = wJalrXUtnFEMIsecret",
}


@pytest.mark.parametrize("case", sorted(CREDENTIAL_FIELDS))
def test_credential_fields_the_sdks_print_are_masked_even_unregistered(case: str) -> None:
    cleaned = logs.redact(CREDENTIAL_FIELDS[case])
    assert "FwoGZXIvYXdz" not in cleaned and "wJalrXUtnFEMIsecret" not in cleaned
    assert "***" in cleaned


@pytest.mark.parametrize("text", [
    "GET /b?list-type=2&continuation-token=1ueGcxLPRx1Tr HTTP/1.1",
    "<NextContinuationToken>1ueGcxLPRx1Tr</NextContinuationToken>",
    "set secret_access_key (or env_auth = true)",
    '{"token": {"methods": ["application_credential"]}}',
])
def test_what_is_no_credential_stays_readable(text: str) -> None:
    assert logs.redact(text) == text


@pytest.mark.parametrize(("url", "shown"), [
    ("https://host/a/b.zip", "https://host/a/b.zip"),
    ("https://user:pa55@host:8443/b.zip", "https://***@host:8443/b.zip"),
    ("https://token@host/b.zip", "https://***@host/b.zip"),
    ("https://s3.example/b/k.zip?X-Amz-Signature=abc&X-Amz-Credential=AKIA",
     "https://s3.example/b/k.zip?***"),
    ("https://host/b.zip#access_token=abc", "https://host/b.zip#***"),
    ("http://[::1/b.zip", "***"),
])
def test_urls_are_shown_without_userinfo_query_or_fragment(url: str, shown: str) -> None:
    assert logs.redact_url(url) == shown


def test_the_secret_parts_of_a_url_are_registered() -> None:
    logs.register_url("https://user:Pa55word-url@host/b.zip?sig=S1gnature-url")
    assert logs.redact("as user:Pa55word-url, b.zip?sig=S1gnature-url") == "as user:***, b.zip?***"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_the_log_file_is_created_0600(tmp_path: Path, root_logger: logging.Logger) -> None:
    text = logged(tmp_path / "objmount.log", 0, lambda log: log.warning("hello"))
    assert "hello" in text
    assert mode(tmp_path / "objmount.log") == 0o600


def test_a_planted_log_symlink_is_refused_and_its_target_untouched(
    tmp_path: Path, root_logger: logging.Logger
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root's data\n")
    victim.chmod(0o600)
    os.symlink(victim, tmp_path / "objmount.log")
    os.lchown(tmp_path / "objmount.log", NOBODY, NOBODY)
    with pytest.raises(ConfigError, match=r"--log-file: .*objmount.log is a symlink \(refused\)"):
        logs.setup(0, tmp_path / "objmount.log")
    assert victim.read_text() == "root's data\n" and mode(victim) == 0o600


def test_a_log_file_of_another_user_is_refused(
    tmp_path: Path, root_logger: logging.Logger
) -> None:
    (tmp_path / "objmount.log").write_text("")
    os.chown(tmp_path / "objmount.log", NOBODY, NOBODY)
    with pytest.raises(ConfigError, match="belongs to uid 65534"):
        logs.setup(0, tmp_path / "objmount.log")
