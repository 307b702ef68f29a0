"""bench/train_overhead.py: the loop costs <= 3% over a hand-written one; the in-memory
pipeline is >= 5x the torchvision DataLoader."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_train_overhead_ratios(tmp_path):
    out = tmp_path / "r.json"
    subprocess.run([sys.executable, "bench/train_overhead.py", "--json", str(out), "--tmp", str(tmp_path / "runs")],
                   check=True)
    r = json.loads(out.read_text())
    assert r["lenet5_digits"]["ratio"] >= 0.97
    assert r["resnet18_32x32"]["ratio"] >= 0.97
    assert r["pipeline_fashion_mnist"]["ratio"] >= 5
