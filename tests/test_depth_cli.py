"""`fovea train depth` and `fovea depth` through the command line: a tiny run on the motorcycle
pair, the disparity files it writes, and one-line refusals of bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from fovea.cli.main import main

# 1/8 of the pair, 32-pixel crops, 4 steps of a tiny network (--train-fraction keeps 32 of the epoch's 256 crops)
TINY = ["--scale", "8", "--patch", "32", "--batch-size", "8", "--epochs", "1", "--train-fraction", "0.125",
        "--model-kwargs", '{"widths": [4, 8, 8], "scales": 2, "max_disp": 10}']


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("depth") / "run"
    assert main(["train", "depth", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from skimage.data import stereo_motorcycle

    root = tmp_path_factory.mktemp("pair")
    left, right, _ = stereo_motorcycle()
    Image.fromarray(left).save(root / "left.png")
    Image.fromarray(right).save(root / "right.png")
    Image.fromarray(right[:, :-3]).save(root / "narrow.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def test_train_writes_a_depth_run(run):
    info = json.loads((run / "model.json").read_text())
    assert info["task"] == "depth" and info["scale"] == 8 and info["arch"]["widths"] == [4, 8, 8]
    depth = json.loads((run / "depth.json").read_text())
    assert set(depth["methods"]) >= {"network", "StereoSGBM (valid pixels)", "StereoSGBM (filled)",
                                     "constant median of the truth"}
    assert all(np.isfinite(v["mae"]) and 0 <= v["bad3"] <= 1 for v in depth["methods"].values())
    assert (run / "plots" / "disparity-motorcycle.png").is_file() and (run / "report.html").is_file()
    rows = (run / "metrics.csv").read_text().splitlines()
    assert any(",train," in r for r in rows) and any(",val," in r for r in rows)


def test_depth_writes_png_and_npy_of_the_input_size(run, pair, tmp_path, capsys):
    out, npy = tmp_path / "disp.png", tmp_path / "disp.npy"
    assert main(["depth", str(run), str(pair / "left.png"), str(pair / "right.png"), "--out", str(out),
                 "--npy", str(npy)]) == 0
    with Image.open(out) as im:
        assert im.size == (741, 500) and im.mode == "RGB"
    d = np.load(npy)
    assert d.shape == (500, 741) and d.dtype == np.float32 and float(d.min()) >= 0 and float(d.max()) <= 80 + 1e-3
    assert "500x741" in capsys.readouterr().out
    out16 = tmp_path / "disp16.png"
    assert main(["depth", str(run), str(pair / "left.png"), str(pair / "right.png"), "--out", str(out16),
                 "--format", "uint16"]) == 0
    with Image.open(out16) as im:
        arr = np.asarray(im)
    assert arr.shape == (500, 741) and arr.dtype in (np.uint16, np.int32)
    np.testing.assert_allclose(arr / 256.0, np.clip(d, 1 / 256, None), atol=1 / 512 + 1e-6)


def _fails(argv, capsys, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err


def test_bad_input_is_one_line_and_exit_2(run, pair, tmp_path, capsys):
    out = tmp_path / "keep.png"
    out.write_bytes(b"old")
    base = ["depth", str(run)]
    _fails([*base, str(pair / "left.png"), str(pair / "narrow.png"), "--out", str(out)], capsys, "differ in size")
    _fails([*base, str(pair / "left.png"), str(pair / "nothing.png"), "--out", str(out)], capsys, "not found")
    _fails([*base, str(pair / "left.png"), str(pair / "corrupt.png"), "--out", str(out)], capsys, "corrupt.png")
    other = tmp_path / "other-run"
    other.mkdir()
    (other / "config.json").write_text("{}")
    (other / "model.json").write_text(json.dumps(dict(task="classify")))
    _fails(["depth", str(other), str(pair / "left.png"), str(pair / "right.png"), "--out", str(out)], capsys,
           "'classify' run")
    _fails(["depth", str(tmp_path / "no-run"), str(pair / "left.png"), str(pair / "right.png"), "--out", str(out)],
           capsys, "not found")
    assert out.read_bytes() == b"old"  # nothing written over on failure


@pytest.mark.parametrize("flags, words", [
    (["--augment", "hflip"], ["--augment"]),
    (["--loss", "ce"], ["--loss 'ce'"]),
    (["--patch", "30"], ["--patch 30", "multiple of 4"]),
    (["--model", "lenet5"], ["not a disparity network"]),
    (["--data", "/nonexistent/pairs"], ["not found"]),
])
def test_train_refuses_bad_settings(flags, words, tmp_path, capsys):
    argv = ["train", "depth", "--out", str(tmp_path / "r"), *TINY, *flags]
    _fails(argv, capsys, *words)
    assert not (tmp_path / "r").exists()


def test_train_on_a_folder_without_ground_truth(tmp_path):
    rng = np.random.default_rng(0)
    for sub in ("left", "right"):
        (tmp_path / "pairs" / sub).mkdir(parents=True)
    for name in ("a", "b"):
        scene = (rng.random((40, 72, 3)) * 255).astype(np.uint8)
        Image.fromarray(scene[:, :64]).save(tmp_path / "pairs" / "left" / f"{name}.png")
        Image.fromarray(scene[:, 8:]).save(tmp_path / "pairs" / "right" / f"{name}.png")
    out = tmp_path / "run"
    assert main(["train", "depth", "--data", str(tmp_path / "pairs"), "--out", str(out), "--scale", "1", "--patch", "32",
                 "--batch-size", "4", "--epochs", "1", "--train-fraction", "0.1", "--model-kwargs",
                 '{"widths": [4, 8, 8], "scales": 2, "max_disp": 12}']) == 0
    depth = json.loads((out / "depth.json").read_text())
    assert depth["methods"] == {} and depth["pairs"] == ["a", "b"]
    assert (out / "plots" / "disparity-a.png").is_file() and (out / "plots" / "disparity-b.png").is_file()
