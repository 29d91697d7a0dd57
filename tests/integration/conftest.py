"""Fixtures: real servers per backend, a standard dataset in each, and real mounts.

Every test that takes `store` (or a fixture built on it) runs once per backend.
"""

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import workers
from tests.food11_archive import transformed
from tests.food11_images import food11_images
from tests.integration import fault_kit
from tests.integration.docker_tier.ahead import docker_tier_of
from tests.integration.mounting import MountProcess, mounted
from tests.integration.stores import S3Store, SwiftStore, TestStore, put_many
from tests.servers.ahead import Ahead
from tests.servers.docker_engine import missing_programs
from tests.servers.fault_proxy import FaultProxy
from tests.servers.s3_server import MotoS3Server
from tests.servers.swift_stack import SwiftStack

BACKENDS = ["s3", "swift"]
MiB = 1 << 20
BIG_DIRECTORY_PAGE = 250  # objects per listing page in tests of big_directory
# A stack's start is a deadline for a failure: 20-40 s here, more while other tests run
# beside it (it is started ahead, see `ahead`).
STACK_START_TIMEOUT_S = 180


def data(seed: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes: the same seed always gives the same content."""
    return random.Random(seed).randbytes(size)


@pytest.fixture(scope="session", autouse=True)
def _cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A mount started without --cache-dir (the CLI's own tests) caches in a temporary
    $XDG_CACHE_HOME, never in the user's ~/.cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    yield
    patch.undo()


def is_docker_tier(item: pytest.Item) -> bool:
    return item.get_closest_marker("docker") is not None


UNIT_TESTS = Path(__file__).parents[1] / "unit"


def is_unit_test(item: pytest.Item) -> bool:
    return UNIT_TESTS in item.path.parents


@pytest.hookimpl(trylast=True)  # after pytest's own grouping of items by fixture parameter
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The Docker tier runs after the other integration tests, in its order: its images are
    built meanwhile (below); the unit tests, short, run last (under xdist, the other
    worker's while one runs the tier)."""
    items.sort(key=lambda item: (is_unit_test(item), is_docker_tier(item)))


def uses_swift(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return "swift_stack" in item.fixturenames or (
        callspec is not None and callspec.params.get("store") == "swift")


@pytest.fixture(scope="session", autouse=True)
def ahead(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Ahead]:
    """The slow servers this run's tests will need, started in the background with its first
    test (tests/servers/ahead.py): the Swift stacks come up while the S3 tests run (pytest
    runs every test of one backend, then the other's), the Docker tier's images are built
    while everything but the tier runs. Under xdist, a server of a pinned group only by
    the worker that runs the group (tests/workers.py)."""
    servers = Ahead()
    items = request.session.items
    try:
        if any(map(uses_swift, items)):
            servers.start("swift_stack", swift_stack_of(tmp_path_factory))
        groups = {workers.group_of(item) for item in items if workers.runs_here(item)}
        if "short-token-stack" in groups:
            servers.start("short_token_stack", short_token_stack_of(tmp_path_factory))
        if "docker-tier" in groups and not missing_programs():
            servers.start("docker_tier", docker_tier_of(tmp_path_factory))
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3Server]:
    server = MotoS3Server(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


def swift_stack_of(tmp_path_factory: pytest.TempPathFactory) -> SwiftStack:
    return SwiftStack(tmp_path_factory.mktemp("swift-stack"), start_timeout_s=STACK_START_TIMEOUT_S)


@pytest.fixture(scope="session")
def swift_stack(ahead: Ahead, tmp_path_factory: pytest.TempPathFactory) -> SwiftStack:
    """Keystone + Swift, started once per run (see tests/servers/swift_stack.py)."""
    return ahead.get("swift_stack", lambda: swift_stack_of(tmp_path_factory))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Append the Swift stack's log tails to the report of a failed test that used it."""
    report = yield
    if report.failed:
        values = getattr(item, "funcargs", {}).values()
        stacks = {id(s): s for s in (getattr(v, "stack", v) for v in values)
                  if isinstance(s, SwiftStack)}
        for stack in stacks.values():
            report.sections.append(("Swift stack logs", stack.log_tail(20)))
    return report


@pytest.fixture(scope="session", params=BACKENDS)
def store(request: pytest.FixtureRequest) -> TestStore:
    if request.param == "swift":
        return SwiftStore(request.getfixturevalue("swift_stack"))
    return S3Store(request.getfixturevalue("moto_server"))


@pytest.fixture(scope="session")
def config(store: TestStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An rclone.conf with `remote` (valid) for the store under test."""
    path = tmp_path_factory.mktemp(f"conf-{store.kind}") / "rclone.conf"
    path.write_text(store.rclone_section("remote"))
    return path


# Sizes around the kernel's 128 KiB and 1 MiB read sizes, and a large file.
SIZED_FILES = {
    "empty.bin": 0,
    "one.bin": 1,
    "k128-minus-1.bin": 128 * 1024 - 1,
    "k128-plus-1.bin": 128 * 1024 + 1,
    "m1-minus-1.bin": MiB - 1,
    "m1.bin": MiB,
    "m1-plus-1.bin": MiB + 1,
    "large.bin": 101 * MiB + 7,
}
TREE_FILES = {
    "nested/top.txt": 20,
    "nested/a/b/c/deep.txt": 33,
    "nested/a/sibling.txt": 44,
    "with marker/file in dir.txt": 55,
    "café/naïve.txt": 66,
}
MARKERS = ["with marker/", "empty-dir/"]
# Keys that cannot all be file names; what survives is asserted in test_names.
HOSTILE_KEYS = {
    "hostile/ok.txt": 1,
    "hostile//empty-segment.txt": 2,
    "hostile/./dot.txt": 3,
    "hostile/../dotdot.txt": 4,
    "hostile/" + "x" * 256: 5,
    "hostile/" + "é" * 127 + "z": 6,  # 255 bytes: allowed
    "hostile/clash": 7,
    "hostile/clash/inside.txt": 8,
}


@pytest.fixture(scope="session")
def dataset(store: TestStore) -> dict[str, bytes]:
    """Container `dataset` filled once per backend; returns key -> content of every object."""
    objects = {name: data(name, size) for name, size in (SIZED_FILES | TREE_FILES).items()}
    objects |= {key: data(key, size) for key, size in HOSTILE_KEYS.items()}
    objects |= dict.fromkeys(MARKERS, b"")
    store.create_container("dataset")
    put_many(store, "dataset", objects)
    return objects


@pytest.fixture(scope="session")
def big_directory(store: TestStore) -> set[str]:
    """Container `wide` with one directory of 2,500 objects: 10 listing pages of
    BIG_DIRECTORY_PAGE (the tests set it: 10,000 objects, 10 pages of S3's 1,000, took
    ~100 s to upload per backend here)."""
    names = {f"f{i:05d}.txt" for i in range(10 * BIG_DIRECTORY_PAGE)}
    store.create_container("wide")
    put_many(store, "wide", {f"many/{name}": b"x" for name in names})
    return names


@pytest.fixture
def relay(store: TestStore, tmp_path: Path) -> Iterator[tuple[FaultProxy, Path]]:
    """A FaultProxy in front of the store's object and listing requests (tests/servers/
    fault_proxy.py; it records every exchange), and an rclone.conf whose remote `remote`
    goes through it."""
    with FaultProxy(store.data_port) as proxy:
        conf = tmp_path / "relayed.conf"
        conf.write_text(store.rclone_section_through("remote", proxy.url))
        yield proxy, conf


@pytest.fixture
def mount(
    dataset: dict[str, bytes], config: Path, tmp_path: Path
) -> Iterator[MountProcess]:
    """The `dataset` container mounted read-only; unmounted after the test, whatever happens."""
    with mounted("remote:dataset", tmp_path / "mnt", config) as process:
        yield process


@pytest.fixture(scope="session")
def shared_mount(
    dataset: dict[str, bytes], config: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MountProcess]:
    """`mount` made once per backend, for the tests that only read the dataset or try
    writes that must fail (test_reads, test_readonly, test_names, test_listing): a mount
    costs 2-4 s here, most of it the CLI's start-up (Python and its imports)."""
    mountpoint = tmp_path_factory.mktemp("shared") / "mnt"
    with mounted("remote:dataset", mountpoint, config) as process:
        yield process


def put_fault_data(store: TestStore) -> dict[str, bytes]:
    """Fill container `faults` of the fault suite (fault_kit.FILES); key -> content. The
    same bytes every time: a second fill of a store changes nothing."""
    objects = {key: data(f"faults-{key}", size) for key, size in fault_kit.FILES.items()}
    store.create_container(fault_kit.CONTAINER)
    if store.keys(fault_kit.CONTAINER) != set(objects):  # else filled already
        put_many(store, fault_kit.CONTAINER, objects)
    return objects


FOOD11_CONTAINER = "food11-train"
# 11 classes x (20 + 10) = 330 images of about 1.2 KB: a few seconds per epoch.
FOOD11_PER_SPLIT = {"training": 20, "evaluation": 10}


@pytest.fixture(scope="session")
def food11(store: TestStore) -> dict[str, bytes]:
    """Container `food11-train`: `{split}/class_NN/{label}_{n}.jpg`, as `objmount etl` loads
    it, once per backend for every test that reads it (test_training, test_prefetch_sampler);
    key -> content."""
    objects = transformed(food11_images(FOOD11_PER_SPLIT))
    store.create_container(FOOD11_CONTAINER)
    put_many(store, FOOD11_CONTAINER, objects)
    return objects


@pytest.fixture(scope="session")
def fault_data(store: TestStore) -> dict[str, bytes]:
    """Container `faults` of the fault suite (fault_kit.FILES), key -> content."""
    return put_fault_data(store)


@pytest.fixture(scope="session")
def every_store(moto_server: MotoS3Server, swift_stack: SwiftStack) -> list[TestStore]:
    """Both backends at once, for a test whose long waits overlap across them (each
    backend still asserted on its own)."""
    return [S3Store(moto_server), SwiftStore(swift_stack)]


# Keystone's token lifetime in the second stack (the main one's: 1 h).
TOKEN_LIFETIME_S = 6


class ShortTokenStack(SwiftStack):
    """A second stack whose tokens expire after TOKEN_LIFETIME_S (the main one: 1 h), with
    container `tokens`: f0.bin, f1.bin, f2.bin (shared by test_swift.py and
    test_faults_auth.py)."""

    def start(self) -> "ShortTokenStack":
        super().start()
        swift = SwiftStore(self)
        swift.create_container("tokens")
        for i in range(3):
            swift.put("tokens", f"f{i}.bin", data(f"token-{i}", MiB + i))
        return self


def short_token_stack_of(tmp_path_factory: pytest.TempPathFactory) -> ShortTokenStack:
    return ShortTokenStack(tmp_path_factory.mktemp("short-tokens"),
                           token_expiration_s=TOKEN_LIFETIME_S,
                           start_timeout_s=STACK_START_TIMEOUT_S)


@pytest.fixture(scope="session")
def short_token_stack(ahead: Ahead, tmp_path_factory: pytest.TempPathFactory) -> SwiftStack:
    return ahead.get("short_token_stack", lambda: short_token_stack_of(tmp_path_factory))
