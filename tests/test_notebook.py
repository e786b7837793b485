"""The quickstart notebook runs end to end (tiny budget, in a fresh kernel)."""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("QMARL_NOTEBOOK_BATCHES", "2")
    monkeypatch.setenv("QMARL_NOTEBOOK_EPISODES", "8")
    monkeypatch.setenv("QMARL_NOTEBOOK_AGENTS", "200")
    monkeypatch.setenv("PYTHONPATH", str(NOTEBOOK.parents[1]))
    monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    outputs = "".join(
        out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )  # fmt: skip
    assert "run directory:" in outputs
    assert "mean_prob score" in outputs and "none      score" in outputs
    assert "200 agents" in outputs
    assert (tmp_path / "runs" / "quickstart" / "policy.gif").exists()
