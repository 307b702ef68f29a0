"""Seeing inside a network: the maps point at the evidence, the pictures are written, bad input
ends in one line."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import fovea
from fovea.apps import explain as ex
from fovea.cli.main import main
from fovea.errors import UserError
from fovea.tasks.classify import ImageClassifier

SIZE, OBJECT = 32, 6
SPEC = "conv3x3-8,relu,conv3x3-16,relu,maxpool2,conv3x3-32,relu,gap,fc3"
SQUARE, CROSS, EMPTY = 0, 1, 2
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def synthetic_image(rng, kind: int, quadrant: int) -> np.ndarray:
    """Dim noise with the class evidence in one quadrant (0 top-left, 1 top-right, 2 bottom-left,
    3 bottom-right): a filled square, a cross, or nothing."""
    img = rng.uniform(0, 0.3, (SIZE, SIZE)).astype(np.float32)
    half = SIZE // 2
    y = (quadrant // 2) * half + rng.integers(1, half - OBJECT)
    x = (quadrant % 2) * half + rng.integers(1, half - OBJECT)
    if kind == SQUARE:
        img[y:y + OBJECT, x:x + OBJECT] = 1.0
    elif kind == CROSS:
        img[y + 2:y + 4, x:x + OBJECT] = 1.0
        img[y:y + OBJECT, x + 2:x + 4] = 1.0
    return img


def synthetic_set(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    kinds, quadrants = rng.integers(0, 3, n), rng.integers(0, 4, n)  # "empty" makes both shapes positive evidence
    x = np.stack([synthetic_image(rng, k, q) for k, q in zip(kinds, quadrants)])[:, None]
    return torch.from_numpy(x), torch.from_numpy(kinds)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Models this small gain nothing from intra-op threads, and on a shared machine two threads
    waiting on each other can cost a hundred times the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def gap_model(one_thread):
    """A small global-average-pooled CNN trained to tell squares, crosses and empty images apart."""
    torch.manual_seed(0)
    x, y = synthetic_set(2000, seed=0)
    net = fovea.create_model(SPEC, num_classes=3, in_channels=1, input_size=(SIZE, SIZE))
    model = ImageClassifier(net, nn.Identity())
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt, yt = synthetic_set(300, seed=1)
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    assert acc >= 0.95, f"the synthetic model did not learn (accuracy {acc:.3f})"
    return model


@pytest.fixture(scope="module")
def subject(gap_model):
    return ex.Subject(gap_model, ["square", "cross", "empty"], 1, (SIZE, SIZE))


def _quadrant_of_argmax(heat: torch.Tensor) -> int:
    i = int(heat.flatten().argmax())
    return int(i // heat.shape[1] >= heat.shape[0] // 2) * 2 + int(i % heat.shape[1] >= heat.shape[1] // 2)


@pytest.mark.parametrize("quadrant", range(4))
def test_maps_peak_in_the_quadrant_holding_the_evidence(gap_model, quadrant):
    rng = np.random.default_rng(10 + quadrant)
    x = torch.from_numpy(synthetic_image(rng, SQUARE, quadrant))[None, None]
    layer = ex.default_layer(ex.map_layers(gap_model, x))
    assert layer == "features.relu3"  # the last map before global pooling
    maps = {
        "cam": ex.class_activation_map(gap_model, x, SQUARE, layer),
        "gradcam": ex.grad_cam(gap_model, x, SQUARE, layer),
        "occlusion": ex.occlusion_sensitivity(gap_model, x, SQUARE),
        "saliency": ex.gradient_saliency(gap_model, x, SQUARE),
    }
    found = {}
    for name, heat in maps.items():
        heat = ex.upsample(heat, (SIZE, SIZE))
        masses = ex.quadrant_masses(heat)
        assert int(masses.argmax()) == quadrant, f"{name}: quadrant masses {masses.tolist()}"
        assert _quadrant_of_argmax(heat) == quadrant, name
        found[name] = masses[quadrant].item()
    assert min(found["cam"], found["gradcam"], found["occlusion"]) > 0.8, found


def test_cam_equals_the_logit_spread_over_the_map(gap_model):
    """With global average pooling, the mean of the CAM plus the bias is the class score."""
    x, _ = synthetic_set(1, seed=3)
    cam = ex.class_activation_map(gap_model, x, CROSS, "features.relu3")
    with torch.no_grad():
        logit = gap_model(x)[0, CROSS]
    assert torch.allclose(cam.mean() + gap_model.net.get_classifier().bias[CROSS], logit, atol=1e-4)
    # there d y / d A_ij = w / (h w): Grad-CAM is the CAM over the map's area, negatives clipped
    gradcam = ex.grad_cam(gap_model, x, CROSS, "features.relu3")
    assert torch.allclose(gradcam, cam.clamp(min=0) / cam.numel(), atol=1e-6)


def test_filters_grid_has_one_tile_per_filter(subject, tmp_path):
    e = ex.explain(subject, "filters")
    assert e.layer == "features.conv1" and e.raw.shape == (8, 1, 3, 3)
    ex.save_explanation(e, tmp_path / "f.png", npy=tmp_path / "f.npy")
    pix = np.asarray(Image.open(tmp_path / "f.png").convert("RGB"))
    rows, cols = 3, 3  # 8 filters: ceil(sqrt(8)) columns
    side = 3 * 11  # 3x3 kernels magnified to at least 32 pixels
    assert pix.shape == (rows * (side + 2) + 2, cols * (side + 2) + 2, 3)
    tiles = [pix[2 + r * (side + 2):2 + r * (side + 2) + side, 2 + c * (side + 2):2 + c * (side + 2) + side]
             for r in range(rows) for c in range(cols)]
    assert sum(int((t != 255).any()) for t in tiles) == 8
    assert np.load(tmp_path / "f.npy").shape == (8, 1, 3, 3)


def test_feature_maps_of_a_named_layer(subject, gap_model, tmp_path):
    x, _ = synthetic_set(1, seed=4)
    e = ex.explain(subject, "featuremaps", x, layer="features.conv2")
    with torch.no_grad():
        expected = gap_model.net.features[:3](x)[0]  # conv1, relu1, conv2
    assert e.layer == "features.conv2" and torch.allclose(e.raw, expected)
    ex.save_explanation(e, tmp_path / "maps.png", max_maps=10)
    pix = np.asarray(Image.open(tmp_path / "maps.png"))
    assert pix.shape == (3 * (32 + 2) + 2, 4 * (32 + 2) + 2, 3)  # 10 of 16 maps: 3 rows of 4, 32x32 each


def test_tap_records_a_layer_before_an_in_place_relu():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    x = torch.randn(1, 1, 8, 8)
    with ex.tap(net, ["0"]) as acts:
        net(x)
    assert torch.allclose(acts["0"], net[0](x)) and (acts["0"] < 0).any()
    records = ex.map_layers(net, x)
    assert ex.default_layer(records) == "1"  # the ReLU's output, not the conv's, is what gets pooled
    assert ex.grad_cam(net, x, 1, "0").shape == (8, 8)


def test_classmodel_increases_the_target_score(subject):
    e = ex.explain(subject, "classmodel", target="square", steps=30, lr=0.1)
    start, final = e.scores
    assert final > start + 1.0
    with torch.no_grad():
        assert subject.model(e.raw[None]).argmax(1).item() == SQUARE
    unit = ex.explain(subject, "classmodel", layer="features.conv3", unit=5, steps=10)
    assert unit.scores[1] > unit.scores[0]


def test_unknown_layer_lists_the_valid_names_close_ones_first(subject):
    x, _ = synthetic_set(1, seed=5)
    with pytest.raises(UserError) as err:
        ex.explain(subject, "gradcam", x, layer="features.relu9")
    msg = str(err.value)
    assert "'features.relu9'" in msg and "\n" not in msg
    listed = msg.split("are: ")[1].split(", ")
    assert set(listed) == {r.name for r in ex.map_layers(subject.model, x)}
    assert listed[0].startswith("features.relu")


def test_target_out_of_range_names_the_value_and_the_range(subject):
    x, _ = synthetic_set(1, seed=6)
    with pytest.raises(UserError, match=r"target 3 is out of range.*0\.\.2"):
        ex.explain(subject, "saliency", x, target=3)
    with pytest.raises(UserError, match=r"'dog'.*0\.\.2"):
        ex.explain(subject, "saliency", x, target="dog")
    assert ex.explain(subject, "saliency", x, target="cross").target == CROSS


def test_cam_refuses_a_layer_that_is_not_pooled_into_the_classifier(subject):
    x, _ = synthetic_set(1, seed=7)
    with pytest.raises(UserError, match=r"'features.conv1'.*that is 'features.relu3'.*gradcam"):
        ex.explain(subject, "cam", x, layer="features.conv1")


def test_registry_model_with_a_weights_file_uses_torchvision_categories(tmp_path):
    path = tmp_path / "squeezenet.pt"
    torch.save(fovea.create_model("squeezenet1_1").state_dict(), path)
    s = ex.load_subject("squeezenet1_1", path)
    assert s.classes[0] == "tench" and len(s.classes) == 1000
    assert s.input_size == (224, 224) and s.resize == 256
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 90), dtype=np.uint8)).save(tmp_path / "g.png")
    x, note = s.load_image(tmp_path / "g.png")
    assert x.shape == (1, 3, 224, 224) and "grayscale" in note
    assert ex.default_layer(ex.map_layers(s.model, x)) == "features.12"  # before the 1x1-conv classifier
    assert ex.explain(s, "cam", x, target=1).raw.shape == (13, 13)
    with pytest.raises(UserError, match="needs --weights"):
        ex.load_subject("squeezenet1_1")
    with pytest.raises(UserError, match="neither a run directory nor a registered model name; did you mean"):
        ex.load_subject("squeezenet1_2", path)


# ---------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    run = root / "run"
    res = subprocess.run([sys.executable, "-m", "fovea.cli.main", "train", "classify", "--data", "digits", "--model",
                          "conv3x3-8,relu,maxpool2,conv3x3-16,relu,gap,fc10", "--image-size", "16", "--epochs", "2",
                          "--out", str(run)], capture_output=True, text=True, env=ONE_THREAD)
    assert res.returncode == 0, res.stderr
    from sklearn.datasets import load_digits

    digit = np.uint8(np.rint(load_digits().images[3] * 255 / 16))
    Image.fromarray(digit).save(root / "digit.png")
    Image.fromarray(np.stack([digit] * 3, -1)).save(root / "digit-rgb.png")
    return run, root


def test_cli_gradcam_on_a_trained_run(digits_run):
    run, root = digits_run
    out = root / "x.png"
    res = subprocess.run([sys.executable, "-m", "fovea.cli.main", "explain", str(run), str(root / "digit.png"),
                          "--method", "gradcam", "--out", str(out)], capture_output=True, text=True, env=ONE_THREAD)
    assert res.returncode == 0, res.stderr
    assert out.is_file() and Image.open(out).format == "PNG"
    assert "Grad-CAM at features.relu2" in res.stdout


def test_cli_npy_writes_the_raw_map_and_notes_a_channel_conversion(digits_run, capsys):
    run, root = digits_run
    code = main(["explain", str(run), str(root / "digit-rgb.png"), "--method", "cam", "--target", "3",
                 "--out", str(root / "cam.png"), "--npy"])
    out = capsys.readouterr().out
    assert code == 0 and "converted to grayscale" in out
    raw = np.load(root / "cam.npy")
    assert raw.shape == (8, 8)  # features.relu2 of a 16x16 input after one 2x2 pooling
    code = main(["explain", str(run), str(root / "digit.png"), "--method", "occlusion", "--target", "3",
                 "--npy", str(root / "occ-raw.npy"), "--out", str(root / "occ.png")])
    assert code == 0 and np.load(root / "occ-raw.npy").shape == (16, 16)


@pytest.mark.parametrize("argv, expected", [
    (["--method", "gradcam", "--layer", "features.relu"],
     "unknown layer 'features.relu'; layers with spatial maps are: features.relu"),
    (["--method", "gradcam", "--target", "10"], "target 10 is out of range; the model has 10 classes, expected 0..9"),
    (["--method", "saliency", "--image", "missing.png"], "image 'missing.png' not found"),
])
def test_cli_bad_input_is_one_line_and_exit_2(digits_run, capsys, monkeypatch, argv, expected):
    run, root = digits_run
    monkeypatch.chdir(root)
    image = "digit.png"
    if "--image" in argv:
        i = argv.index("--image")
        image, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    code = main(["explain", str(run), image, *argv, "--out", "bad.png"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err
    assert not (root / "bad.png").exists()
