"""docker/docker-compose-jupyter.yaml with a real objmount mount bound in, on a real engine.

As the README's "Docker into Jupyter": objmount mounts on the host with
--allow-other, the compose file binds the mountpoint into a Jupyter container
(read-only, bind-propagation rslave), and the notebook runs as uid 1000 there. The
image is a stand-in for quay.io/jupyter/pytorch-notebook (jupyter.Dockerfile);
compose-jupyter-test.yaml turns its network off and binds torch in. The
mountpoint's parent is a shared bind mount the test makes (rslave needs one; the
host's / stays as it is). S3 only: the container sees a mount, whatever its store.
"""

import hashlib
import json
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from tests.food11_archive import CLASSES, transformed
from tests.food11_images import food11_images
from tests.integration.demo_notebook import assert_demo_notebook_ran
from tests.integration.docker_tier.images import REPO
from tests.integration.mounting import MountProcess, mounted
from tests.integration.stores import S3Store, put_many
from tests.servers.docker_engine import DockerEngine
from tests.servers.s3_server import MotoS3Server

pytestmark = [pytest.mark.docker, pytest.mark.mount]

HERE = Path(__file__).parent
COMPOSE_FILES = [REPO / "docker/docker-compose-jupyter.yaml", HERE / "compose-jupyter-test.yaml"]
PROJECT = "objmount-jupyter"
BUCKET = "food11-docker"
PER_SPLIT = {"training": 20, "evaluation": 10}
DATA_IN_CONTAINER = "/mnt/Food-11"  # the compose file's bind target
# Files of sizes around a block (8 MiB) beside the images: read whole, byte for byte.
SIZED = {"sizes/empty.bin": 0, "sizes/one.bin": 1, "sizes/block-plus-one.bin": (8 << 20) + 1}

# Run in the container: sha256 of every file under the mount, by relative path.
HASH_EVERY_FILE = """
import hashlib, json, os, sys
root = sys.argv[1]
out = {}
for directory, _, names in os.walk(root):
    for name in names:
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
            out[os.path.relpath(path, root)] = hashlib.file_digest(f, "sha256").hexdigest()
print(json.dumps(out))
"""
# Run in the container: every kind of write, and the errno each one got.
TRY_WRITES = """
import errno, json, os, sys
root = sys.argv[1]
existing = os.path.join(root, "sizes/one.bin")
attempts = {
    "create": lambda: open(os.path.join(root, "new.txt"), "w"),
    "open for writing": lambda: open(existing, "r+b"),
    "mkdir": lambda: os.mkdir(os.path.join(root, "newdir")),
    "unlink": lambda: os.unlink(existing),
    "rename": lambda: os.rename(existing, existing + ".moved"),
    "chmod": lambda: os.chmod(existing, 0o777),
}
said = {}
for what, attempt in attempts.items():
    try:
        attempt()
        said[what] = "allowed"
    except OSError as exc:
        said[what] = errno.errorcode[exc.errno]
print(json.dumps(said))
"""
LIST_ROOT = """
import errno, json, os, sys
try:
    print(json.dumps(sorted(os.listdir(sys.argv[1]))))
except OSError as exc:
    print(json.dumps(errno.errorcode[exc.errno]))
"""
# Run in the container: the notebook, executed, as one line after NOTEBOOK (the kernel
# logs on the same stream).
RUN_NOTEBOOK = """
import json, nbclient, nbformat
notebook = nbformat.read("/home/jovyan/work/demo.ipynb", as_version=4)
nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                        resources={"metadata": {"path": "/home/jovyan/work"}}).execute()
print("NOTEBOOK", json.dumps(notebook))
"""


@dataclass
class Jupyter:
    """The compose service, up; `python` runs code in it as its user (uid 1000)."""

    engine: DockerEngine
    env: dict[str, str]
    seen_at_start: object

    def python(self, code: str, *args: str, env: dict[str, str] | None = None) -> str:
        options = [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]
        result = self.engine.compose(COMPOSE_FILES, "exec", "-T", *options, "jupyter", "python",
                                     "-c", code, *args, project=PROJECT, env=self.env)
        return result.stdout


@pytest.fixture(scope="module")
def shared_parent(docker_engine: DockerEngine) -> Iterator[Path]:
    """A directory that is a shared mount of its own, inside the engine's root.

    Inside the engine's root, so that the supervisor unmounts it if this process dies.
    """
    parent = docker_engine.root / "shared"
    parent.mkdir()
    subprocess.run(["mount", "--bind", str(parent), str(parent)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(parent)], check=True)
        (parent / "object").mkdir()
        (parent / "private").mkdir()
        yield parent
    finally:
        subprocess.run(["umount", "--lazy", str(parent)], check=False)


@pytest.fixture(scope="module")
def dataset(moto_server: MotoS3Server, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[dict[str, bytes], Path]:
    """Food-11 images and a few sized files in a bucket; their contents and an rclone.conf."""
    store = S3Store(moto_server)
    objects = transformed(food11_images(PER_SPLIT))
    objects |= {key: random.Random(key).randbytes(size) for key, size in SIZED.items()}
    store.create_container(BUCKET)
    put_many(store, BUCKET, objects)
    config = tmp_path_factory.mktemp("jupyter-conf") / "rclone.conf"
    config.write_text(store.rclone_section("remote"))
    return objects, config


@pytest.fixture(scope="module")
def jupyter(docker_engine: DockerEngine, jupyter_image: str, shared_parent: Path,
            host_site_packages: str) -> Iterator[Jupyter]:
    """`docker-compose up` of the Jupyter service, bound to an empty, unmounted mountpoint."""
    env = {"OBJMOUNT_MOUNTPOINT": str(shared_parent / "object"), "JUPYTER_IMAGE": jupyter_image,
           "HOST_SITE_PACKAGES": host_site_packages}
    try:
        docker_engine.compose(COMPOSE_FILES, "up", "-d", project=PROJECT, env=env)
        service = Jupyter(docker_engine, env, None)
        service.seen_at_start = json.loads(service.python(LIST_ROOT, DATA_IN_CONTAINER))
        yield service
    finally:
        docker_engine.compose(COMPOSE_FILES, "down", "--timeout", "5", project=PROJECT, env=env,
                              check=False)


@pytest.fixture
def live_mount(jupyter: Jupyter, dataset: tuple[dict[str, bytes], Path], shared_parent: Path,
               tmp_path: Path) -> Iterator[MountProcess]:
    """objmount on the bound mountpoint with --allow-other, made after the container started;
    a mount and cache of its own for each test (the notebook counts its cold GETs)."""
    _, config = dataset
    with mounted(f"remote:{BUCKET}", shared_parent / "object", config, "--allow-other",
                 "--cache-dir", str(tmp_path / "cache")) as mount:
        yield mount


def test_a_mount_made_after_the_container_started_shows_up_in_it(
    jupyter: Jupyter, live_mount: MountProcess
) -> None:
    assert jupyter.seen_at_start == []
    assert json.loads(jupyter.python(LIST_ROOT, DATA_IN_CONTAINER)) == [
        "evaluation", "sizes", "training"]


def test_the_container_user_reads_every_file_byte_exact(
    jupyter: Jupyter, live_mount: MountProcess, dataset: tuple[dict[str, bytes], Path]
) -> None:
    objects, _ = dataset
    assert jupyter.python("import os; print(os.getuid())").strip() == "1000"
    hashes = json.loads(jupyter.python(HASH_EVERY_FILE, DATA_IN_CONTAINER))
    assert hashes == {key: hashlib.sha256(content).hexdigest() for key, content in objects.items()}


def test_the_container_user_cannot_write(jupyter: Jupyter, live_mount: MountProcess) -> None:
    said = json.loads(jupyter.python(TRY_WRITES, DATA_IN_CONTAINER))
    assert said == dict.fromkeys(said, "EROFS") and len(said) == 6


def test_the_demo_notebook_runs_headless_in_the_container(
    jupyter: Jupyter, live_mount: MountProcess
) -> None:
    said = jupyter.python(RUN_NOTEBOOK, env={"OBJMOUNT_TRAIN_STEPS": "20"})
    line = next(line for line in said.splitlines() if line.startswith("NOTEBOOK "))
    notebook = nbformat.from_dict(json.loads(line.removeprefix("NOTEBOOK ")))
    assert_demo_notebook_ran(notebook, PER_SPLIT["evaluation"] * CLASSES, CLASSES)


def test_without_allow_other_the_container_user_gets_eacces(
    docker_engine: DockerEngine, jupyter: Jupyter, dataset: tuple[dict[str, bytes], Path],
    shared_parent: Path,
) -> None:
    """In a container started before the mount (rslave), and in one started after it."""
    _, config = dataset
    mountpoint = shared_parent / "private"
    env = jupyter.env | {"OBJMOUNT_MOUNTPOINT": str(mountpoint)}
    before = docker_engine.compose(COMPOSE_FILES, "run", "-d", "jupyter", project=PROJECT,
                                   env=env).stdout.split()[-1]
    try:
        with mounted(f"remote:{BUCKET}", mountpoint, config) as mount:
            seen_by = {
                "started before": docker_engine.docker("exec", before, "python", "-c", LIST_ROOT,
                                                       DATA_IN_CONTAINER).stdout,
                "started after": docker_engine.compose(
                    COMPOSE_FILES, "run", "--rm", "-T", "jupyter", "python", "-c", LIST_ROOT,
                    DATA_IN_CONTAINER, project=PROJECT, env=env).stdout,
            }
            assert sorted(p.name for p in mount.path.iterdir()) == [
                "evaluation", "sizes", "training"]  # the user who mounted reads it
    finally:
        docker_engine.docker("rm", "--force", before, check=False)
    assert {when: json.loads(said) for when, said in seen_by.items()} == {
        "started before": "EACCES", "started after": "EACCES"}
