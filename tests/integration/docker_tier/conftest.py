"""Fixtures of the Docker tier: a private engine and the images, once per test run.

The tier needs root, dockerd, the docker client, docker-compose and mmdebstrap
(`bash scripts/dev.sh test` installs them: Debian's docker.io, docker-compose and
mmdebstrap). Without them its tests fail, saying so; on a machine without Docker,
leave the tier out with `pytest -m "not docker"`.
"""

import sysconfig
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.docker_tier import images
from tests.servers.docker_engine import DockerEngine, missing_programs

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    missing = missing_programs()
    if missing:
        pytest.fail(f"the Docker tier needs {', '.join(missing)}: `bash scripts/dev.sh setup` "
                    "installs them (Debian's docker.io docker-compose mmdebstrap); "
                    "without Docker, leave the tier out: pytest -m 'not docker'", pytrace=False)
    with DockerEngine(tmp_path_factory.mktemp("docker") / "engine") as engine:
        yield engine


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Append the engine's log tail to the report of a failed test that used it."""
    report = yield
    engine = getattr(item, "funcargs", {}).get("docker_engine")
    if report.failed and isinstance(engine, DockerEngine):
        report.sections.append(("dockerd log", engine.log_tail()))
    return report


@pytest.fixture(scope="session")
def base_image(docker_engine: DockerEngine) -> str:
    return images.import_base(docker_engine)


@pytest.fixture(scope="session")
def built_images(docker_engine: DockerEngine, base_image: str) -> dict[str, str]:
    """Both images, built at once (much of each build waits on Debian or PyPI)."""
    with ThreadPoolExecutor(2) as pool:
        # docker/Dockerfile over the local base, tagged as the compose files expect.
        objmount = pool.submit(images.build, docker_engine, images.REPO / "docker/Dockerfile",
                               images.REPO, images.OBJMOUNT_TAG, base_image)
        jupyter = pool.submit(images.build_cached, docker_engine, HERE / "jupyter.Dockerfile",
                              images.JUPYTER_TAG, base_image)
        return {"objmount": objmount.result(), "jupyter": jupyter.result()}


@pytest.fixture(scope="session")
def objmount_image(built_images: dict[str, str]) -> str:
    return built_images["objmount"]


@pytest.fixture(scope="session")
def jupyter_image(built_images: dict[str, str]) -> str:
    return built_images["jupyter"]


@pytest.fixture(scope="session")
def host_site_packages() -> str:
    """The test run's own site-packages (torch, torchvision), bound into the Jupyter image."""
    return sysconfig.get_paths()["purelib"]
