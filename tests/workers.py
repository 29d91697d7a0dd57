"""How the suite is shared among pytest-xdist workers (`bash scripts/dev.sh test` runs two).

Most of the suite waits (on deadlines, mounts, servers), so two workers on two cores
take less time: 961 s against 1363 s for one process here (the workers' own load is
3 to 5, where CPU-bound mounts and uploads take longer each). Each worker is a test
session of its own, with its own servers (moto, the Swift stack), temporary directory
and ports (tests/servers/net.py).

Tests go to whichever worker is free, one at a time, in collection order (the S3 tests
before the Swift ones, so that each worker's Swift stack comes up meanwhile: conftest's
`ahead`), except the tests of a PINNED group: those all run on one worker, known
before the first test, so that only that worker starts the group's slow server ahead
(the Docker tier's engine and images, the short-token Swift stack) and no other starts
it at all. The tests that use one of the SHARED session fixtures (long uploads) are a
group per backend too, run by any one worker. A group's tests keep their order and run
as one unit, given out where its first test is in the collection.

Only a worker sees what a test needs (its markers, its fixtures); the scheduler, in the
controller, sees node ids. So each worker writes the groups of its collection to a file
in a directory the controller made (xdist's own `xdist_group` does not get through:
it renames node ids, which pytest 9 no longer takes), before it reports the collection.

Invariants: every collected test runs exactly once; a pinned group runs on its worker
while that worker lives, else on any (whose `ahead.get` then starts the server itself).
Without xdist (`pytest tests/unit/test_x.py`) none of this is used.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling
from xdist.workermanage import WorkerController

# The groups whose tests share one worker, because each needs a slow server of its own.
PINNED = ("docker-tier", "short-token-stack")
# Session fixtures that take long to make (uploads): the tests that use one, per backend,
# run on one worker (any), which makes it once instead of once per worker.
SHARED = ("big_directory", "images", "many_small", "seaweed")
# workerinput's key for the directory of the groups files (one per worker).
GROUPS_DIR_INPUT = "objmount_groups_dir"
GROUPS_DIR = pytest.StashKey[Path]()


def group_of(item: pytest.Item) -> str | None:
    """The group of tests run as one unit that `item` belongs to, if any: a PINNED one, or
    a SHARED fixture's for one backend."""
    if item.get_closest_marker("docker") is not None:
        return "docker-tier"
    if "short_token_stack" in item.fixturenames:
        return "short-token-stack"
    callspec = getattr(item, "callspec", None)
    backend = callspec.params.get("store", "") if callspec is not None else ""
    for name in SHARED:
        if name in item.fixturenames:
            return f"{name}[{backend}]"
    return None


def worker_of(group: str, workers: int) -> str:
    """The id of the worker (gw0, gw1...) that runs `group`, among `workers`."""
    return f"gw{PINNED.index(group) % workers}"


def runs_here(item: pytest.Item) -> bool:
    """Whether this session may run `item`: any test without xdist; with it, a test of a
    pinned group only on the group's worker (the others run here or elsewhere)."""
    worker, group = os.environ.get("PYTEST_XDIST_WORKER"), group_of(item)
    if worker is None or group not in PINNED:
        return True
    return worker == worker_of(group, int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))


def give_groups_dir(config: pytest.Config, workerinput: dict[str, object]) -> None:
    """In the controller: tell a worker where to write its groups (a directory made once,
    removed by `remove_groups_dir`)."""
    if GROUPS_DIR not in config.stash:
        config.stash[GROUPS_DIR] = Path(tempfile.mkdtemp(prefix="objmount-xdist-groups-"))
    workerinput[GROUPS_DIR_INPUT] = str(config.stash[GROUPS_DIR])


def remove_groups_dir(config: pytest.Config) -> None:
    if GROUPS_DIR in config.stash:
        shutil.rmtree(config.stash[GROUPS_DIR], ignore_errors=True)


def write_groups(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a worker: write node id -> pinned group for `items` (nothing outside xdist)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None or GROUPS_DIR_INPUT not in workerinput:
        return
    groups = {item.nodeid: group for item in items if (group := group_of(item)) is not None}
    path = Path(workerinput[GROUPS_DIR_INPUT]) / f"{workerinput['workerid']}.json"
    path.write_text(json.dumps(groups))


class PinnedScheduling(LoadScopeScheduling):
    """xdist's scope scheduling with one unit per test, except one per PINNED group, given
    out in collection order; a pinned group only to its worker while that one is alive."""

    def schedule(self) -> None:
        if self.collection is None and self.collection_is_completed:
            first, order = next(iter(self.registered_collections.items()))
            path = self.config.stash[GROUPS_DIR] / f"{first.gateway.id}.json"
            self._groups: dict[str, str] = json.loads(path.read_text())
            self._rank: dict[str, int] = {}
            for index, nodeid in enumerate(order):
                self._rank.setdefault(self._split_scope(nodeid), index)
        super().schedule()

    def _split_scope(self, nodeid: str) -> str:
        return self._groups.get(nodeid, nodeid)

    def _assignable(self, node: WorkerController) -> list[str]:
        """The units left that `node` may run."""
        alive = {other.gateway.id for other in self.nodes}

        def may_run(scope: str) -> bool:
            if scope not in PINNED:
                return True
            owner = worker_of(scope, self.numnodes)
            return owner == node.gateway.id or owner not in alive

        return [scope for scope in self.workqueue if may_run(scope)]

    def _assign_work_unit(self, node: WorkerController) -> None:
        """Give `node` the first unit, in collection order, that it may run (none if none)."""
        scopes = self._assignable(node)
        if not scopes:
            return
        scope = min(scopes, key=self._rank.__getitem__)
        work_unit = self.workqueue.pop(scope)
        self.assigned_work.setdefault(node, {})[scope] = work_unit
        worker_collection = self.registered_collections[node]
        node.send_runtest_some([worker_collection.index(nodeid)
                                for nodeid, completed in work_unit.items() if not completed])

    def _reschedule(self, node: WorkerController) -> None:
        """Keep `node` at 2 pending tests or more while units it may run are left; shut it
        down once none is."""
        if node.shutting_down:
            return
        if not self._assignable(node):
            node.shutdown()
            return
        if self._pending_of(self.assigned_work[node]) > 2:
            return
        self._assign_work_unit(node)
