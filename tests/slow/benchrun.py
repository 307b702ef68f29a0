"""The slow tests run a script of bench/ on Fashion-MNIST (installed by `make data`) and check
the figures it writes to its JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run_bench(script: str, out: Path, *args: str) -> dict:
    """``python bench/SCRIPT --json OUT ARGS...``, skipped when Fashion-MNIST is not installed;
    the JSON it wrote."""
    from fovea.data.sources import load_data

    try:
        load_data("fashion-mnist")
    except Exception as e:
        pytest.skip(f"Fashion-MNIST not available (`make data` installs it): {e}")
    subprocess.run([sys.executable, f"bench/{script}", "--json", str(out), *args], check=True)
    return json.loads(Path(out).read_text())
