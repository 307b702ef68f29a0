"""The fashion-mnist-fast recipe: >= 93.0% test accuracy in <= 5 minutes wall on 2 CPU cores."""

import pytest

from benchrun import run_bench


@pytest.mark.slow
def test_fashion_mnist_fast_recipe(tmp_path):
    out = tmp_path / "r.json"
    result = run_bench("fashion_mnist_fast.py", out)
    assert result["test_accuracy"] >= 0.930
    assert result["wall_s"] <= 300
