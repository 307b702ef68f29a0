"""`fovea flow RUN FRAME1 FRAME2 --out flow.flo [--png]` and the bad inputs of the flow
commands: one line, exit code 2, nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fovea.cli.main import main
from fovea.data.flo import read_flo, write_flo


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("flowcli") / "run"
    kwargs = json.dumps(dict(width=0.1, max_displacement=4, stride2=1))
    rc = main(["train", "flow", "--data", "chairs:n=8,val=4,test=0,size=32", "--model", "flownetc",
               "--model-kwargs", kwargs, "--epochs", "1", "--batch-size", "4", "--out", str(out)])
    assert rc == 0
    return out


def _frames(folder, h=50, w=70, shift=2):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h, w + shift, 3), dtype=np.uint8)
    f1, f2 = folder / "a.png", folder / "b.png"
    Image.fromarray(base[:, shift:]).save(f1)
    Image.fromarray(base[:, :w]).save(f2)
    return f1, f2


def test_flow_writes_flo_of_the_frames_size_and_a_png(run, tmp_path, capsys):
    f1, f2 = _frames(tmp_path)
    out, png = tmp_path / "out" / "flow.flo", tmp_path / "out" / "flow.png"
    assert main(["flow", str(run), str(f1), str(f2), "--out", str(out), "--png", str(png)]) == 0
    flow = read_flo(out)
    assert flow.shape == (2, 50, 70) and torch.isfinite(flow).all()
    with Image.open(png) as im:
        assert im.size == (70, 50) and im.mode == "RGB"
    assert "wrote" in capsys.readouterr().out
    # at another working size the flow comes back at the frames' size, vectors scaled
    assert main(["flow", str(run), str(f1), str(f2), "--out", str(out), "--size", "32x32", "--max-flow", "5"]) == 0
    assert read_flo(out).shape == (2, 50, 70)


def _fails(argv, capsys, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_bad_inputs_exit_2_and_leave_outputs_alone(run, tmp_path, capsys):
    f1, f2 = _frames(tmp_path)
    out = tmp_path / "keep.flo"
    write_flo(out, torch.ones(2, 3, 4))
    before = out.read_bytes()
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((40, 70, 3), np.uint8)).save(small)
    _fails(["flow", str(run), str(f1), str(small), "--out", str(out)], capsys, "differ in size")
    _fails(["flow", str(run), str(f1), str(tmp_path / "nope.png"), "--out", str(out)], capsys, "nope.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    _fails(["flow", str(run), str(corrupt), str(f2), "--out", str(out)], capsys, "corrupt.png")
    other = tmp_path / "classify-run"
    other.mkdir()
    (other / "config.json").write_text("{}")
    (other / "model.json").write_text(json.dumps(dict(task="classify")))
    _fails(["flow", str(other), str(f1), str(f2), "--out", str(out)], capsys, "not a flow run")
    _fails(["flow", str(tmp_path / "no-run"), str(f1), str(f2), "--out", str(out)], capsys, "not found")
    assert out.read_bytes() == before


def test_training_on_a_bad_pair_folder_exits_2(tmp_path, capsys):
    folder = tmp_path / "pairs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in ("p0", "p1"):
        for k in (1, 2):
            Image.fromarray(rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)).save(folder / f"{name}_img{k}.png")
        write_flo(folder / f"{name}_flow.flo", torch.zeros(2, 16, 24))
    (folder / "p1_flow.flo").write_bytes(b"not a flo file at all")
    argv = ["train", "flow", "--data", str(folder), "--epochs", "1", "--batch-size", "1", "--out", str(tmp_path / "r")]
    _fails(argv, capsys, "p1_flow.flo")
    write_flo(folder / "p1_flow.flo", torch.zeros(2, 16, 24))
    Image.fromarray(np.zeros((16, 25, 3), np.uint8)).save(folder / "p0_img2.png")
    _fails(argv, capsys, "differ in size")
    assert not (tmp_path / "r").exists()
