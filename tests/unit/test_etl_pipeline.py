"""Pipeline files: the shipped Food-11 one parses, and mistakes are named."""

from pathlib import Path

import pytest

from objmount.errors import ConfigError
from objmount.etl.pipeline import expand_target, read_pipeline

REPO = Path(__file__).parents[2]


def test_the_food11_pipeline_matches_the_tutorial() -> None:
    pipeline = read_pipeline(REPO / "etl/food11.toml")
    assert pipeline.url.startswith("https://")
    assert pipeline.layout == "food11"
    assert pipeline.target == "chi_tacc:${CONTAINER}"
    assert (pipeline.load.transfers, pipeline.load.checkers) == (32, 16)
    assert pipeline.load.segment_size_bytes == 64 << 20
    assert pipeline.load.clean
    assert pipeline.directory == REPO / "etl"


def test_omitted_settings_take_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[extract]\nurl = "http://x/a.zip"\n[load]\ntarget = "r:c"\n')
    pipeline = read_pipeline(path)
    assert pipeline.sha256 is None
    assert pipeline.layout == "food11"
    assert pipeline.load.transfers == 32
    assert not pipeline.load.clean


@pytest.mark.parametrize(("text", "message"), [
    ('[load]\ntarget = "r:c"\n', "has no extract.url"),
    ('[extract]\nurl = "u"\n', "has no load.target"),
    ('[extract]\nurl = "u"\nsha = "x"\n[load]\ntarget = "r:c"\n', "unknown key extract.sha"),
    ('[extract]\nurl = "u"\n[load]\ntarget = "r:c"\ntransfers = "32"\n',
     "load.transfers must be an integer"),
    ('[extract]\nurl = "u"\n[load]\ntarget = "r:c"\ntransfers = 0\n', "at least 1"),
    ('[extract]\nurl = "u"\n[upload]\ntarget = "r:c"\n', "unknown section [upload]"),
    ("[extract\n", "cannot parse"),
])
def test_mistakes_are_config_errors_naming_them(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_pipeline(path)


def test_a_missing_pipeline_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read pipeline file"):
        read_pipeline(tmp_path / "absent.toml")


def test_the_target_takes_variables_from_the_environment() -> None:
    assert expand_target("chi_tacc:${CONTAINER}", {"CONTAINER": "c1"}) == "chi_tacc:c1"


def test_an_unset_target_variable_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match=r"set CONTAINER"):
        expand_target("chi_tacc:${CONTAINER}", {})
