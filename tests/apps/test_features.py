"""Feature extraction from named layers, feature files, and linear heads with PCA and PQ."""

import numpy as np
import pytest
import torch
from PIL import Image

from fovea.apps.features import (FeatureSet, LayerExtractor, compute_features, extract, fit_linear_head,
                                 load_feature_model)
from fovea.apps.retrieval import ProductQuantizer
from fovea.cli.main import main
from fovea.errors import UserError

SPEC = "conv3x3-8,relu,maxpool2,fc16,relu,fc10"


@pytest.fixture(scope="module")
def resnet():
    return load_feature_model("resnet18", image_size=64)


@pytest.fixture(scope="module")
def images():
    return torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)


def test_resnet18_layer3_avg_pooled_and_pre_logits_default(resnet, images):
    assert extract(resnet, images, layer="layer3", pool="avg").shape == (3, 256)
    assert extract(resnet, images, layer="layer3", pool="none").shape == (3, 256 * 4 * 4)
    assert extract(resnet, images, layer="layer2.1.conv2", pool="max").shape == (3, 128)
    pre = extract(resnet, images)  # default: the pre-logits vector
    assert pre.shape == (3, 512)
    # the pre-logits vector of a ResNet is the global average of layer4's map
    torch.testing.assert_close(extract(resnet, images, layer="layer4", pool="avg"), pre)
    assert extract(resnet, images, layer="logits").shape == (3, 1000)


def test_max_pool_and_hooks_agree_with_a_plain_forward(resnet, images):
    net = resnet.net
    x = images.float() / 255
    with torch.no_grad():
        stem = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        want = net.layer1(stem).amax((2, 3))
    torch.testing.assert_close(extract(resnet, images, layer="layer1", pool="max"), want)


def test_a_shallow_layer_stops_the_forward_pass(resnet, images):
    calls = []
    handle = resnet.net.layer4.register_forward_hook(lambda *a: calls.append(1))
    try:
        ex = LayerExtractor(resnet, "layer1", "avg")
        ex(images)  # the first batch runs the whole net to learn that layer1 runs once
        ex(images)
        ex(images)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_other_models_pre_logits_and_layers():
    lenet = load_feature_model("lenet5")
    assert lenet.in_channels == 1 and lenet.image_size == (32, 32)
    x = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    assert extract(lenet, x).shape == (2, 84)
    assert extract(lenet, x, layer="c3").shape == (2, 16)
    spec = load_feature_model(SPEC, image_size=16, in_channels=1)
    x = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    assert extract(spec, x).shape == (2, 16)
    assert extract(spec, x, layer="features.pool1", pool="none").shape == (2, 8 * 8 * 8)


def test_unweighted_models_are_the_same_network_every_time():
    assert load_feature_model("lenet5").fingerprint == load_feature_model("lenet5").fingerprint
    assert load_feature_model("lenet5").fingerprint != load_feature_model("lenet5_relu").fingerprint


def test_unknown_layer_lists_the_valid_names(resnet):
    with pytest.raises(UserError) as e:
        LayerExtractor(resnet, "layr3")
    msg = str(e.value)
    assert "'layr3'" in msg and "did you mean layer3" in msg
    assert "pre_logits" in msg and "layer4.1.conv2" in msg and "\n" not in msg
    with pytest.raises(UserError, match="--pool 'mean'"):
        LayerExtractor(resnet, "layer3", "mean")


def test_cli_unknown_layer_and_missing_run_exit_2(capsys):
    assert main(["features", "lenet5", "--data", "digits", "--layer", "c9", "--out", "x.safetensors"]) == 2
    err = capsys.readouterr().err
    assert "unknown layer 'c9'" in err and "c5" in err and len(err.strip().splitlines()) == 1
    assert main(["features", "runs/no-such-run", "--data", "digits", "--out", "x.safetensors"]) == 2
    assert "run directory 'runs/no-such-run' not found" in capsys.readouterr().err
    assert main(["features", "lenet5", "--out", "x.safetensors"]) == 2
    assert "--data" in capsys.readouterr().err


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """train/ and test/ folders of two classes: bright and dark 12x12 images."""
    root = tmp_path_factory.mktemp("feat_data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for cls, lo in (("bright", 150), ("dark", 0)):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(lo, lo + 100, (12, 12)).astype(np.uint8)).save(
                    root / split / cls / f"{i}.png")
    return root


def test_features_file_round_trip_and_cache(folder, tmp_path, capsys):
    out = tmp_path / "f.safetensors"
    fs, cached = compute_features("lenet5", str(folder), out=out, device="cpu")
    assert not cached and fs.features.shape == (18, 84)
    back = FeatureSet.load(out)
    torch.testing.assert_close(back.features, fs.features)
    assert back.labels.tolist() == [0] * 6 + [1] * 6 + [0] * 3 + [1] * 3  # classes sorted: bright, dark
    assert back.split_names == ["train", "test"] and back.split.tolist() == [0] * 12 + [1] * 6
    assert back.paths[0].endswith("train/bright/0.png") and back.paths[-1].endswith("test/dark/2.png")
    assert back.classes == ["bright", "dark"] and back.meta["layer"] == "pre_logits"
    assert back.subset("test")[0].shape == (6, 84)
    # same model, data, layer: read back; another layer, or --force: computed again
    assert compute_features("lenet5", str(folder), out=out, device="cpu")[1]
    assert not compute_features("lenet5", str(folder), out=out, device="cpu", force=True)[1]
    assert main(["features", "lenet5", "--data", str(folder), "--layer", "c5", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and FeatureSet.load(out).features.shape == (18, 120)
    assert main(["features", "lenet5", "--data", str(folder), "--layer", "c5", "--out", str(out)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_builtin_data_get_ids_for_paths(tmp_path):
    fs, _ = compute_features("pixels", "digits", splits=["test"], out=tmp_path / "p.safetensors", device="cpu")
    assert fs.features.shape == (360, 64) and fs.paths[5] == "digits:test:5"
    assert FeatureSet.load(tmp_path / "p.safetensors").split_names == ["test"]


def _blobs(n_per_class=40, dims=20, classes=3, seed=0) -> FeatureSet:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (classes, dims))
    feats, labels, split = [], [], []
    for code, n in ((0, n_per_class), (1, n_per_class // 2)):
        y = np.repeat(np.arange(classes), n)
        feats.append(centres[y] + rng.normal(0, 1, (len(y), dims)))
        labels.append(y)
        split.append(np.full(len(y), code))
    cat = lambda a: torch.from_numpy(np.concatenate(a))  # noqa: E731
    n = sum(len(y) for y in labels)
    return FeatureSet(cat(feats).float(), cat(labels).long(), cat(split).to(torch.uint8), ["train", "test"],
                      [f"s{i}" for i in range(n)], ["a", "b", "c"], dict(model="blobs", layer="x"))


@pytest.mark.parametrize("head", ["svm", "logistic"])
def test_linear_head_separates_separable_features(head):
    r = fit_linear_head(_blobs(), head).result
    assert r["train_accuracy"] == 1.0 and r["test_accuracy"] == 1.0 and r["n_eval"] == 60


def test_train_linear_cli_with_pca_and_pq(tmp_path, capsys):
    path = _blobs().save(tmp_path / "blobs.safetensors")
    assert main(["train", "linear", "--features", str(path), "--head", "logistic", "--pca", "8", "--pq", "4",
                 "--out", str(tmp_path / "lin")]) == 0
    out = capsys.readouterr().out
    assert "test accuracy 1.0000" in out and "4 bytes per vector" in out and "reconstruction error" in out
    assert (tmp_path / "lin" / "linear.safetensors").is_file()
    assert main(["train", "linear", "--features", str(path), "--pca", "99"]) == 2
    assert "--pca 99" in capsys.readouterr().err
    assert main(["train", "linear", "--features", str(tmp_path / "none.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err


def test_product_quantizer_codes_and_error_falls_with_more_subvectors():
    x = np.random.default_rng(0).normal(size=(600, 16)).astype(np.float32)
    errors = []
    for m in (1, 2, 4, 8):
        pq = ProductQuantizer(m).fit(x)
        codes = pq.encode(x)
        assert codes.shape == (600, m) and codes.dtype == np.uint8
        assert pq.decode(codes).shape == (600, 16)
        errors.append(pq.relative_error(x))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.2
    with pytest.raises(UserError, match="more than the 16 dimensions"):
        ProductQuantizer(17).fit(x)


def test_pca_pq_result_reports_the_reconstruction_error():
    r = fit_linear_head(_blobs(n_per_class=200), "svm", pca=8, pq=2).result  # > 256 samples to quantize
    assert r["pca"] == 8 and 0 < r["pca_explained_variance"] <= 1
    assert r["code_bytes"] == 2 and r["float_bytes"] == 32
    assert 0 < r["pq_relative_error_train"] < 1 and "pq_relative_error_test" in r


def test_list_layers_prints_names_and_shapes(capsys):
    assert main(["features", "lenet5", "--list-layers"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["pre_logits"] == ["84", "84"] and rows["c5"] == ["120x1x1", "120"] and rows["s2"][0] == "6x14x14"
