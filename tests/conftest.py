"""Suite-wide hooks, loaded by every pytest process (under xdist, by the controller too):
how tests are shared among workers (tests/workers.py) and the table of measured times
(tests/integration/bounds.py), which reaches the controller inside the test reports."""

import pytest
from xdist.remote import Producer
from xdist.workermanage import WorkerController

from tests import workers
from tests.integration import bounds

BOUNDS_PROPERTY = "bounds_measured"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> object:
    if config.getvalue("dist") in ("load", "loadgroup"):
        return workers.PinnedScheduling(config, log)
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: WorkerController) -> None:
    workers.give_groups_dir(node.config, node.workerinput)


def pytest_unconfigure(config: pytest.Config) -> None:
    workers.remove_groups_dir(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    workers.write_groups(config, items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Carry the times measured during this phase in the report (xdist sends it to the
    controller, which prints the table)."""
    report = yield
    measured = bounds.take_new()
    if measured:
        report.user_properties.append((BOUNDS_PROPERTY, [vars(m) for m in measured]))
    return report


# What the reports carried, in this process (under xdist: the controller's, from all workers).
RECEIVED: list[bounds.Measured] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for name, measured in report.user_properties:
        if name == BOUNDS_PROPERTY:
            RECEIVED.extend(bounds.Measured(**fields) for fields in measured)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The times the fault suite measured (tests/integration/bounds.py), as a table."""
    lines = bounds.summary(RECEIVED)
    if lines:
        terminalreporter.section("measured times (bounds asserted)")
        for line in lines:
            terminalreporter.write_line(line)
