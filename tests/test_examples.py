"""The example notebooks in examples/ run from top to bottom (nbclient, a fresh Python kernel): the first on
the suite's tiny run, the second on its own (a GRU from NumPy weights, and arrays of its own)."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _execute(path: Path, cwd: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors


@pytest.mark.slow
def test_reading_a_run_notebook_runs(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("POPDYN_EXAMPLE_RUN", str(tiny_run))
    _execute(EXAMPLES / "01_read_a_run.ipynb", tmp_path)


@pytest.mark.slow
def test_your_own_network_notebook_runs(tmp_path):
    _execute(EXAMPLES / "02_your_own_network.ipynb", tmp_path)


def test_every_example_notebook_is_tested_and_has_no_stored_outputs():
    names = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))
    assert names == ["01_read_a_run.ipynb", "02_your_own_network.ipynb"]
    for p in EXAMPLES.glob("*.ipynb"):
        nb = nbformat.read(p, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), p.name
