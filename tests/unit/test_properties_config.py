"""Properties of rclone.conf parsing: whatever a config file and a target say, the
remotes are read and the target parsed, or one ConfigError of one line is raised
(never another exception), and no secret value appears in the message or in a
remote's description."""

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objmount.backends import FACTORIES, Timeouts, open_backend
from objmount.config import Remote, load_remotes, parse_target
from objmount.errors import ConfigError

# Secret values: tagged so that no name, key or other value can contain one.
SECRET = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=12).map(
    lambda tail: f"Zq9{tail}")
SECRET_KEYS = ["secret_access_key", "key", "pass", "password", "session_token",
               "application_credential_secret", "token", "sse_customer_key"]
PUBLIC_KEYS = ["endpoint", "region", "provider", "user", "auth", "access_key_id", "tenant"]
TYPES = ["s3", "swift", "S3", "", "local", "alias", "drive", "weird type"]
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
NAME = st.one_of(st.sampled_from(["remote", "chi_tacc", "DEFAULT", "a:b", "x y", "é"]), TEXT)
OPTION = st.one_of(
    st.tuples(st.sampled_from(SECRET_KEYS), SECRET),
    st.tuples(st.sampled_from(PUBLIC_KEYS), TEXT),
    st.tuples(st.just("type"), st.sampled_from(TYPES)),
    st.tuples(TEXT, TEXT),
)
SECTION = st.tuples(NAME, st.lists(OPTION, max_size=5))
JUNK = st.sampled_from(["", "no equals sign", "  indented continuation", "[unclosed",
                        "= value without key", "; comment", "# comment", "[]", "%(x)s = y"])
SPEC = st.one_of(
    st.builds(lambda name, path: f"{name}:{path}", NAME,
              st.sampled_from(["bucket", "bucket/some/prefix/", "", "/", "//x"])),
    st.sampled_from([":s3:bucket", ":swift:", "::", ":", "no-colon"]),
    TEXT,
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def render(sections: list[tuple[str, list[tuple[str, str]]]], junk: list[str]) -> str:
    """The INI text of `sections` (duplicates kept as written), junk lines between."""
    lines = []
    for (name, options), extra in zip(sections, junk + [""] * len(sections), strict=False):
        lines.append(f"[{name}]")
        lines += [f"{key} = {value}" for key, value in options]
        lines.append(extra)
    return "\n".join(lines) + "\n"


def check_one_line(exc: ConfigError, secrets: set[str]) -> None:
    message = str(exc)
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert not any(secret in message for secret in secrets), message


@FAST
@given(sections=st.lists(SECTION, max_size=4), junk=st.lists(JUNK, max_size=4),
       spec=SPEC, raw=st.one_of(st.none(), st.binary(max_size=40)))
def test_a_config_file_gives_remotes_and_a_target_or_one_config_error_without_secrets(
        sections: list[tuple[str, list[tuple[str, str]]]], junk: list[str], spec: str,
        raw: bytes | None) -> None:
    secrets = {value for _, options in sections for key, value in options
               if key in SECRET_KEYS}
    text = render(sections, junk).encode("utf-8", "surrogatepass") + (raw or b"")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rclone.conf"
        path.write_bytes(text)
        try:
            remotes = load_remotes(path, env={})
        except ConfigError as exc:
            check_one_line(exc, secrets)
            return
        try:
            target = parse_target(spec, remotes, path)
        except ConfigError as exc:
            check_one_line(exc, secrets)
            return
    for remote in remotes.values():
        assert isinstance(remote, Remote)
        assert not any(secret in repr(remote) for secret in secrets), repr(remote)
    assert target.remote.name.startswith(":") or target.remote is remotes[target.remote.name]
    assert target.container and "/" not in target.container
    assert target.prefix == "" or (target.prefix.endswith("/")
                                   and not target.prefix.startswith("/"))
    if target.remote.type not in FACTORIES:
        try:
            open_backend(target, Timeouts())
            raise AssertionError(f"type {target.remote.type!r} opened a backend")
        except ConfigError as exc:
            check_one_line(exc, secrets)
