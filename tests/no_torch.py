"""Python where torch cannot be imported: a sys.meta_path finder refuses `torch` and its
submodules, as in an environment without it (the real import machinery, nothing mocked)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[1]
BLOCK_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named {name!r} (blocked)")
sys.meta_path.insert(0, NoTorch())
"""
OBJMOUNT_CLI = "sys.argv[0] = 'objmount'\nfrom objmount.cli import main\nmain()\n"


def without_torch(code: str, *args: str, timeout_s: float = 120
                  ) -> subprocess.CompletedProcess[str]:
    """Run `code` (with `args` in sys.argv[1:]) in this interpreter, torch blocked."""
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code, *args],
                          capture_output=True, text=True, timeout=timeout_s, check=False,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


def objmount_without_torch(*args: str) -> subprocess.CompletedProcess[str]:
    """The objmount CLI, torch blocked."""
    return without_torch(OBJMOUNT_CLI, *args)
