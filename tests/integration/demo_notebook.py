"""notebooks/demo.ipynb run headless, on the host (test_training) or in a container
(docker_tier): the checks every run of it must pass."""

import json
import re
from pathlib import Path

import nbformat

REPO = Path(__file__).parents[2]
NOTEBOOK = REPO / "notebooks/demo.ipynb"


def blank_notebook() -> nbformat.NotebookNode:
    """The notebook as committed: no code cell carries outputs."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    return notebook


def assert_demo_notebook_ran(notebook: nbformat.NotebookNode, images: int, classes: int) -> None:
    """The notebook trained, evaluated `images` images cold then warm, and plotted both."""
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    text = "".join(out.get("text", "") for out in outputs)
    summary = json.loads(re.search(r"^SUMMARY (.*)$", text, re.MULTILINE).group(1))
    assert summary["images"] == images
    assert summary["cold_gets"] >= summary["images"]
    assert summary["warm_gets"] == 0
    assert summary["accuracy"] > 2 / classes  # each class has its own colour: learnable
    assert any("image/png" in out.get("data", {}) for out in outputs)
