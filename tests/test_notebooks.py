"""The notebooks run top to bottom on the built-in data (few draws, scratch folder), so they never rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebooks")


def test_there_are_four_notebooks_with_stripped_outputs():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), f"{path.name}: outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, scratch, monkeypatch):
    monkeypatch.setenv("GAELP_NOTEBOOK_OUT", str(scratch))
    monkeypatch.setenv("GAELP_NOTEBOOK_DRAWS", "150")
    monkeypatch.setenv("GAELP_NOTEBOOK_CHAINS", "2")
    monkeypatch.setenv("GAELP_NOTEBOOK_FORCE", "1")  # so few draws may miss the diagnostics gate
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    if path.stem.startswith("01"):
        assert (scratch / "models" / "notebook_demo" / "manifest.json").is_file()
    if path.stem.startswith("03"):
        assert (scratch / "reports" / "notebook_demo.html").is_file()
