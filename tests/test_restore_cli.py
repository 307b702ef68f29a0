"""`fovea upscale` and `fovea denoise` on runs of tiny trained models: output sizes, files
written whole, and one-line errors with exit code 2 for bad inputs."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fovea.cli.main import main


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A x3 superres run and a sigma-25 denoise run, one epoch each on a few photo crops."""
    import skimage.data

    root = tmp_path_factory.mktemp("restore")
    data = root / "photos"
    astro, camera = skimage.data.astronaut(), skimage.data.camera()
    for sub, name, arr in (("train", "a.png", astro[100:232, 200:332]), ("train", "c.png", camera[200:332, 200:332]),
                           ("test", "t.png", astro[300:350, 100:161])):
        (data / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(arr)).save(data / sub / name)
    common = ["--data", str(data), "--epochs", "1", "--batch-size", "4"]
    assert main(["train", "superres", "--scale", "3", "--model", "srcnn-valid", "--model-kwargs", '{"widths": [8, 4]}',
                 "--out", str(root / "sr"), *common]) == 0
    assert main(["train", "denoise", "--sigma", "25", "--model-kwargs", '{"depth": 3, "width": 8}',
                 "--out", str(root / "dn"), *common]) == 0
    return root / "sr", root / "dn"


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    colour, grey = tmp_path / "colour.png", tmp_path / "grey.png"
    Image.fromarray(rng.integers(0, 256, (23, 37, 3), dtype=np.uint8)).save(colour)
    Image.fromarray(rng.integers(0, 256, (30, 19), dtype=np.uint8)).save(grey)
    return colour, grey


def test_upscale_multiplies_the_size_by_the_scale(runs, images, tmp_path):
    sr, _ = runs
    colour, grey = images
    assert main(["upscale", str(sr), str(colour), "--out", str(tmp_path / "c3.png")]) == 0
    out = Image.open(tmp_path / "c3.png")
    assert out.size == (37 * 3, 23 * 3) and out.mode == "RGB"
    assert main(["upscale", str(sr), str(grey), "--scale", "3", "--out", str(tmp_path / "g3.png")]) == 0
    out = Image.open(tmp_path / "g3.png")
    assert out.size == (19 * 3, 30 * 3) and out.mode == "L"


def test_upscale_writes_what_upscale_image_computes(runs, images, tmp_path):
    from fovea.data.decode import load_image
    from fovea.tasks.restore import load_restorer, upscale_image

    sr, _ = runs
    colour, _ = images
    assert main(["upscale", str(sr), str(colour), "--out", str(tmp_path / "c3.png")]) == 0
    model, info = load_restorer(sr, "superres")
    expected = upscale_image(model, load_image(colour).float() / 255, info["scale"])
    got = torch.from_numpy(np.array(Image.open(tmp_path / "c3.png"))).permute(2, 0, 1).float()
    assert (got - expected.mul(255).round()).abs().max() == 0


def test_denoise_keeps_the_size(runs, images, tmp_path, capsys):
    _, dn = runs
    colour, grey = images
    assert main(["denoise", str(dn), str(colour), "--out", str(tmp_path / "c.png")]) == 0
    out = Image.open(tmp_path / "c.png")
    assert out.size == (37, 23) and out.mode == "RGB"
    assert main(["denoise", str(dn), str(grey), "--add-noise", "25", "--out", str(tmp_path / "g.png")]) == 0
    out = Image.open(tmp_path / "g.png")
    assert out.size == (19, 30) and out.mode == "L"
    assert "dB noisy" in capsys.readouterr().out


def test_default_output_name(runs, images, tmp_path, monkeypatch):
    sr, _ = runs
    colour, _ = images
    monkeypatch.chdir(tmp_path)
    assert main(["upscale", str(sr), str(colour)]) == 0
    assert Image.open(tmp_path / "colour-x3.png").size == (111, 69)


def test_bad_inputs_end_in_one_line_and_exit_2(runs, images, tmp_path, capsys):
    sr, dn = runs
    colour, _ = images
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    keep = tmp_path / "keep.png"
    Image.new("RGB", (5, 5), (1, 2, 3)).save(keep)
    before = keep.read_bytes()
    cases = [
        (["upscale", str(sr), str(tmp_path / "missing.png")], "not found"),
        (["upscale", str(sr), str(corrupt), "--out", str(keep)], "corrupt.png"),
        (["denoise", str(dn), str(corrupt), "--out", str(keep)], "corrupt.png"),
        (["upscale", str(dn), str(colour)], "'denoise' run"),
        (["denoise", str(sr), str(colour)], "'superres' run"),
        (["upscale", str(sr), str(colour), "--scale", "2"], "trained for x3"),
        (["upscale", str(tmp_path / "norun"), str(colour)], "not found"),
        (["upscale", str(sr), str(colour), "--out", str(tmp_path / "x.jpg")], ".png"),
        (["denoise", str(dn), str(colour), "--add-noise", "-3"], "--add-noise"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"fovea {argv[0]}: error:") and words in err[0], (argv, err)
    assert keep.read_bytes() == before  # a failed command leaves an existing output alone
    assert not list(tmp_path.glob(".*.tmp"))


def test_model_json_describes_the_runs(runs):
    sr, dn = runs
    info = json.loads((sr / "model.json").read_text())
    assert (info["model"], info["scale"], info["channels"]) == ("srcnn-valid", 3, "y")
    info = json.loads((dn / "model.json").read_text())
    assert info["filters_picked_on"] == "training images (no validation split)"
    assert info["model_kwargs"] == {"zero_init_last": True, "depth": 3, "width": 8}
