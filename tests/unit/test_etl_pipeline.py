"""Pipeline files: the shipped Food-11 one parses, mistakes are named, and the download URL
may come from the environment."""

from pathlib import Path

import pytest

from objmount.errors import ConfigError
from objmount.etl.cli import download_url
from objmount.etl.pipeline import expand_variables, read_pipeline

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
    assert expand_variables("chi_tacc:${CONTAINER}", {"CONTAINER": "c1"}, "load.target",
                            "--target") == "chi_tacc:c1"


def test_an_unset_target_variable_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match=r"load.target .* set CONTAINER .* or pass --target"):
        expand_variables("chi_tacc:${CONTAINER}", {}, "load.target", "--target")


def test_the_url_may_come_from_the_environment_and_its_secrets_are_never_named() -> None:
    url = "https://u:pw@host/x.zip?sig=SECRET"
    assert expand_variables("${DATA_URL}", {"DATA_URL": url}, "extract.url", "--url-env") == url
    with pytest.raises(ConfigError, match=r"set SIG") as error:
        expand_variables("https://u:pw@host/x.zip?sig=${SIG}", {}, "extract.url", "--url-env")
    assert "pw" not in str(error.value) and "sig=" not in str(error.value)


URL = "https://host/x.zip?X-Amz-Signature=abc"


@pytest.mark.parametrize(("given", "env_name", "default", "env", "expected"), [
    (URL, None, "https://default/y.zip", {}, URL),
    (None, "DATA_URL", "https://default/y.zip", {"DATA_URL": URL}, URL),
    (None, None, URL, {}, URL),
])
def test_the_download_url_comes_from_argv_a_named_variable_or_the_default(
    given: str | None, env_name: str | None, default: str | None, env: dict[str, str],
    expected: str,
) -> None:
    assert download_url(given, env_name, default, env) == expected


@pytest.mark.parametrize(("given", "env_name", "message"), [
    (URL, "DATA_URL", "not both"),
    (None, "DATA_URL", "DATA_URL is not set"),
    (None, None, "set OBJMOUNT_ETL_URL"),
])
def test_a_missing_or_doubled_url_is_a_config_error(
    given: str | None, env_name: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        download_url(given, env_name, None, {})
    assert "Signature" not in str(error.value)
