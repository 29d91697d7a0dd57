"""docker/docker-compose-etl.yaml runs the tutorial's three stages with objmount.

These read the file as compose would (YAML, with its ${VAR} guards); the Docker
tier (tests/integration/docker_tier) runs its stages on a real engine.
"""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).parents[2]
STAGING = "/data/Food-11"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker/docker-compose-etl.yaml").read_text())


def test_the_three_stages_are_services(compose: dict) -> None:
    assert set(compose["services"]) == {"extract-data", "transform-data", "load-data"}


def test_every_stage_runs_the_objmount_image_on_the_shared_volume(compose: dict) -> None:
    assert "food11" in compose["volumes"]
    for service in compose["services"].values():
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        assert (REPO / "docker" / service["build"]["context"] / "docker/Dockerfile").is_file()
        assert "food11:/data" in service["volumes"]


def test_each_stage_runs_its_etl_command_on_the_staging_directory(compose: dict) -> None:
    services = compose["services"]
    extract = services["extract-data"]["command"]
    assert extract == ["etl", "extract", "--staging", STAGING]
    transform = services["transform-data"]["command"]
    assert transform[:2] == ["etl", "transform"] and STAGING in transform
    load = services["load-data"]["command"]
    assert load[:3] == ["etl", "load", STAGING]
    assert {"--clean", "--transfers=32", "--checkers=16"} <= set(load)


def test_the_load_target_container_must_be_set(compose: dict) -> None:
    target = compose["services"]["load-data"]["command"][3]
    assert "${CONTAINER:?set CONTAINER to the target container}" in target


def test_rclone_conf_is_mounted_read_only_into_the_load_stage_only(compose: dict) -> None:
    services = compose["services"]
    conf = "~/.config/rclone/rclone.conf:/root/.config/rclone/rclone.conf:ro"
    assert conf in services["load-data"]["volumes"]
    assert not any(conf in services[name]["volumes"] for name in ("extract-data", "transform-data"))


def test_the_image_installs_fuse_and_objmount() -> None:
    dockerfile = (REPO / "docker/Dockerfile").read_text()
    assert dockerfile.startswith("#")
    assert "ARG BASE=python:3.11-slim\nFROM ${BASE}\n" in dockerfile
    assert "fuse3 libfuse3-dev pkg-config gcc" in dockerfile
    assert "pip install" in dockerfile
    assert 'ENTRYPOINT ["objmount"]' in dockerfile


def test_the_download_url_reaches_extract_in_its_environment_not_its_argv(compose: dict) -> None:
    extract = compose["services"]["extract-data"]
    assert extract["environment"]["OBJMOUNT_ETL_URL"].startswith("${FOOD11_URL:-https://")
    assert not any("://" in part or "FOOD11_URL" in part for part in extract["command"])
