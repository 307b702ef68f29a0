"""The fashion-mnist-fast recipe: >= 93.0% test accuracy in <= 5 minutes wall on 2 CPU cores."""

import json
import subprocess
import sys

import pytest

from fovea.data.sources import load_data


@pytest.mark.slow
def test_fashion_mnist_fast_recipe(tmp_path):
    try:
        load_data("fashion-mnist")
    except Exception as e:  # the data set is installed by `make data`
        pytest.skip(f"Fashion-MNIST not available: {e}")
    out = tmp_path / "r.json"
    subprocess.run([sys.executable, "bench/fashion_mnist_fast.py", "--json", str(out)], check=True)
    result = json.loads(out.read_text())
    assert result["test_accuracy"] >= 0.930
    assert result["wall_s"] <= 300
