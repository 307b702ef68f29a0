"""`fovea train segment` on a tiny shapes set, then `fovea segment` on images of other sizes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fovea.cli.main import main
from fovea.data.masks import read_mask

TINY = ["--data", "shapes:24:4:4", "--image-size", "32", "--epochs", "1", "--batch-size", "8",
        "--augment", "hflip,vflip", "--patch", "24"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny same-padding U-Net run (z-scored inputs) and one tiny valid-padding U-Net run."""
    root = tmp_path_factory.mktemp("seg")
    out = {}
    for name, extra in (("unet-same", ["--preprocess", "zscore"]), ("unet", [])):
        run = root / name
        assert main(["train", "segment", *TINY, *extra, "--model", name, "--model-kwargs", '{"base": 2, "depth": 2}',
                     "--out", str(run)]) == 0
        out[name] = run
    return out


@pytest.fixture
def image(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (45, 71, 3), dtype=np.uint8)).save(path)
    return path


def test_training_writes_a_run(runs):
    for run in runs.values():
        assert (run / "model.safetensors").is_file() and (run / "report.html").is_file()
        assert (run / "plots" / "overlays.png").is_file()
        info = json.loads((run / "model.json").read_text())
        assert info["task"] == "segment" and info["classes"] == ["background", "ellipse", "rectangle", "triangle"]
        seg = json.loads((run / "segmentation.json").read_text())
        assert seg["split"] == "test" and 0 <= seg["miou"] <= 1 and "bf" in seg and len(seg["per_class"]) == 4


@pytest.mark.parametrize("model", ["unet-same", "unet"])
def test_segment_writes_a_mask_of_the_image_size(runs, image, tmp_path, model, capsys):
    out, overlay = tmp_path / "mask.png", tmp_path / "over.png"
    assert main(["segment", str(runs[model]), str(image), "--out", str(out), "--overlay", str(overlay)]) == 0
    mask = read_mask(out, num_classes=4)  # palette PNG of class ids; refuses ids >= 4
    assert mask.shape == (45, 71)
    with Image.open(out) as im:
        assert im.mode == "P" and tuple(im.getpalette()[3:6]) == (128, 0, 0)  # VOC colours
    with Image.open(overlay) as im:
        assert im.size == (71, 45) and im.mode == "RGB"
    assert "photo.png: 71x45" in capsys.readouterr().out


def test_segment_agrees_with_the_model_on_the_image(runs, image, tmp_path):
    from fovea.data.decode import load_image
    from fovea.tasks.segment import load_segmenter

    out = tmp_path / "mask.png"
    assert main(["segment", str(runs["unet-same"]), str(image), "--out", str(out), "--overlay"]) == 0
    assert (tmp_path / "mask-overlay.png").is_file()  # bare --overlay: beside --out
    model, _ = load_segmenter(runs["unet-same"])
    with torch.no_grad():
        expected = model(load_image(image)[None].float() / 255)[0].argmax(0)
    assert torch.equal(read_mask(out, 4), expected)


@pytest.mark.parametrize("case,needle", [
    ("missing", "image '{image}' not found"),
    ("corrupt", "{image}"),
    ("wrong_task", "is a 'classify' run, not a segmentation run"),
    ("bad_out", "expected a .png file"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_outputs(runs, tmp_path, capsys, case, needle):
    run = runs["unet-same"]
    image = tmp_path / "in.png"
    if case == "corrupt":
        image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    elif case != "missing":
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(image)
    if case == "wrong_task":
        run = tmp_path / "cls"
        run.mkdir()
        (run / "config.json").write_text("{}")
        (run / "model.json").write_text(json.dumps(dict(task="classify", model="lenet5")))
    out = tmp_path / ("mask.jpg" if case == "bad_out" else "mask.png")
    out.write_bytes(b"old mask")
    (tmp_path / "mask-overlay.png").write_bytes(b"old overlay")
    code = main(["segment", str(run), str(image), "--out", str(out), "--overlay"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle.format(image=image) in err[0], err
    assert out.read_bytes() == b"old mask" and (tmp_path / "mask-overlay.png").read_bytes() == b"old overlay"


def test_mask_png_round_trip_and_overlay_pixels(tmp_path):
    import os

    from fovea.data.masks import overlay_mask, voc_palette, write_mask

    mask = torch.zeros(10, 12, dtype=torch.int64)
    mask[2:8, 3:9] = 2
    mask[0, 0] = 255
    path = write_mask(tmp_path / "m.png", mask)
    assert torch.equal(read_mask(path, num_classes=3), mask)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # not the temp file's private mode
    image = torch.full((3, 10, 12), 100, dtype=torch.uint8)
    out = overlay_mask(image, mask, alpha=0.5).astype(int)
    green = voc_palette(3)[2].astype(int)
    assert (out[5, 5] == np.round(0.5 * 100 + 0.5 * green)).all()  # inside: blended
    assert (out[2, 5] == green).all()  # on the class boundary: the class colour
    assert (out[9, 0] == 100).all() and (out[0, 0] == 100).all()  # background and ignored: the image
