"""`fovea stylize` and `fovea dream` with random weights on small images: the files written, and
one-line errors with exit code 2 that leave an existing output untouched."""

import json

import numpy as np
import pytest
from PIL import Image

from fovea.cli.main import main


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def images(tmp_path):
    import skimage.data

    content, style, bad = tmp_path / "cat.png", tmp_path / "style.png", tmp_path / "bad.png"
    Image.fromarray(skimage.data.chelsea()[::8, ::8]).save(content)  # 38 x 57
    Image.fromarray(skimage.data.immunohistochemistry()[::8, ::8]).save(style)
    bad.write_bytes(b"not a picture")
    return content, style, bad


def test_stylize_writes_the_result_and_the_intermediate_images(images, tmp_path, capsys):
    content, style, _ = images
    out = tmp_path / "out.png"
    rc = main(["stylize", str(content), str(style), "--out", str(out), "--weights", "random", "--scales", "24", "40",
               "--steps", "4", "--save-every", "2", "--style-layers", "relu1_1", "relu2_1", "relu3_1",
               "--content-layer", "relu3_1", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    img = Image.open(out)
    assert img.size == (40, 27) and img.mode == "RGB"  # 57 x 38 with the longer side 40
    assert summary["iterations"] == [4, 4] and summary["final_loss"] < summary["first_loss"]
    names = sorted(p.name for p in tmp_path.glob("out-*px-step*.png"))
    assert names == ["out-24px-step0002.png", "out-24px-step0004.png", "out-40px-step0002.png",
                     "out-40px-step0004.png"]
    assert Image.open(tmp_path / "out-24px-step0004.png").size == (24, 16)


def test_stylize_with_adam_and_colour_preservation(images, tmp_path, capsys):
    content, style, _ = images
    out = tmp_path / "adam.png"
    assert main(["stylize", str(content), str(style), "--out", str(out), "--weights", "random", "--size", "32",
                 "--steps", "3", "--optimizer", "adam", "--preserve-color", "histogram", "--init", "noise"]) == 0
    assert Image.open(out).size == (32, 21)
    assert "in the style of" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing content", "unreadable style", "unknown layer", "bad size", "not png",
                                  "three images", "weights", "missing run"])
def test_stylize_bad_input_is_one_line_and_exit_2(images, tmp_path, capsys, case):
    content, style, bad = images
    out = tmp_path / "keep.png"
    out.write_bytes(b"old result")
    args = {
        "missing content": [str(tmp_path / "nope.png"), str(style)],
        "unreadable style": [str(content), str(bad)],
        "unknown layer": [str(content), str(style), "--style-layers", "relu1_1", "relu6_1"],
        "bad size": [str(content), str(style), "--size", "4"],
        "not png": [str(content), str(style), "--out", str(tmp_path / "out.gif")],
        "three images": [str(content), str(style), str(style)],
        "weights": [str(content), str(style), "--weights", str(tmp_path / "nope.safetensors")],
        "missing run": ["--net", str(tmp_path / "no-run"), str(content)],
    }[case]
    if "--out" not in args:
        args += ["--out", str(out)]
    if "--weights" not in args and "--net" not in args:
        args += ["--weights", "random"]
    assert main(["stylize", *args, "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fovea stylize: error:") and len(err.splitlines()) == 1, err
    assert out.read_bytes() == b"old result"


def test_dream_from_a_photo_and_from_noise(images, tmp_path, capsys):
    content, _, _ = images
    out = tmp_path / "dream.png"
    assert main(["dream", str(content), "--out", str(out), "--weights", "random", "--layer", "inception3a",
                 "--octaves", "2", "--steps", "3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["final"] > summary["start"]
    assert Image.open(out).size == (57, 38)
    assert main(["dream", "noise", "--out", str(out), "--model", "vgg19", "--weights", "random", "--layer",
                 "relu3_1", "--size", "32", "--octaves", "1", "--steps", "2"]) == 0
    arr = np.asarray(Image.open(out))
    assert arr.shape == (32, 32, 3) and arr.std() > 0


@pytest.mark.parametrize("case", ["unknown layer", "missing image", "bad octaves"])
def test_dream_bad_input_is_one_line_and_exit_2(images, tmp_path, capsys, case):
    content, _, _ = images
    args = {
        "unknown layer": [str(content), "--layer", "inception7z"],
        "missing image": [str(tmp_path / "nope.png")],
        "bad octaves": [str(content), "--octaves", "0"],
    }[case]
    assert main(["dream", *args, "--out", str(tmp_path / "d.png"), "--weights", "random"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fovea dream: error:") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "d.png").exists()
