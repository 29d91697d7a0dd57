"""docker/docker-compose-jupyter.yaml binds the host's objmount mount into Jupyter, read-only.

These read the file as compose would (YAML, with its ${VAR:-default} guards); the
Docker tier (tests/integration/docker_tier) runs it on a real engine.
"""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).parents[2]
COMPOSE = REPO / "docker/docker-compose-jupyter.yaml"


@pytest.fixture(scope="module")
def jupyter() -> dict:
    compose = yaml.safe_load(COMPOSE.read_text())
    assert set(compose["services"]) == {"jupyter"}
    return compose["services"]["jupyter"]


def bind_of(service: dict, target: str) -> dict:
    return next(v for v in service["volumes"] if isinstance(v, dict) and v["target"] == target)


def test_the_mount_is_bound_read_only_with_the_long_syntax(jupyter: dict) -> None:
    bind = bind_of(jupyter, "/mnt/Food-11")
    # The long syntax: a missing mount fails the start instead of binding a new empty
    # directory (compose 1.29 knows no create_host_path, and needs none).
    assert bind["type"] == "bind"
    assert bind["source"] == "${OBJMOUNT_MOUNTPOINT:-/mnt/object}"
    assert bind["read_only"] is True


def test_a_later_host_mount_propagates_into_the_container(jupyter: dict) -> None:
    assert bind_of(jupyter, "/mnt/Food-11")["bind"]["propagation"] == "rslave"


def test_no_short_syntax_binds_the_mount(jupyter: dict) -> None:
    assert not [v for v in jupyter["volumes"] if isinstance(v, str) and "/mnt/object" in v]


def test_the_notebook_finds_the_dataset_and_the_notebooks_are_mounted(jupyter: dict) -> None:
    assert jupyter["environment"]["OBJMOUNT_DATA"] == "/mnt/Food-11"
    notebooks = next(v for v in jupyter["volumes"] if isinstance(v, str) and "notebooks" in v)
    source, target = notebooks.split(":")
    assert (COMPOSE.parent / source / "demo.ipynb").is_file()
    assert target == "/home/jovyan/work"


def test_jupyter_is_published_with_room_for_dataloader_workers(jupyter: dict) -> None:
    assert jupyter["image"].startswith("${JUPYTER_IMAGE:-quay.io/jupyter/")
    assert "8888:8888" in jupyter["ports"]
    assert jupyter["shm_size"] == "8g"


def test_the_header_says_to_mount_with_allow_other_first() -> None:
    header = COMPOSE.read_text().split("\nservices:")[0]
    assert "--allow-other" in header and "/mnt/object" in header
