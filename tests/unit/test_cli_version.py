"""`objmount --version` answers with the version, as `objmount version` does."""

import subprocess
import sys

import pytest

from objmount import __version__


@pytest.mark.parametrize("args", [["--version"], ["-V"], ["version"]])
def test_the_version_is_printed_and_nothing_else(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "objmount", *args], capture_output=True,
                            text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"objmount {__version__}\n", "")
