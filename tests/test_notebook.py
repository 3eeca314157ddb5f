"""The walkthrough notebook: kept without outputs in git, and run top to bottom (slow) in a fresh kernel."""

from pathlib import Path

import nbformat
import pandas as pd
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_the_walkthrough_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    cells = _code_cells(nb)
    assert cells and all(not c.outputs and c.execution_count is None for c in cells)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_walkthrough_runs_top_to_bottom(tmp_path):
    """simulate → train → evaluate → audit → what-if → score, in a kernel whose working directory is a
    temporary one: no cell raises (nbclient stops at the first that does), nothing is written to stderr
    (no warnings or third-party noise), each figure is shown once, and the outputs are on disk."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    cells = _code_cells(nb)
    stderr = [o.text for c in cells for o in c.outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, stderr
    figures = [c.source for c in cells if any("image/png" in o.get("data", {}) for o in c.outputs)]
    assert len(figures) == 2 and all(src.startswith("fig = ") or "\nfig = " in src for src in figures)
    for c in cells:
        assert sum("image/png" in o.get("data", {}) for o in c.outputs) <= 1, c.source

    text = "\n".join(o.text for c in cells for o in c.outputs if o.output_type == "stream")
    assert "audit passed: True" in text
    work = tmp_path / "runs" / "walkthrough"
    assert (work / "audit" / "report.html").is_file() and (work / "mlflow.db").is_file()
    scores = pd.read_parquet(work / "scores.parquet")
    assert len(scores) == 6000 and set(scores["status"]) <= {"scored", "no events before as-of"}
