"""docker/docker-compose-etl.yaml's three stages, run by docker-compose on a real engine.

Each stage runs the objmount image built from docker/Dockerfile, sharing the
compose file's `food11` volume, as the Chameleon tutorial runs them: extract
downloads the archive (from a local HTTP server), transform sorts it into class
directories, load uploads it with the rclone.conf of `~` bound in. The one change
to the file is host networking (compose-etl-host-network.yaml), to reach the test
servers on 127.0.0.1. Run once per backend.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from objmount.etl.manifest import MANIFEST_NAME
from tests.food11_archive import food11_files, transformed, write_zip
from tests.integration.docker_tier.images import REPO
from tests.integration.stores import TestStore, get_many
from tests.servers.docker_engine import DockerEngine
from tests.servers.http_server import FileServer

pytestmark = pytest.mark.docker

HERE = Path(__file__).parent
COMPOSE_FILES = [REPO / "docker/docker-compose-etl.yaml", HERE / "compose-etl-host-network.yaml"]
PER_CLASS = 4
STAGES = ("extract-data", "transform-data", "load-data")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FileServer, dict]]:
    """A Food-11-shaped archive on a local HTTP server, and its files."""
    files = food11_files(PER_CLASS)
    root = tmp_path_factory.mktemp("compose-web")
    write_zip(files, root / "food11.zip")
    with FileServer(root) as server:
        yield server, files


def test_the_three_stages_load_the_dataset_into_the_store(
    docker_engine: DockerEngine, objmount_image: str, store: TestStore,
    archive: tuple[FileServer, dict], tmp_path: Path,
) -> None:
    web, files = archive
    container = f"compose-etl-{store.kind}"
    rclone_conf = tmp_path / ".config/rclone/rclone.conf"  # the load stage binds ~/.config/...
    rclone_conf.parent.mkdir(parents=True)
    rclone_conf.write_text(store.rclone_section("chi_tacc"))
    env = {"HOME": str(tmp_path), "FOOD11_URL": web.url("food11.zip"), "CONTAINER": container}
    project = f"objmount-etl-{store.kind}"
    said = {}
    try:
        for stage in (*STAGES, "load-data"):  # load twice: the second uploads nothing
            result = docker_engine.compose(COMPOSE_FILES, "run", "--rm", "-T", stage,
                                           project=project, env=env)
            said[stage] = result.stdout + result.stderr
    finally:
        docker_engine.compose(COMPOSE_FILES, "down", "--volumes", project=project, env=env,
                              check=False)
    objects = transformed(files)
    assert (f"extract: unpacked the archive into /data/Food-11, which holds {len(files)} files"
            in said["extract-data"])
    assert f"transform: moved {3 * 11 * PER_CLASS} files" in said["transform-data"]
    assert f"load: uploaded 0 (0.0 MiB), skipped {len(objects)}, deleted 0" in said["load-data"]
    assert store.keys(container) == set(objects) | {MANIFEST_NAME}
    assert get_many(store, container, objects) == objects
