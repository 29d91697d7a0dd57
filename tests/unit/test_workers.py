"""tests/workers.py's scheduler, driven as xdist's controller drives it, with fake workers."""

import json
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import workers

COLLECTION = [
    "tests/unit/test_a.py::test_one",
    "tests/integration/test_swift.py::test_short_token_1",
    "tests/unit/test_a.py::test_two",
    "tests/integration/test_faults_auth.py::test_short_token_2",
    "tests/unit/test_a.py::test_three",
    "tests/unit/test_a.py::test_four",
    "tests/integration/docker_tier/test_etl.py::test_d1",
    "tests/integration/docker_tier/test_etl.py::test_d2",
    "tests/integration/docker_tier/test_etl.py::test_d3",
    "tests/integration/test_listing.py::test_big[s3]",
    "tests/unit/test_a.py::test_five",
    "tests/integration/test_snapshots.py::test_big[s3]",
]
GROUPS = {nodeid: "short-token-stack" for nodeid in COLLECTION if "short_token" in nodeid}
GROUPS |= {nodeid: "docker-tier" for nodeid in COLLECTION if "docker_tier" in nodeid}
GROUPS |= {nodeid: "big_directory[s3]" for nodeid in COLLECTION if "test_big" in nodeid}


class FakeWorker:
    """What the scheduler uses of xdist's WorkerController: its id, its queue, shutdown."""

    def __init__(self, worker_id: str) -> None:
        self.gateway = SimpleNamespace(id=worker_id)
        self.queue: deque[int] = deque()
        self.shutting_down = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.queue.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True


def scheduler(tmp_path: Path, count: int) -> tuple[workers.PinnedScheduling, list[FakeWorker]]:
    config = SimpleNamespace(getvalue={"tx": [f"{count}*popen"]}.__getitem__,
                             option=SimpleNamespace(loadscopereorder=True), stash=pytest.Stash())
    config.stash[workers.GROUPS_DIR] = tmp_path
    nodes = [FakeWorker(f"gw{i}") for i in range(count)]
    (tmp_path / "gw0.json").write_text(json.dumps(GROUPS))
    sched = workers.PinnedScheduling(config)
    for node in nodes:
        sched.add_node(node)
    for node in nodes:
        sched.add_node_collection(node, COLLECTION)
    sched.schedule()
    return sched, nodes


def run_all(sched: workers.PinnedScheduling, nodes: list[FakeWorker]) -> dict[str, list[str]]:
    """Let the workers run their queues a test at a time, in turn; worker id -> what it ran."""
    ran: dict[str, list[str]] = {node.gateway.id: [] for node in nodes}
    while any(node.queue for node in nodes):
        for node in nodes:
            if node.queue:
                index = node.queue.popleft()
                ran[node.gateway.id].append(COLLECTION[index])
                sched.mark_test_complete(node, index)
    return ran


def test_every_test_runs_once_and_each_pinned_group_on_its_worker_in_order(
    tmp_path: Path,
) -> None:
    sched, nodes = scheduler(tmp_path, 2)
    ran = run_all(sched, nodes)
    assert sorted(ran["gw0"] + ran["gw1"]) == sorted(COLLECTION)
    docker = [n for n in COLLECTION if GROUPS.get(n) == "docker-tier"]
    tokens = [n for n in COLLECTION if GROUPS.get(n) == "short-token-stack"]
    assert [n for n in ran["gw0"] if n in docker] == docker
    assert [n for n in ran["gw1"] if n in tokens] == tokens
    assert all(node.shutting_down for node in nodes)
    assert sched.tests_finished


def unit_rank(nodeid: str) -> int:
    """Where the unit of `nodeid` starts in the collection (its group's first test)."""
    group = GROUPS.get(nodeid)
    return min(index for index, other in enumerate(COLLECTION)
               if other == nodeid or (group is not None and GROUPS.get(other) == group))


def test_the_tests_go_out_in_collection_order_a_group_where_it_starts(tmp_path: Path) -> None:
    """Each worker runs its tests in collection order (the S3 tests before the Swift ones),
    a group's tests in a row where its first one is."""
    sched, nodes = scheduler(tmp_path, 2)
    for tests in run_all(sched, nodes).values():
        assert tests == sorted(tests, key=lambda n: (unit_rank(n), COLLECTION.index(n)))


def test_with_one_worker_it_runs_every_group(tmp_path: Path) -> None:
    sched, nodes = scheduler(tmp_path, 1)
    order = sorted(COLLECTION, key=lambda n: (unit_rank(n), COLLECTION.index(n)))
    assert run_all(sched, nodes) == {"gw0": order}


def test_the_tests_of_a_shared_fixture_run_on_one_worker(tmp_path: Path) -> None:
    sched, nodes = scheduler(tmp_path, 2)
    big = {n for n in COLLECTION if GROUPS.get(n) == "big_directory[s3]"}
    assert any(big <= set(tests) for tests in run_all(sched, nodes).values())


def test_a_group_whose_worker_is_gone_runs_on_another(tmp_path: Path) -> None:
    sched, nodes = scheduler(tmp_path, 2)
    gw0, gw1 = nodes
    gw1.queue.clear()  # gw1 dies before running anything
    sched.remove_node(gw1)
    ran = run_all(sched, [gw0])
    assert sorted(ran["gw0"]) == sorted(COLLECTION)
