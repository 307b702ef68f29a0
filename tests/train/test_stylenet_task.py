"""`fovea train stylenet` on a few tiny photos with a random-weight loss network: the perceptual
loss falls, the run applies to images and videos (`stylize_inputs`), the loss terms match their
formulas, and bad inputs end in one line with exit code 2."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import fovea
import fovea.models.stylenet  # noqa: F401  (registers the model)
from fovea.cli.main import main
from fovea.errors import UserError
from fovea.tasks.stylenet import (TEMPORAL_MARGIN, TEMPORAL_NOISE, PerceptualLoss, _parse_loss, load_style_image,
                                  load_stylenet, loss_network, stylize_image, stylize_inputs, temporal_loss)


pytestmark = pytest.mark.usefixtures("one_thread")


def _photos(folder):
    import skimage.data

    astro, coffee = skimage.data.astronaut(), skimage.data.coffee()
    crops = [astro[0:48, 0:64], astro[100:148, 200:260], astro[300:348, 100:148], coffee[50:98, 50:98],
             coffee[200:248, 300:348], coffee[100:148, 400:460], astro[400:448, 400:448]]
    for sub, i, arr in [("train", i, a) for i, a in enumerate(crops[:6])] + [("test", 9, crops[6])]:
        (folder / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(arr)).save(folder / sub / f"p{i}.png")
    return folder


def _style(path):
    yy, xx = np.mgrid[0:64, 0:64]
    arr = np.stack([(np.sin(xx / 2.0) > 0) * 230, (np.sin(yy / 3.0) > 0) * 200, np.full_like(xx, 40)], -1)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("stylenet")
    data, style = _photos(root / "photos"), _style(root / "stripes.png")
    run = root / "run"
    assert main(["train", "stylenet", "--style", str(style), "--data", str(data), "--image-size", "32",
                 "--epochs", "6", "--batch-size", "2", "--lr", "0.01", "--loss", "random",
                 "--temporal-weight", "1", "--model-kwargs", '{"width": 4, "blocks": 1}', "--out", str(run)]) == 0
    return root, run


def test_training_lowers_the_perceptual_loss(trained):
    root, run = trained
    info = json.loads((run / "model.json").read_text())
    assert info["task"] == "stylenet" and info["loss_network"].startswith("vgg16 random")
    vgg, _ = loss_network("random")
    loss = PerceptualLoss(vgg, load_style_image(str(root / "stripes.png"), longest=32))
    x = torch.stack([torch.from_numpy(np.array(Image.open(p).resize((32, 32)))).permute(2, 0, 1)
                     for p in sorted((root / "photos" / "train").glob("*.png"))]).float() / 255
    model, _ = load_stylenet(run)
    with torch.no_grad():
        after = float(loss(model(x), x)["loss"])
        before = []
        for seed in range(3):  # untrained networks of the same shape
            torch.manual_seed(seed)
            fresh = fovea.create_model("stylenet", width=4, blocks=1).eval()
            before.append(float(loss(fresh(x), x)["loss"]))
    assert after < 0.8 * min(before), (after, before)
    rows = [r for r in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert len(rows) == 6 and "temporal" in (run / "metrics.csv").read_text().splitlines()[0]
    assert (run / "plots" / "example.png").is_file() and (run / "plots" / "stylized.png").is_file()


def test_stylize_an_image_and_a_video(trained, tmp_path):
    from fovea.data.video import read_video, write_video

    root, run = trained
    model, _ = load_stylenet(run)
    photo = root / "photos" / "test" / "p9.png"
    out = stylize_inputs(run, [photo], tmp_path / "one.png", log=None)
    assert out == [tmp_path / "one.png"]
    got = torch.from_numpy(np.asarray(Image.open(out[0]))).permute(2, 0, 1).float() / 255
    x = torch.from_numpy(np.asarray(Image.open(photo))).permute(2, 0, 1).float() / 255
    assert (got - stylize_image(model, x)).abs().max() <= 1 / 255 + 1e-6
    frames = torch.from_numpy(np.asarray(Image.open(photo))).permute(2, 0, 1)
    video = torch.stack([torch.roll(frames, i, -1) for i in range(5)], 1)  # (3, 5, 48, 48) panning
    clip = write_video(tmp_path / "clip.avi", video, fps=10)
    outs = stylize_inputs(run, [photo, clip], tmp_path / "many", log=None)
    assert [p.name for p in outs] == ["p9-stylized.png", "clip-stylized.avi"]
    styled = read_video(outs[1])
    assert styled.shape == video.shape
    ref = stylize_image(model, read_video(clip).permute(1, 0, 2, 3).float() / 255)
    # Motion JPEG is lossy: compare the mean error
    assert (styled.permute(1, 0, 2, 3).float() / 255 - ref).abs().mean() < 0.05


def test_stylize_bad_inputs(trained, tmp_path):
    root, run = trained
    photo = root / "photos" / "test" / "p9.png"
    with pytest.raises(UserError, match="not found"):
        stylize_inputs(run, [tmp_path / "missing.png"], tmp_path / "o.png", log=None)
    with pytest.raises(UserError, match="expected a stylenet run|model.json|not found"):
        stylize_inputs(tmp_path, [photo], tmp_path / "o.png", log=None)
    with pytest.raises(UserError, match="video file name"):
        (tmp_path / "v.avi").write_bytes(b"")
        stylize_inputs(run, [tmp_path / "v.avi"], tmp_path / "o.png", log=None)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(UserError):
        stylize_inputs(run, [bad], tmp_path / "o.png", log=None)
    assert not (tmp_path / "o.png").exists()


def test_training_bad_inputs_exit_2(tmp_path, capsys):
    data = _photos(tmp_path / "photos")
    base = ["train", "stylenet", "--data", str(data), "--image-size", "32", "--epochs", "1",
            "--model-kwargs", '{"width": 4}', "--loss", "random", "--out", str(tmp_path / "r")]
    assert main(base) == 2  # no --style
    assert main([*base, "--style", str(tmp_path / "missing.jpg")]) == 2
    (tmp_path / "bad.jpg").write_text("not an image")
    assert main([*base, "--style", str(tmp_path / "bad.jpg")]) == 2
    assert main([*base, "--style", "skimage:astronaut", "--loss", "random:relu9_9"]) == 2
    err = capsys.readouterr().err
    assert "style image" in err and "relu9_9" in err
    assert not (tmp_path / "r").exists()


def test_loss_terms_match_their_formulas():
    from fovea.losses.style import FeatureTap

    torch.manual_seed(1)
    vgg, _ = loss_network("random")
    style, x, y = torch.rand(1, 3, 40, 48), torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    loss = PerceptualLoss(vgg, style, "relu2_2", content_weight=2.0, style_weight=3.0, tv_weight=0.5)
    terms = loss(y, x)
    tap = FeatureTap(vgg, ["relu1_2", "relu2_2", "relu3_3", "relu4_3"])
    norm = lambda t: (t - loss.mean) / loss.std  # noqa: E731
    fy, fx, fs = tap(norm(y)), tap(norm(x)), tap(norm(style))
    p = fx["relu2_2"].double()
    content = ((fy["relu2_2"].double() - p) ** 2).mean() / (p**2).mean()
    style_sum = 0.0
    for layer in ("relu1_2", "relu2_2", "relu3_3", "relu4_3"):
        def gram(f):
            b, c, h, w = f.shape
            f = f.double().reshape(b, c, h * w)
            return f @ f.transpose(1, 2) / (c * h * w)
        a = gram(fs[layer])
        style_sum += ((gram(fy[layer]) - a) ** 2).sum((1, 2)).mean() / (a**2).sum()
    tv = (((y[..., 1:, :] - y[..., :-1, :]) ** 2).sum() + ((y[..., 1:] - y[..., :-1]) ** 2).sum()) / 2
    torch.testing.assert_close(terms["content"].double(), 2.0 * content, rtol=1e-4, atol=0)
    torch.testing.assert_close(terms["style"].double(), 3.0 * style_sum, rtol=1e-4, atol=0)
    torch.testing.assert_close(terms["tv"].double(), 0.5 * tv.double(), rtol=1e-4, atol=0)


def test_temporal_term_of_a_shift_equivariant_map_is_the_noise():
    """The identity follows every shift: only the added noise (sigma 2/255) is left."""
    x = 0.2 + 0.6 * torch.rand(2, 3, 64, 64)
    g = torch.Generator().manual_seed(0)
    got = float(temporal_loss(lambda t: t, x, x, g))
    assert got == pytest.approx(TEMPORAL_NOISE**2, rel=0.1)
    blur = lambda t: F.avg_pool2d(t, 3, 1, 1)  # noqa: E731  (also shift-equivariant away from the border)
    assert float(temporal_loss(blur, x, blur(x), g)) < TEMPORAL_NOISE**2
    assert TEMPORAL_MARGIN > 4


def test_loss_option_parsing():
    assert _parse_loss("auto") == ("auto", "relu2_2")
    assert _parse_loss("random:relu3_3") == ("random", "relu3_3")
    assert _parse_loss("ce") == ("auto", "relu2_2")
    with pytest.raises(UserError, match="expected auto, torchvision, random"):
        _parse_loss("imagenet")


def test_a_style_net_run_exports_to_onnx_matching_pytorch(trained, tmp_path):
    import onnxruntime as ort

    _, run = trained
    out = tmp_path / "net.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    model, _ = load_stylenet(run)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want = model(x).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4
