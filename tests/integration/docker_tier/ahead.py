"""The Docker tier's engine and images, made while the rest of the suite runs.

objmount's image is built from docker/Dockerfile on every run (apt-get, pip, a compile
of pyfuse3: 3-4 minutes here, most of it waiting on Debian and PyPI). The tier runs
last (tests/integration/conftest.py orders it) and `DockerTier` is started ahead, at the
session's first test (tests/servers/ahead.py), so that this wait overlaps the tests
before the tier instead of adding to them. The engine and the images are the ones the
tier made for itself before: only when they are made changes.
"""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.docker_tier import images
from tests.servers.docker_engine import DockerEngine

HERE = Path(__file__).parent


class DockerTier:
    """A private engine under `root` and the tier's images in it (`images`, tags by name)."""

    def __init__(self, root: Path) -> None:
        self.engine = DockerEngine(root)
        self.images: dict[str, str] = {}

    def start(self) -> "DockerTier":
        """Start the engine, import the base, then build both images at once (each mostly
        waits on Debian or PyPI). Raises what a step raised; `stop()` interrupts it."""
        self.engine.start()
        base = images.import_base(self.engine)
        with ThreadPoolExecutor(1) as pool:
            # docker/Dockerfile over the local base, tagged as the compose files expect.
            objmount = pool.submit(images.build, self.engine, images.REPO / "docker/Dockerfile",
                                   images.REPO, images.OBJMOUNT_TAG, base)
            jupyter = images.build_cached(self.engine, HERE / "jupyter.Dockerfile",
                                          images.JUPYTER_TAG, base)
            self.images = {"base": base, "objmount": objmount.result(), "jupyter": jupyter}
        return self

    def stop(self) -> None:
        """Stop the engine (and so its containers; a build under way fails at once)."""
        self.engine.stop()


def docker_tier_of(tmp_path_factory: pytest.TempPathFactory) -> DockerTier:
    """The session's DockerTier (not started), its engine under the session's temporary
    directory."""
    return DockerTier(tmp_path_factory.mktemp("docker") / "engine")
