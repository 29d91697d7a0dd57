"""Swift-only behaviour, against the real Swift + Keystone stack.

Large objects (SLO, DLO) and folder objects, every way of authenticating that
rclone's swift remote offers, tokens that expire or are revoked during a mount,
the lean GET path against swiftclient (same bytes, same errors), and the
one-line errors before mounting. The tests that every backend passes
live in the other modules; these run with `store` set to the Swift stack.
"""

import errno
import hashlib
import json
import os
import re
import socket
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from keystoneauth1 import session as ksa_session
from keystoneauth1.identity import v3
from keystoneclient.v3.client import Client
from swiftclient.exceptions import ClientException

from objmount.backends import Timeouts
from objmount.backends.base import PAGE_SIZE_ENV, ETagMismatch, NotFound, list_all
from objmount.backends.swift import SwiftBackend
from objmount.config import Remote
from objmount.errors import ObjmountError
from tests.integration.bounds import within
from tests.integration.conftest import TOKEN_LIFETIME_S, MiB, data
from tests.integration.mounting import MountProcess, mounted, objmount
from tests.integration.stores import SwiftStore, TestStore
from tests.servers import rclone_conf
from tests.servers.fault_proxy import FaultProxy, Rule
from tests.servers.net import free_port
from tests.servers.swift_stack import TEMPAUTH_KEY, TEMPAUTH_USER, SwiftStack

pytestmark = [pytest.mark.mount, pytest.mark.parametrize("store", ["swift"], indirect=True)]

# Segment sizes that put segment boundaries inside the kernel's 1 MiB reads.
SEGMENTS = [MiB + 7, MiB, 12_345]
LARGE_SIZE = sum(SEGMENTS)


@pytest.fixture
def swift(store: TestStore) -> SwiftStore:
    assert isinstance(store, SwiftStore)
    return store


@pytest.fixture
def stack(swift: SwiftStore) -> SwiftStack:
    return swift.stack


@pytest.fixture(scope="session")
def large_objects(store: TestStore) -> bytes:
    """Container `large`: the same bytes as an SLO and a DLO, and folder objects."""
    assert isinstance(store, SwiftStore)
    swift = store.swift
    parts = [data(f"segment-{i}", size) for i, size in enumerate(SEGMENTS)]
    swift.put_container("large")
    swift.put_container("large_segments")
    manifest = []
    for i, part in enumerate(parts):
        swift.put_object("large_segments", f"slo/{i:08d}", part)
        swift.put_object("large_segments", f"dlo/{i:08d}", part)
        manifest.append({"path": f"/large_segments/slo/{i:08d}",
                         "etag": hashlib.md5(part).hexdigest(), "size_bytes": len(part)})
    swift.put_object("large", "slo.bin", json.dumps(manifest),
                     query_string="multipart-manifest=put")
    swift.put_object("large", "dlo.bin", b"", headers={"X-Object-Manifest": "large_segments/dlo/"})
    swift.put_object("large", "empty.txt", b"")
    # Folders as Horizon and `swift post` make them: no trailing slash.
    for folder in ("folder", "lonely", "slashed/"):
        swift.put_object("large", folder, b"", content_type="application/directory")
    swift.put_object("large", "folder/inside.txt", b"inside")
    return b"".join(parts)


def read_ranges(path: Path, content: bytes) -> None:
    """Whole-file and boundary-crossing reads return exactly `content`."""
    assert path.read_bytes() == content
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in (0, MiB - 3, MiB + 5, 2 * MiB + 3, len(content) - 10):
            assert os.pread(fd, 4096, offset) == content[offset : offset + 4096]
    finally:
        os.close(fd)


def head(stack: SwiftStack, container: str, key: str) -> dict[str, str]:
    return stack.swift_connection().head_object(container, key)


@pytest.fixture(scope="module", params=["per-directory", "fast-list"])
def large_mount(
    request: pytest.FixtureRequest, large_objects: bytes, config: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MountProcess]:
    """Container `large` mounted once per listing mode for the tests that only read it."""
    args = ("--fast-list",) if request.param == "fast-list" else ()
    with mounted("remote:large", tmp_path_factory.mktemp("large") / "mnt", config,
                 *args) as mount:
        yield mount


class TestLargeObjects:
    def test_slo_and_dlo_are_listed_with_their_size_and_read_byte_exact(
        self, large_objects: bytes, large_mount: MountProcess
    ) -> None:
        for name in ("slo.bin", "dlo.bin"):
            assert os.stat(large_mount.path / name).st_size == LARGE_SIZE
            read_ranges(large_mount.path / name, large_objects)
        assert os.stat(large_mount.path / "empty.txt").st_size == 0

    def test_the_etag_is_the_one_a_head_shows(
        self, large_mount: MountProcess, stack: SwiftStack
    ) -> None:
        for name in ("slo.bin", "dlo.bin"):
            etag = os.getxattr(large_mount.path / name, "user.objmount.etag").decode()
            assert etag == head(stack, "large", name)["etag"].strip('"')

    def test_folder_objects_are_directories(self, large_mount: MountProcess) -> None:
        path = large_mount.path
        assert sorted(os.listdir(path)) == [
            "dlo.bin", "empty.txt", "folder", "lonely", "slashed", "slo.bin"
        ]
        for folder in ("folder", "lonely", "slashed"):
            assert stat.S_ISDIR(os.stat(path / folder).st_mode)
        assert os.listdir(path / "lonely") == []
        assert (path / "folder" / "inside.txt").read_bytes() == b"inside"

    def test_if_match_guards_ranged_reads_of_large_objects(
        self, large_objects: bytes, stack: SwiftStack
    ) -> None:
        backend = backend_for(stack.rclone_conf_section("r"), "large")
        for name in ("slo.bin", "dlo.bin"):
            info = backend.stat(name)
            assert info.size == LARGE_SIZE
            assert backend.read(name, MiB - 5, MiB + 5, info.etag) == large_objects[
                MiB - 5 : MiB + 5
            ]
            with pytest.raises(ETagMismatch, match="changed since it was opened"):
                backend.read(name, 0, 10, "0" * 32)

    def test_a_dlo_that_grows_no_longer_matches_its_old_etag(self, swift: SwiftStore) -> None:
        swift.create_container("growing")
        swift.create_container("growing_segments")
        swift.put("growing_segments", "part/0", b"first")
        swift.swift.put_object("growing", "dlo", b"",
                               headers={"X-Object-Manifest": "growing_segments/part/"})
        backend = backend_for(swift.stack.rclone_conf_section("r"), "growing")
        (listed,) = backend.list_page("", "/", None).objects
        assert (listed.size, backend.read("dlo", 0, 5, listed.etag)) == (5, b"first")
        swift.put("growing_segments", "part/1", b"second")
        with pytest.raises(ETagMismatch):
            backend.read("dlo", 0, 5, listed.etag)
        assert backend.stat("dlo").size == 11


def test_listing_pages_continue_after_subdirectories(
    swift: SwiftStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Markers work whether a page ends on an object or on a subdir (pages of 3 here)."""
    swift.create_container("paged")
    keys = [f"p/d{i}/x" for i in range(5)] + [f"p/f{i}" for i in range(5)]
    for key in keys:
        swift.put("paged", key, b"x")
    monkeypatch.setenv(PAGE_SIZE_ENV, "3")
    backend = backend_for(swift.stack.rclone_conf_section("r"), "paged")
    pages = list(list_all(backend, "p/", "/"))
    assert len(pages) == 4
    assert [p for page in pages for p in page.prefixes] == [f"p/d{i}/" for i in range(5)]
    assert [o.key for page in pages for o in page.objects] == [f"p/f{i}" for i in range(5)]
    recursive = [o.key for page in list_all(backend, "", None) for o in page.objects]
    assert recursive == sorted(keys)


def test_put_and_delete_manage_slo_segments(swift: SwiftStore, tmp_path: Path) -> None:
    swift.create_container("writes")
    backend = backend_for(swift.stack.rclone_conf_section("r"), "writes")
    source = tmp_path / "big.bin"
    content = data("big", 3 * MiB + 1)
    source.write_bytes(content)
    backend.put_file("big.bin", source, segment_size=MiB)
    assert head(swift.stack, "writes", "big.bin")["x-static-large-object"] == "True"
    assert swift.get("writes", "big.bin") == content
    assert len(swift.keys("writes_segments")) == 4
    source.write_bytes(content[:100])
    backend.put_file("big.bin", source, segment_size=MiB)  # now small: old segments go
    assert swift.get("writes", "big.bin") == content[:100]
    assert swift.keys("writes_segments") == set()
    backend.put_file("big.bin", tmp_path.joinpath("big.bin"), segment_size=10)
    backend.delete("big.bin")
    backend.delete("big.bin")  # missing: no error
    assert swift.keys("writes") == set()
    assert swift.keys("writes_segments") == set()


# -- authentication ------------------------------------------------------------


def backend_for(section: str, container: str, env: dict[str, str] | None = None) -> SwiftBackend:
    """A SwiftBackend for the first remote of an rclone.conf `section`."""
    name, options = rclone_conf.parse(section)
    remote = Remote(name, "swift", options)
    return SwiftBackend(remote, container, Timeouts(connect_s=5, read_s=30), env=env)


def section(name: str, **options: str) -> str:
    return rclone_conf.section(name, {"type": "swift", **options})


def test_the_tutorial_rclone_conf_mounts_unchanged(
    dataset: dict[str, bytes], stack: SwiftStack, tmp_path: Path
) -> None:
    conf = tmp_path / "rclone.conf"
    conf.write_text(
        "[chi_tacc]\n"
        "type = swift\n"
        f"user_id = {stack.user_id}\n"
        f"application_credential_id = {stack.app_cred_id}\n"
        f"application_credential_secret = {stack.app_cred_secret}\n"
        f"auth = {stack.auth_url}\n"
        "region = CHI@TACC\n"
    )
    with mounted("chi_tacc:dataset", tmp_path / "mnt", conf, "--allow-other") as mount:
        for name in ("one.bin", "m1-plus-1.bin", "nested/a/b/c/deep.txt"):
            assert (mount.path / name).read_bytes() == dataset[name]
        assert stack.app_cred_secret not in mount.log()


def test_an_openrc_alone_configures_a_swift_mount(
    dataset: dict[str, bytes], stack: SwiftStack, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in stack.openrc_env().items():
        monkeypatch.setenv(name, value)
    empty = tmp_path / "rclone.conf"
    empty.write_text("")
    with mounted(":swift:dataset", tmp_path / "mnt", empty) as mount:
        assert (mount.path / "m1.bin").read_bytes() == dataset["m1.bin"]
        assert stack.app_cred_secret not in mount.log()


@pytest.fixture(scope="module")
def named_credential(swift_stack: SwiftStack) -> tuple[str, str]:
    """A second application credential of the test user, to use by name."""
    cred_id, secret = swift_stack.new_app_credential("by-name")
    return cred_id, secret


AUTH_FORMS = {
    "app credential id, no user": lambda s, named: dict(
        application_credential_id=s.app_cred_id, application_credential_secret=s.app_cred_secret,
        auth=s.auth_url),
    "app credential name + user_id": lambda s, named: dict(
        application_credential_name="by-name", application_credential_secret=named[1],
        user_id=s.user_id, auth=s.auth_url, region=s.region),
    "app credential name + user + domain": lambda s, named: dict(
        application_credential_name="by-name", application_credential_secret=named[1],
        user=s.username, domain="Default", auth=s.auth_url),
    "password, names and domains": lambda s, named: dict(
        user=s.username, key=s.password, domain="Default", tenant=s.project_name,
        tenant_domain="Default", auth=s.auth_url, region=s.region),
    "password, ids": lambda s, named: dict(
        user_id=s.user_id, key=s.password, tenant_id=s.project_id, auth=s.auth_url),
    "password, default project": lambda s, named: dict(
        user=s.username, key=s.password, domain="Default", auth=s.auth_url),
    "unversioned auth URL": lambda s, named: dict(
        application_credential_id=s.app_cred_id, application_credential_secret=s.app_cred_secret,
        auth=s.auth_url.removesuffix("/v3")),
    "internal endpoint": lambda s, named: dict(
        application_credential_id=s.app_cred_id, application_credential_secret=s.app_cred_secret,
        auth=s.auth_url, endpoint_type="internal"),
    "admin endpoint": lambda s, named: dict(
        application_credential_id=s.app_cred_id, application_credential_secret=s.app_cred_secret,
        auth=s.auth_url, endpoint_type="admin"),
    "storage_url instead of the catalog": lambda s, named: dict(
        application_credential_id=s.app_cred_id, application_credential_secret=s.app_cred_secret,
        auth=s.auth_url, storage_url=s.storage_url, region="NOT-IN-CATALOG"),
    "pre-issued token alone": lambda s, named: dict(
        storage_url=s.storage_url, auth_token=s.app_cred_session().get_token()),
    "refused token + credentials: renewed": lambda s, named: dict(
        application_credential_id=s.app_cred_id, application_credential_secret=s.app_cred_secret,
        auth=s.auth_url, auth_token="gAAAAA-not-a-token"),
}


@pytest.mark.parametrize("form", sorted(AUTH_FORMS))
def test_each_rclone_auth_form_reads(
    form: str, dataset: dict[str, bytes], stack: SwiftStack, named_credential: tuple[str, str]
) -> None:
    backend = backend_for(section("r", **AUTH_FORMS[form](stack, named_credential)), "dataset")
    backend.check("")
    info = backend.stat("k128-plus-1.bin")
    assert backend.read(info.key, 0, info.size, info.etag) == dataset["k128-plus-1.bin"]


def test_v1_auth_tempauth_lists_reads_and_writes(stack: SwiftStack, tmp_path: Path) -> None:
    """Swift's own v1 auth (the stack runs tempauth beside Keystone, with its own accounts)."""
    backend = backend_for(
        section("v1", user=TEMPAUTH_USER, key=TEMPAUTH_KEY, auth=stack.v1_auth_url), "v1-data"
    )
    backend.create_container()
    source = tmp_path / "hello.txt"
    source.write_bytes(b"hello over v1")
    backend.put_file("dir/hello.txt", source, segment_size=MiB)
    backend.check("")
    assert backend.list_page("", "/", None).prefixes == ["dir/"]
    info = backend.stat("dir/hello.txt")
    assert backend.read(info.key, 6, 13, info.etag) == b"over v1"
    assert "/v1/TEMP_" in backend.describe()
    backend.delete("dir/hello.txt")


def test_openrc_forms_read(dataset: dict[str, bytes], stack: SwiftStack) -> None:
    password_openrc = {
        "OS_AUTH_URL": stack.auth_url, "OS_USERNAME": stack.username,
        "OS_PASSWORD": stack.password, "OS_PROJECT_ID": stack.project_id,
        "OS_PROJECT_NAME": stack.project_name, "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_ID": "default", "OS_REGION_NAME": stack.region,
        "OS_INTERFACE": "public", "OS_IDENTITY_API_VERSION": "3",
    }
    token_openrc = {"OS_STORAGE_URL": stack.storage_url,
                    "OS_AUTH_TOKEN": stack.app_cred_session().get_token()}
    for env in (stack.openrc_env(), password_openrc, token_openrc):
        backend = backend_for(section(":swift", env_auth="true"), "dataset", env=env)
        assert backend.read("one.bin", 0, 1, None) == dataset["one.bin"]


# -- tokens during a mount -----------------------------------------------------

def test_an_expired_token_is_renewed_during_a_mount(
    short_token_stack: SwiftStack, swift: SwiftStore, tmp_path: Path
) -> None:
    stack = short_token_stack
    conf = tmp_path / "rclone.conf"
    conf.write_text(stack.rclone_conf_section("short"))
    proxy_log = stack.logs_dir / "proxy.log"
    # Two worker threads, whose connections keep their tokens: trio keeps an idle
    # thread 10 s, longer than the sleep, so the next reads carry expired tokens.
    with mounted("short:tokens", tmp_path / "mnt", conf, "--max-parallel", "2") as mount:
        assert (mount.path / "f0.bin").read_bytes() == data("token-0", MiB)
        refused_before = proxy_log.read_text().count(" 401 ")
        time.sleep(TOKEN_LIFETIME_S + 1.5)
        for i in (1, 2):
            assert (mount.path / f"f{i}.bin").read_bytes() == data(f"token-{i}", MiB + i)
        assert proxy_log.read_text().count(" 401 ") > refused_before  # it did expire
        assert mount.proc.poll() is None
        assert "ERROR" not in mount.log()
        assert "WARNING" not in mount.log()


def test_a_revoked_credential_gives_eio_and_one_log_line(
    dataset: dict[str, bytes], stack: SwiftStack, tmp_path: Path
) -> None:
    cred_id, secret = stack.new_app_credential("revoke-me")
    conf = tmp_path / "rclone.conf"
    conf.write_text(stack.rclone_conf_section("revoked", credential=(cred_id, secret)))
    with mounted("revoked:dataset", tmp_path / "mnt", conf) as mount:
        assert (mount.path / "one.bin").read_bytes() == dataset["one.bin"]
        stack.revoke_app_credential(cred_id)
        started = time.monotonic()
        for name in ("m1.bin", "k128-plus-1.bin", "m1-minus-1.bin"):
            with pytest.raises(OSError) as raised:
                (mount.path / name).read_bytes()
            assert raised.value.errno == errno.EIO
        assert time.monotonic() - started < 10  # no retrying, no hang
        assert "one.bin" in os.listdir(mount.path)  # still serving
        assert mount.proc.poll() is None
        errors = [line for line in mount.log().splitlines() if " ERROR " in line]
        assert len(errors) == 1, errors
        assert cred_id in errors[0]
        assert "revoked" in errors[0]
        assert secret not in mount.log()


# -- lean GETs: swiftclient's bytes and errors ---------------------------------

BLOCK = 8 * MiB  # the default --block-size: where the block cache's GETs start and end


def edge_ranges(size: int, edges: list[int]) -> list[tuple[int, int]]:
    """Ranges starting, ending and crossing at each edge, and past the end."""
    ranges = {(0, 1), (0, size), (size - 3, size), (size - 3, size + 100)}
    for edge in edges:
        if 0 < edge < size:
            ranges |= {(edge - 1, edge + 1), (edge, min(size, edge + BLOCK)),
                       (max(0, edge - BLOCK), edge), (edge - 5, edge)}
    return sorted(ranges)


def swiftclient_range(stack: SwiftStack, container: str, key: str, start: int, end: int,
                      etag: str) -> bytes:
    _, body = stack.swift_connection().get_object(
        container, key, headers={"Range": f"bytes={start}-{end - 1}", "If-Match": f'"{etag}"'})
    return body


@pytest.fixture(scope="module")
def block_edges(swift_stack: SwiftStack) -> bytes:
    """Container `lean`: `edges.bin`, three default blocks and a bit."""
    content = data("lean-edges", 2 * BLOCK + 12_345)
    swift = SwiftStore(swift_stack)
    swift.create_container("lean")
    swift.put("lean", "edges.bin", content)
    return content


def lean_gets_in(stack: SwiftStack, since: int) -> list[str]:
    """Proxy log lines of object GETs sent by objmount's own HTTP path after `since` bytes."""
    with open(stack.logs_dir / "proxy.log", "rb") as log:
        log.seek(since)
        lines = log.read().decode(errors="replace").splitlines()
    return [line for line in lines if " GET " in line and " objmount/" in line]


def test_lean_gets_return_swiftclients_bytes_at_block_and_segment_edges(
    block_edges: bytes, large_objects: bytes, stack: SwiftStack
) -> None:
    since = (stack.logs_dir / "proxy.log").stat().st_size
    objects = {("lean", "edges.bin"): (block_edges, [BLOCK, 2 * BLOCK, MiB]),
               ("large", "slo.bin"): (large_objects, [SEGMENTS[0], SEGMENTS[0] + SEGMENTS[1]]),
               ("large", "dlo.bin"): (large_objects, [SEGMENTS[0], SEGMENTS[0] + SEGMENTS[1]])}
    for (container, key), (content, edges) in objects.items():
        backend = backend_for(stack.rclone_conf_section("r"), container)
        info = backend.stat(key)
        for start, end in edge_ranges(len(content), edges):
            lean = backend.read(key, start, end, info.etag)
            assert lean == swiftclient_range(stack, container, key, start, end, info.etag)
            assert lean == content[start:end], (key, start, end)
    assert len(lean_gets_in(stack, since)) >= 3 * 10  # the lean path served them


def test_lean_gets_raise_what_swiftclient_raises(swift: SwiftStore, stack: SwiftStack) -> None:
    swift.create_container("lean-errors")
    swift.put("lean-errors", "replaced.bin", b"first version")
    backend = backend_for(stack.rclone_conf_section("r"), "lean-errors")
    old = backend.stat("replaced.bin")
    swift.put("lean-errors", "replaced.bin", b"second version")
    new = backend.stat("replaced.bin")
    with pytest.raises(ClientException) as refused:
        swiftclient_range(stack, "lean-errors", "replaced.bin", 0, 5, old.etag)
    assert refused.value.http_status == 412
    with pytest.raises(ETagMismatch, match="changed since it was opened"):
        backend.read("replaced.bin", 0, 5, old.etag)
    assert backend.read("replaced.bin", 0, 6, new.etag) == b"second"
    with pytest.raises(NotFound, match=r"lean-errors/missing\.bin: no such object"):
        backend.read("missing.bin", 0, 5, None)
    # Past the end (416): as swiftclient's path answered, "shrank" or nothing.
    with pytest.raises(ETagMismatch, match="it shrank"):
        backend.read("replaced.bin", 100, 200, new.etag)
    assert backend.read("replaced.bin", 100, 200, None) == b""


def test_an_expired_token_is_renewed_once_for_lean_gets_of_many_threads(
    short_token_stack: SwiftStack, swift: SwiftStore
) -> None:
    stack = short_token_stack
    backend = backend_for(stack.rclone_conf_section("short"), "tokens")
    expected = data("token-1", MiB + 1)
    assert backend.read("f1.bin", 0, MiB + 1, None) == expected  # a token, kept
    refused_before = (stack.logs_dir / "proxy.log").read_text().count(" 401 ")
    time.sleep(TOKEN_LIFETIME_S + 1.5)  # the token expires: the reads below carry it
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda start: backend.read("f1.bin", start, start + 4096, None),
                                range(0, 8 * 4096, 4096)))
    assert results == [expected[s : s + 4096] for s in range(0, 8 * 4096, 4096)]
    refused = (stack.logs_dir / "proxy.log").read_text().count(" 401 ") - refused_before
    assert 1 <= refused <= 8  # each thread sent the old token at most once


def test_a_token_that_expires_between_two_blocks_of_one_read(
    short_token_stack: SwiftStack, swift: SwiftStore, tmp_path: Path
) -> None:
    """The second block's GET is held back by a relay until its token has expired."""
    stack = short_token_stack
    content = data("between-blocks", 3 * MiB + 5)
    SwiftStore(stack).put("tokens", "three-blocks.bin", content)
    with FaultProxy(stack.port("proxy")) as proxy:
        object_path = stack.storage_url.removeprefix(stack.proxy_url) + "/tokens/three-blocks.bin"
        second_block = proxy.add(Rule(method="GET", path=re.escape(object_path) + "$",
                                      headers={"Range": f"bytes={MiB}-"}, times=1,
                                      delay_s=TOKEN_LIFETIME_S + 1.5))
        conf = tmp_path / "rclone.conf"
        conf.write_text(SwiftStore(stack).rclone_section_through("short", proxy.url))
        # A stall window (--contimeout/2) longer than the hold: the GET is held, not stalled.
        with mounted("short:tokens", tmp_path / "mnt", conf, "--block-size", "1M",
                     "--contimeout", f"{3 * TOKEN_LIFETIME_S}s") as mount:
            # The held GET, then a 401, a new token and the GET again: within the deadline.
            with within(TOKEN_LIFETIME_S + 1.5 + 5, "a token expiring between two blocks of "
                                                    "one read: read exactly"):
                assert (mount.path / "three-blocks.bin").read_bytes() == content
            assert "ERROR" not in mount.log()
            assert "WARNING" not in mount.log()
    assert second_block.applied == 1
    statuses = proxy.statuses("GET", re.escape(object_path) + "$")
    assert statuses.count(401) == 1  # the held GET, refused, then sent once more
    assert statuses.count(206) == 4


# -- one-line errors before mounting -------------------------------------------


@pytest.fixture(scope="module")
def catalog_without_swift(swift_stack: SwiftStack) -> tuple[str, str]:
    """An application credential of a project whose catalog lists only Keystone.

    Keystone filters a project's catalog to the endpoints associated with it.
    """
    stack = swift_stack
    admin = Client(session=stack.admin_session())
    project = admin.projects.create(name="no-swift", domain="default")
    password = "no-swift-password"
    user = admin.users.create(name="no-swift-user", domain="default", password=password,
                              default_project=project)
    admin.roles.grant(admin.roles.list(name="member")[0], user=user, project=project)
    identity = next(s for s in admin.services.list() if s.type == "identity")
    for endpoint in admin.endpoints.list(service=identity):
        admin.endpoint_filter.add_endpoint_to_project(project=project, endpoint=endpoint)
    session = ksa_session.Session(auth=v3.Password(
        auth_url=stack.auth_url, user_id=user.id, password=password, project_id=project.id))
    cred = Client(session=session).application_credentials.create(name="c", user=user.id)
    return cred.id, cred.secret


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that never completes a connect: a listener whose accept queue is full."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in [*fillers, listener]:
        sock.close()


def early_char_changed(secret: str) -> str:
    """A wrong secret (only the first 72 characters count: bcrypt)."""
    return ("X" if secret[0] != "X" else "Y") + secret[1:]


def run_failing(spec: str, conf: Path, mnt: Path, *args: str) -> tuple[str, float]:
    """Run a mount that must fail before mounting; return its one stderr line and duration."""
    mnt.mkdir(exist_ok=True)
    started = time.monotonic()
    result = objmount(spec, str(mnt), "--config", str(conf), *args, timeout_s=60)
    elapsed_s = time.monotonic() - started
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0], elapsed_s


FAIL_FAST = {
    "wrong secret": (
        lambda s, k, port: s.rclone_conf_section(
            "bad", credential=(s.app_cred_id, early_char_changed(s.app_cred_secret))),
        "bad:dataset", ["refused application credential", "application_credential_secret"]),
    "unknown region": (
        lambda s, k, port: s.rclone_conf_section("bad").replace(s.region, "NOWHERE"),
        "bad:dataset", ["region 'NOWHERE'", "CHI@TACC (admin, internal, public)"]),
    "no object-store endpoint": (
        lambda s, k, port: s.rclone_conf_section("bad", credential=k),
        "bad:dataset", ["no object-store (Swift) endpoint"]),
    "container missing": (
        lambda s, k, port: s.rclone_conf_section("bad"),
        "bad:no-such-container", ["container 'no-such-container' does not exist"]),
    "keystone refuses connections": (
        lambda s, k, port: s.rclone_conf_section("bad").replace(
            s.auth_url, f"http://127.0.0.1:{free_port()}/v3"),
        "bad:dataset", ["cannot reach Keystone", "connection refused"]),
    "keystone never answers a connect": (
        lambda s, k, port: s.rclone_conf_section("bad").replace(
            s.auth_url, f"http://127.0.0.1:{port}/v3"),
        "bad:dataset", ["cannot reach Keystone", "timed out (connect 1s"]),
    "wrong v1 key": (
        lambda s, k, port: section("bad", user=TEMPAUTH_USER, key="wrong-key",
                                   auth=s.v1_auth_url),
        "bad:dataset", [f"refused user '{TEMPAUTH_USER}' (v1 auth)", "user and key"]),
    "refused pre-issued token": (
        lambda s, k, port: section("bad", storage_url=s.storage_url,
                                   auth_token="gAAAAA-expired-token"),
        "bad:dataset", ["refused the pre-issued auth_token"]),
}


@pytest.mark.parametrize("problem", sorted(FAIL_FAST))
def test_each_problem_fails_before_mounting_in_one_line(
    problem: str, stack: SwiftStack, catalog_without_swift: tuple[str, str], silent_port: int,
    tmp_path: Path,
) -> None:
    make_conf, spec, fragments = FAIL_FAST[problem]
    conf = tmp_path / "rclone.conf"
    conf.write_text(make_conf(stack, catalog_without_swift, silent_port))
    line, elapsed_s = run_failing(spec, conf, tmp_path / "mnt", "--contimeout", "1s")
    for fragment in fragments:
        assert fragment in line
    assert elapsed_s < 15
    for secret in (stack.app_cred_secret, early_char_changed(stack.app_cred_secret),
                   catalog_without_swift[1]):
        assert secret not in line


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "no Swift credentials"),
        ({"OS_AUTH_URL": "http://127.0.0.1:1/v3", "OS_AUTH_TYPE": "v3oidcpassword",
          "OS_USERNAME": "u", "OS_PASSWORD": "p"}, "OS_AUTH_TYPE 'v3oidcpassword'"),
    ],
)
def test_an_unusable_openrc_fails_in_one_line(
    env: dict[str, str], fragment: str, swift: SwiftStore, tmp_path: Path
) -> None:
    empty = tmp_path / "rclone.conf"
    empty.write_text("")
    (tmp_path / "mnt").mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "ST_"))}
    result = objmount(":swift:dataset", str(tmp_path / "mnt"), "--config", str(empty),
                      env={**clean, **env})
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert fragment in result.stderr


def test_backend_errors_are_objmount_errors(stack: SwiftStack) -> None:
    """No SDK exception escapes: what the mount would turn into EIO is one of ours."""
    backend = backend_for(stack.rclone_conf_section("r"), "no-such-container")
    with pytest.raises(ObjmountError, match="does not exist"):
        backend.list_page("", "/", None)
