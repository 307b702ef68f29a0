"""Semantic segmentation on `shapes` (bench/segmentation.py): U-Net reaches test mean IoU >= 0.90
with its whole training command within 10 minutes on 2 CPU cores, and FCN-8s, FCN-16s and
FCN-32s, trained the same way, sit in the same table with their boundary F-scores.

The time holds on an otherwise idle machine; the JSON records the load average."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_unet_on_shapes_and_the_fcn_table(tmp_path):
    out = tmp_path / "segmentation.json"
    env = dict(os.environ, OMP_NUM_THREADS="2")
    subprocess.run([sys.executable, "bench/segmentation.py", "--json", str(out), "--figure", str(tmp_path / "fig.png")],
                   check=True, cwd=ROOT, env=env)
    r = json.loads(out.read_text())
    table = r["table"]
    unet = next(row for label, row in table.items() if label.startswith("U-Net"))
    assert unet["miou"] >= 0.90, unet
    assert unet["wall_s"] <= 600, (unet["wall_s"], unet["load_before"], unet["load_after"])
    for label in ("FCN-8s", "FCN-16s", "FCN-32s"):
        row = table[label]
        for key in ("pixel_accuracy", "miou", "dice", "bf"):
            assert math.isfinite(row[key]) and 0.0 <= row[key] <= 1.0, (label, key, row[key])
    assert (tmp_path / "fig.png").is_file()
