"""fovea.scratch at full length: the NumPy LeNet-5 trained on scikit-learn's digits reaches >= 98%
test accuracy (`fovea scratch train`: digits resized to 28x28 and padded to 32x32, a stratified
75/25 split with seed 0 = 1,347 training and 450 test images, Adam with a cosine schedule, 30
epochs, random shifts of up to 2 px; the last epoch's accuracy, no model selection on the test
set), and bench/scratch_conv.py: im2col >= 50x faster than the direct loops for LeNet-5's
convolutions and a 64-channel layer, the three forms agreeing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_numpy_lenet5_on_digits_reaches_98_percent(tmp_path):
    out = tmp_path / "train.json"
    subprocess.run([sys.executable, "-m", "fovea.cli.main", "scratch", "train", "--seed", "0", "--json", str(out)],
                   check=True, env=ENV, cwd=ROOT)
    r = json.loads(out.read_text())
    assert r["n_train"] == 1347 and r["n_test"] == 450
    assert r["test_accuracy"] >= 0.98, r["test_accuracy"]


@pytest.mark.slow
def test_im2col_is_50x_faster_than_direct_loops(tmp_path):
    out = tmp_path / "scratch_conv.json"
    subprocess.run([sys.executable, "bench/scratch_conv.py", "--json", str(out)], check=True, env=ENV, cwd=ROOT)
    r = json.loads(out.read_text())
    assert r["checks"]["forms_agree"], r["rows"]
    rows = {row["layer"]: row for row in r["rows"]}
    for name in ("LeNet-5, all three convolutions", "64->64 3x3 pad 1, 32x32"):
        assert rows[name]["direct_over_im2col"] >= 50, rows[name]
    assert r["checks"]["im2col_50x_faster_than_direct"]
    assert all(row["im2col_over_torch"] > 0 for row in r["rows"])  # reported; the aim is within 3x
