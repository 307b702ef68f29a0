"""Every notebook under notebooks/ runs top to bottom, and is stored without outputs.

These tests carry the `notebooks` marker and are left out of the default selection, like `slow`:
run them with `make test-notebooks` (or `pytest -m notebooks tests/notebooks`). Each notebook is
executed in memory by nbclient in a fresh kernel of this interpreter, with a temporary folder as
its working directory; the file on disk is never rewritten.
"""

import os
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.notebooks

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402 (after the skips)
from jupyter_client.manager import KernelManager  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 600
# Each notebook is meant to finish within 3 minutes on one CPU thread; the limit leaves room for a
# loaded machine. FOVEA_NOTEBOOK_LIMIT_S overrides it.
LIMIT_S = float(os.environ.get("FOVEA_NOTEBOOK_LIMIT_S", "360"))


def _kernel_manager() -> KernelManager:
    """A python3 kernel of this very interpreter: with no kernel directories to search, the
    spec manager falls back to ipykernel's own spec, which runs sys.executable (a python3 kernel
    registered elsewhere for another Python is never picked up)."""
    return KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))


def _listing() -> set[str]:
    return {p.name for p in ROOT.iterdir()} | {f"notebooks/{p.name}" for p in NOTEBOOK_DIR.iterdir()}


def test_one_notebook_per_chapter():
    numbers = sorted(p.name[:2] for p in NOTEBOOKS)
    assert numbers == sorted(set(numbers)), f"two notebooks share a number: {numbers}"
    assert len(NOTEBOOKS) >= 11, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_saved_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {i} has saved outputs"
            assert cell.execution_count is None, f"{path.name}: cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_top_to_bottom(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    before = _listing()
    km = _kernel_manager()
    client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    try:
        # TMPDIR: the notebook's own temporary folder lands under tmp_path, which pytest cleans up
        client.execute(env=dict(os.environ, TMPDIR=str(tmp_path)))  # raises CellExecutionError on any error
    finally:
        if km.has_kernel:  # nbclient leaves a kernel manager it was given running
            km.shutdown_kernel(now=True)
    elapsed = time.perf_counter() - start
    sys.stderr.write(f"{path.name}: {elapsed:.1f} s\n")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert _listing() == before, "the notebook wrote into the repository"
    assert elapsed <= LIMIT_S, f"{path.name} took {elapsed:.0f} s (limit {LIMIT_S:.0f} s)"
