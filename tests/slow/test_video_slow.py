"""Video classification on moving-shapes (bench/video.py): a single-frame classifier stays near
chance, C3D, the temporal stream and CNN + LSTM are far above it, and the two-stream fusion is
at least as good as its better stream."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_motion_needs_more_than_one_frame(tmp_path):
    out = tmp_path / "video.json"
    subprocess.run([sys.executable, "bench/video.py", "--json", str(out), "--figure", str(tmp_path / "clips.png")],
                   check=True, cwd=ROOT)
    r = json.loads(out.read_text())
    table, chance = r["table"], r["chance"]
    single = table["single frame (spatial stream)"]["video"]
    assert single <= chance + 0.10, (single, chance)
    for label in ("temporal stream (2L = 20 flow channels)", "C3D", "CNN + LSTM"):
        assert table[label]["video"] >= chance + 0.50, (label, table[label])
    fusion = table["two-stream fusion (softmax average)"]["video"]
    assert fusion >= max(single, table["temporal stream (2L = 20 flow channels)"]["video"]), table
    assert all(r["claims"].values()), r["claims"]
    assert (tmp_path / "clips.png").is_file()
