"""Metric learning end to end: the embedding network and its branch sharing, retrieval and
verification measures against brute force, a triplet run that learns, a cross-domain run, and
the `embed` and `verify` commands."""

import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fovea.cli.main import main
from fovea.data.domains import sobel_sketch
from fovea.models.siamese import MetricNet
from fovea.tasks.classify import build_net
from fovea.tasks.metric import euclidean_nearest, load_metric_model, recall_at_k, verification
from fovea.train.config import TASK_DEFAULTS, TrainConfig
from fovea.train.loop import Trainer

SPEC = "conv3x3-16,bn,relu,maxpool2,conv3x3-32,bn,relu,fc10"


def make(branches):
    return MetricNet(lambda: build_net(SPEC, 10, 1, (8, 8)), (1, 8, 8), dim=8, branches=branches)


@pytest.mark.parametrize("branches,separate", [("shared", set()), ("half", {"backbone_b"}),
                                               ("unshared", {"backbone_b", "proj_b"})])
def test_branches_share_what_they_say(branches, separate):
    net = make(branches)
    tops = {k.split(".")[0] for k in net.state_dict()}
    assert tops - {"backbone_a", "proj_a", "preprocess"} == separate
    x = torch.rand(4, 1, 8, 8)
    a, b = net.embed(x, "a"), net.embed(x, "b")
    assert a.shape == (4, 8) and torch.allclose(a.norm(dim=1), torch.ones(4))
    assert torch.equal(a, b) == (branches == "shared")
    if branches == "half":  # the projection is one module: a change to it moves both branches
        with torch.no_grad():
            net.proj_a.net[-1].bias.add_(1.0)
        assert not torch.equal(net.embed(x, "a"), a) and not torch.equal(net.embed(x, "b"), b)


def test_euclidean_nearest_and_recall_match_brute_force():
    g = torch.Generator().manual_seed(0)
    gallery, queries = torch.randn(50, 5, generator=g), torch.randn(20, 5, generator=g)
    gl, ql = torch.randint(0, 3, (50,), generator=g), torch.randint(0, 3, (20,), generator=g)
    d = torch.cdist(queries.double(), gallery.double())
    assert torch.equal(euclidean_nearest(gallery, queries, 4), d.argsort(1)[:, :4])
    r = recall_at_k(queries, ql, gallery, gl, ks=(1, 5))
    order = d.argsort(1)
    for k in (1, 5):
        assert r[f"recall@{k}"] == pytest.approx(float((gl[order[:, :k]] == ql[:, None]).any(1).float().mean()))


def test_verification_auc_and_threshold():
    labels = torch.arange(4).repeat_interleave(30)
    emb = torch.nn.functional.one_hot(labels, 4).float() + 0.05 * torch.randn(120, 4, generator=torch.Generator().manual_seed(0))
    v = verification(emb, labels, n_pairs=400)
    assert v["roc_auc"] > 0.99 and v["accuracy"] > 0.95 and 0.2 < v["threshold"] < 1.3
    noise = verification(torch.randn(120, 4, generator=torch.Generator().manual_seed(1)), labels, n_pairs=400)
    assert 0.35 < noise["roc_auc"] < 0.65


def test_sobel_sketch_draws_dark_lines_at_edges():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 4:] = 1.0  # a vertical step between columns 3 and 4
    s = sobel_sketch(x)[0, 0]
    assert s.min() == 0 and s.max() == 1
    assert (s[:, 3:5] < 0.5).all() and (s[:, :2] == 1).all() and (s[:, 6:] == 1).all()


def cfg(tmp_path, name, **kw):
    settings = dict(TASK_DEFAULTS["metric"], task="metric", data="digits", model=SPEC, epochs=4, embed_dim=16,
                    lr=3e-3, out=str(tmp_path / name), log_every_steps=10)
    settings.update(kw)
    return TrainConfig.from_dict(settings)


@pytest.fixture(scope="module")
def triplet_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metric")
    result = Trainer(cfg(tmp, "trip", pk="10x8")).fit()
    return tmp / "trip", result


def test_a_triplet_run_learns_and_reports(triplet_run):
    run, result = triplet_run
    m = result["metric"]
    assert m["retrieval_after"]["recall@1"] > m["retrieval_before"]["recall@1"] + 0.03
    assert m["retrieval_after"]["recall@1"] > 0.9
    assert m["verification"]["roc_auc"] > 0.9 and m["verification"]["threshold_from"] == "validation pairs"
    for name in ("metric.json", "plots/embedding-before.png", "plots/embedding-after.png", "plots/roc.png",
                 "plots/distances.png", "report.html"):
        assert (run / name).is_file(), name
    info = json.loads((run / "model.json").read_text())
    assert info["threshold"] == m["verification"]["threshold"] and info["miner"] == "semihard"
    assert json.loads((run / "config.json").read_text())["batch_size"] == 80  # P x K


def test_contrastive_and_cross_domain_runs(tmp_path):
    r = Trainer(cfg(tmp_path, "con", metric_loss="contrastive", epochs=2)).fit()
    assert r["metric"]["retrieval_after"]["recall@1"] > 0.5
    r = Trainer(cfg(tmp_path, "x", domain="sketch", branches="half", epochs=2, pk="10x8")).fit()
    assert set(r["metric"]) == {"retrieval_before", "retrieval_after"}
    model, info = load_metric_model(tmp_path / "x")
    assert info["branches"] == "half" and model.backbone_b is not None


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    from sklearn.datasets import load_digits

    tmp = tmp_path_factory.mktemp("img")
    d = load_digits()
    out = {}
    for name, i, rgb in (("zero_a", 0, False), ("zero_b", 10, True), ("one", 1, False)):
        arr = (d.images[i] * 255 / 16).astype(np.uint8)
        img = Image.fromarray(arr)
        (img.convert("RGB").resize((16, 16)) if rgb else img).save(tmp / f"{name}.png")
        out[name] = str(tmp / f"{name}.png")
    (tmp / "bad.png").write_bytes(b"not an image")
    out["bad"] = str(tmp / "bad.png")
    return out


def test_verify_and_embed_commands(triplet_run, pngs, tmp_path, capsys):
    run, _ = triplet_run
    assert main(["verify", str(run), pngs["zero_a"], pngs["zero_b"]]) == 0
    out = capsys.readouterr().out
    assert "16x16 resized to the model's 8x8, colour converted to grayscale" in out
    assert "distance: " in out and "\nsame (" in out
    assert main(["verify", str(run), pngs["zero_a"], pngs["one"], "--json"]) == 0
    v = json.loads(capsys.readouterr().out)
    assert v["same"] is False and v["distance"] > v["threshold"]
    assert main(["embed", str(run), pngs["zero_a"], pngs["one"], "--out", str(tmp_path / "e.safetensors")]) == 0
    from safetensors import safe_open

    with safe_open(str(tmp_path / "e.safetensors"), "pt") as f:
        assert f.get_tensor("embeddings").shape == (2, 16)
        assert json.loads(f.metadata()["paths"]) == [pngs["zero_a"], pngs["one"]]


@pytest.mark.parametrize("args,needle", [
    (["train", "metric", "--branches", "unshared"], "need two domains"),
    (["train", "metric", "--metric-loss", "contrastive", "--miner", "semihard"], "--miner 'semihard'"),
    (["train", "metric", "--pk", "10x1"], "--pk '10x1'"),
    (["train", "metric", "--domain", "paint"], "--domain 'paint'"),
])
def test_bad_input_is_one_line_exit_2(args, needle, tmp_path):
    res = subprocess.run([sys.executable, "-m", "fovea.cli.main", *args, "--data", "digits", "--model", SPEC,
                          "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "x").exists()


def test_verify_a_file_that_is_not_an_image(triplet_run, pngs, capsys):
    run, _ = triplet_run
    assert main(["verify", str(run), pngs["zero_a"], pngs["bad"]]) == 2
    err = capsys.readouterr().err
    assert "bad.png" in err and len(err.strip().splitlines()) == 1


def test_loss_flag_names_the_metric_loss_for_a_metric_run():
    from fovea.cli.main import build_parser
    from fovea.cli.train import config_from_args

    parse = build_parser().parse_args
    cfg = config_from_args(parse(["train", "metric", "--loss", "contrastive", "--miner", "hard"]))
    assert (cfg.metric_loss, cfg.miner) == ("contrastive", "hard")
    assert config_from_args(parse(["train", "metric", "--metric-loss", "contrastive"])).metric_loss == "contrastive"
    assert config_from_args(parse(["train", "classify", "--loss", "hinge"])).loss == "hinge"  # unchanged elsewhere


def test_a_metric_run_indexes_and_searches_like_a_feature_model(triplet_run, pngs, tmp_path, capsys):
    from safetensors import safe_open

    from fovea.apps.features import load_feature_model

    run, _ = triplet_run
    folder = tmp_path / "gallery"
    folder.mkdir()
    for name in ("zero_a", "one"):
        Image.open(pngs[name]).save(folder / f"{name}.png")
    assert main(["index", str(run), str(folder), "--out", str(tmp_path / "i.safetensors")]) == 0
    model, _ = load_metric_model(run)
    x = torch.from_numpy(np.asarray(Image.open(pngs["zero_a"]).resize((8, 8)), dtype=np.float32) / 255)[None, None]
    with safe_open(str(tmp_path / "i.safetensors"), "pt") as f:  # the index holds the run's own embeddings
        paths = json.loads(f.metadata()["fovea"])["paths"]
        row = f.get_tensor("embeddings")[[Path(p).name for p in paths].index("zero_a.png")]
    torch.testing.assert_close(row, model.embed(x)[0].detach(), atol=1e-5, rtol=0)
    capsys.readouterr()
    assert main(["search", str(tmp_path / "i.safetensors"), pngs["zero_b"], "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["path"].endswith("zero_a.png")
    assert "logits" not in load_feature_model(str(run)).layer_names()


def test_a_cross_domain_run_with_two_branches_is_refused_by_index(tmp_path, pngs, capsys):
    Trainer(cfg(tmp_path, "x", domain="sketch", branches="unshared", epochs=1, pk="10x8")).fit()
    assert main(["index", str(tmp_path / "x"), str(Path(pngs["one"]).parent), "--out", str(tmp_path / "i")]) == 2
    err = capsys.readouterr().err
    assert "--branch a|b" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "i").exists()
