"""Optical flow on the synthetic chairs data (bench/flow.py): FlowNetS and FlowNetC, trained on
the CPU within the budget, reach an average end-point error of at most half that of zero flow
on held-out pairs, in one table with Farneback (and DIS)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_flownets_and_flownetc_halve_zero_flow_epe(tmp_path):
    out = tmp_path / "flow.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "flow.py"), "--json", str(out), "--figures",
                    str(tmp_path / "img"), "--runs", str(tmp_path / "runs")], check=False, cwd=ROOT)
    r = json.loads(out.read_text())
    table = r["table"]
    zero = table["zero"]["epe"]
    assert zero > 1.0  # the held-out pairs do move
    for model in ("flownets", "flownetc"):
        assert table[model]["epe"] <= 0.5 * zero, (model, table[model]["epe"], zero)
    assert "farneback" in table and table["farneback"]["epe"] > 0
    assert all(r["checks"].values()), r["checks"]
    for name in ("flow-examples.png", "flow-chairs.png"):
        assert (tmp_path / "img" / name).is_file()
