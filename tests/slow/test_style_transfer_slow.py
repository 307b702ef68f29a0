"""bench/style_transfer.py's claims: fovea's neural style at 256 x 256 reaches the reference's
final loss (within 1%) in at most 0.7 of its wall time, and a trained style network stylizes a
512 x 512 image at least 100 times faster than 100 Gatys steps."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_style_transfer_bench(tmp_path):
    out = tmp_path / "style_transfer.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "style_transfer.py"), "--json", str(out), "--skip-figures"],
                   check=True, cwd=ROOT)
    r = json.loads(out.read_text())
    part1 = r["gatys_256"]
    assert part1["iterations"]["fovea"] == part1["iterations"]["reference"] == 100
    assert part1["start_loss"]["fovea"] == pytest.approx(part1["start_loss"]["reference"], rel=1e-4)
    assert part1["final_loss_rel_diff"] < 0.01
    assert part1["time_ratio"] <= 0.7
    assert r["speed_512"]["speedup"] >= 100
