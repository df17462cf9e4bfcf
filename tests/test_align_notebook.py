"""notebooks/face-detection-and-alignment.ipynb runs end to end on its default photo (skimage's astronaut)."""
from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "face-detection-and-alignment.ipynb"


def test_notebook_runs_on_the_astronaut(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert "parameters" in nb.cells[1].metadata.get("tags", []), "papermill needs a cell tagged 'parameters'"
    assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "commit without outputs"
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    images = [o for cell in nb.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2                                   # the detections figure and the crops figure
    text = "".join(o.get("text", "") for cell in nb.cells for o in cell.get("outputs", []))
    assert "skipped" not in text                              # both astronaut photos gave a face
