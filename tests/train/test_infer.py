"""Training on a messy image folder, then `fovea evaluate` and `fovea predict` on the run."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

FOVEA = [sys.executable, "-m", "fovea.cli.main"]


def fovea(*args, check=True):
    res = subprocess.run([*FOVEA, *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"fovea {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory):
    """Two learnable classes (bright squares vs dark circles) plus every kind of bad file."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for cls in ("square", "circle"):
        (root / cls).mkdir()
        for i in range(24):
            img = rng.integers(0, 60, (16, 16, 3)).astype(np.uint8)
            yy, xx = np.mgrid[:16, :16]
            if cls == "square":
                img[4:12, 4:12] = 230
            else:
                img[(yy - 8) ** 2 + (xx - 8) ** 2 < 20] = [40, 200, 90]
            Image.fromarray(img).save(root / cls / f"{i}.png")
    (root / "empty").mkdir()
    (root / "square" / "corrupt.jpg").write_bytes(rng.integers(0, 255, 500, dtype=np.uint8).tobytes())
    (root / "square" / "notes.png").write_text("this is not an image")
    Image.new("RGB", (1, 1), (230, 230, 230)).save(root / "square" / "tiny.png")
    Image.fromarray((rng.integers(0, 65535, (16, 16))).astype(np.uint16)).save(root / "circle" / "deep16.png")
    Image.new("RGBA", (16, 16), (40, 200, 90, 128)).save(root / "circle" / "alpha.png")
    return root


@pytest.fixture(scope="module")
def trained(messy_folder, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "messy"
    res = fovea("train", "classify", "--data", str(messy_folder), "--model", "conv3x3-8,relu,maxpool2,conv3x3-16,relu,gap,fc2",
                "--epochs", "15", "--batch-size", "8", "--lr", "0.05", "--val-fraction", "0", "--out", str(run))
    return run, res


def test_messy_folder_trains_and_reports_what_it_skipped(trained):
    run, res = trained
    assert "skipped 3" in res.stdout  # corrupt.jpg, notes.png and the empty class folder
    assert "corrupt.jpg" in res.stdout and "notes.png" in res.stdout
    info = json.loads((run / "model.json").read_text())
    assert info["classes"] == ["circle", "square"] and info["in_channels"] == 3


def test_on_bad_image_fail_stops_naming_the_file(messy_folder, tmp_path):
    res = fovea("train", "classify", "--data", str(messy_folder), "--model", "conv3x3-4,gap,fc2", "--epochs", "1",
                "--on-bad-image", "fail", "--out", str(tmp_path / "r"), check=False)
    assert res.returncode == 2
    line = res.stderr.strip().splitlines()[-1]
    assert ("corrupt.jpg" in line or "notes.png" in line) and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # nothing written for a run that could not start


def test_evaluate_prints_accuracy_per_class_and_confusion(trained):
    run, _ = trained
    res = fovea("evaluate", str(run), "--json")
    out = json.loads(res.stdout)
    assert out["split"] == "test" and out["accuracy"] >= 0.8
    assert [c["cls"] for c in out["per_class"]] == ["circle", "square"]
    assert sum(map(sum, out["confusion"])) == out["n"]
    text = fovea("evaluate", str(run)).stdout
    assert "precision" in text and "confusion matrix" in text


def test_predict_top_k_on_files_and_folders(trained, messy_folder, tmp_path):
    run, _ = trained
    res = fovea("predict", str(run), str(messy_folder / "square" / "0.png"), str(messy_folder / "circle"), "--json", "-k", "2")
    out = json.loads(res.stdout)
    by_path = {r["path"]: r for r in out}
    top = by_path[str(messy_folder / "square" / "0.png")]["top"]
    assert top[0]["cls"] == "square" and abs(sum(t["prob"] for t in top) - 1) < 1e-4
    assert len(out) == 24 + 2 + 1  # the square plus every file of the circle folder
    bad = fovea("predict", str(run), str(messy_folder / "square" / "notes.png"), check=False)
    assert bad.returncode == 2 and "notes.png" in bad.stderr
    missing = fovea("predict", str(run), str(tmp_path / "nope.png"), check=False)
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_streaming_path_trains_the_same_way(messy_folder, tmp_path):
    """A folder streamed through DataLoader workers goes through the same batch augmentation."""
    run = tmp_path / "stream"
    fovea("train", "classify", "--data", str(messy_folder), "--model", "conv3x3-8,relu,maxpool2,conv3x3-16,relu,gap,fc2",
          "--epochs", "15", "--batch-size", "8", "--lr", "0.05", "--val-fraction", "0", "--no-in-memory",
          "--num-workers", "1", "--augment", "hflip", "--out", str(run))
    rows = (run / "metrics.csv").read_text().splitlines()
    test = [r for r in rows if ",test," in r][0].split(",")
    assert float(test[4]) >= 0.8  # acc column
