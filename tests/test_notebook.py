"""The example notebook runs top to bottom in a real Jupyter kernel (nbclient + ipykernel),
on data it writes itself; any error in any cell fails the test."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "example.ipynb"


@pytest.mark.slow
def test_example_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("LSIO_EXAMPLE_DIR", str(tmp_path))
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    # the `notebook` extra (and the test extra) install ipywidgets: tqdm draws its widget
    # instead of printing "IProgress not found" and a text bar
    assert "IProgress not found" not in text
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert "200 files" in text and "201 chunks" in text
    assert "2 workers, 64 chunks read" in text  # the Dask cluster cell, through lsio's pipeline
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plot was drawn
    assert (tmp_path / "image.zarr" / "zarr.json").exists()
