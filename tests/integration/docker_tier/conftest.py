"""Fixtures of the Docker tier: a private engine and the images, once per test run, made
while the tests before the tier run (ahead.py; tests/integration/conftest.py starts them).

The tier needs root, dockerd, the docker client, docker-compose and mmdebstrap
(`bash scripts/dev.sh test` installs them: Debian's docker.io, docker-compose and
mmdebstrap). Without them its tests fail, saying so; on a machine without Docker,
leave the tier out with `pytest -m "not docker"`.
"""

import sysconfig

import pytest

from tests.integration.docker_tier.ahead import DockerTier, docker_tier_of
from tests.servers.ahead import Ahead
from tests.servers.docker_engine import DockerEngine, missing_programs


@pytest.fixture(scope="session")
def docker_tier(ahead: Ahead, tmp_path_factory: pytest.TempPathFactory) -> DockerTier:
    """The private engine and the images, started ahead (ahead.py)."""
    missing = missing_programs()
    if missing:
        pytest.fail(f"the Docker tier needs {', '.join(missing)}: `bash scripts/dev.sh setup` "
                    "installs them (Debian's docker.io docker-compose mmdebstrap); "
                    "without Docker, leave the tier out: pytest -m 'not docker'", pytrace=False)
    return ahead.get("docker_tier", lambda: docker_tier_of(tmp_path_factory))


@pytest.fixture(scope="session")
def docker_engine(docker_tier: DockerTier) -> DockerEngine:
    return docker_tier.engine


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Append the engine's log tail to the report of a failed test that used it."""
    report = yield
    engine = getattr(item, "funcargs", {}).get("docker_engine")
    if report.failed and isinstance(engine, DockerEngine):
        report.sections.append(("dockerd log", engine.log_tail()))
    return report


@pytest.fixture(scope="session")
def objmount_image(docker_tier: DockerTier) -> str:
    """docker/Dockerfile built over the local base, tagged as the compose files expect."""
    return docker_tier.images["objmount"]


@pytest.fixture(scope="session")
def jupyter_image(docker_tier: DockerTier) -> str:
    return docker_tier.images["jupyter"]


@pytest.fixture(scope="session")
def host_site_packages() -> str:
    """The test run's own site-packages (torch, torchvision), bound into the Jupyter image."""
    return sysconfig.get_paths()["purelib"]
