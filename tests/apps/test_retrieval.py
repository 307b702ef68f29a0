"""Content-based image retrieval: index and search a folder, fingerprints, and the metrics."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score

from fovea.apps.retrieval import Index, average_precision, l2_normalize, nearest, ranking_metrics
from fovea.cli.main import main


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Twelve distinct images of different sizes, one in a subfolder, plus a non-image."""
    root = tmp_path_factory.mktemp("gallery")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        h, w = (40, 48) if i % 2 else (36, 36)
        img = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        Image.fromarray(img).save(root / ("sub" if i == 11 else ".") / f"img{i:02d}.png")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def index_file(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("index") / "gallery.safetensors"
    assert main(["index", "lenet5_relu", str(folder), "--out", str(out), "--in-channels", "3"]) == 0
    return out


def test_index_holds_unit_embeddings_paths_and_fingerprint(index_file):
    index = Index.load(index_file)
    assert len(index) == 12 and index.embeddings.shape == (12, 84)
    torch.testing.assert_close(index.embeddings.norm(dim=1), torch.ones(12))
    assert index.paths[-1].endswith("sub/img11.png")
    assert index.meta["model"] == "lenet5_relu" and len(index.meta["model_fingerprint"]) == 16


def test_search_finds_the_query_itself_first_and_writes_a_sheet(folder, index_file, tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    query = folder / "img04.png"
    assert main(["search", str(index_file), str(query), "-k", "5", "--json", "--sheet", str(sheet)]) == 0
    result = json.loads(capsys.readouterr().out)
    top = result["results"]
    assert len(top) == 5 and top[0]["path"] == str(query) and top[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert all(a["score"] >= b["score"] for a, b in zip(top, top[1:]))
    assert sheet.is_file() and Image.open(sheet).size[0] > 200
    assert main(["search", str(index_file), str(folder / "sub" / "img11.png"), "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["1", "1.0000"] and lines[1].endswith("img11.png")


def test_query_model_other_than_the_index_model_is_refused(folder, index_file, capsys):
    assert main(["search", str(index_file), str(folder / "img00.png"), "--model", "lenet5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "was built with model 'lenet5_relu'" in err and "fingerprint" in err


def test_missing_files_exit_2(folder, index_file, tmp_path, capsys):
    assert main(["search", str(tmp_path / "none.safetensors"), str(folder / "img00.png")]) == 2
    assert "index (from `fovea index`)" in capsys.readouterr().err
    assert main(["search", str(index_file), str(tmp_path / "none.png")]) == 2
    assert "query image" in capsys.readouterr().err
    assert main(["index", "lenet5", str(tmp_path / "nowhere"), "--out", str(tmp_path / "i.safetensors")]) == 2
    assert "image folder" in capsys.readouterr().err
    (tmp_path / "plain.safetensors").write_bytes(b"junk")
    assert main(["search", str(tmp_path / "plain.safetensors"), str(folder / "img00.png")]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err


def _unit(angles_deg):
    a = torch.tensor(angles_deg, dtype=torch.float64) * math.pi / 180
    return torch.stack([a.cos(), a.sin()], 1).float()


def test_map_and_precision_at_k_on_a_hand_computed_example():
    # gallery at 10..50 degrees, labels 1 0 1 0 0; query A (label 1) at 0 degrees ranks them
    # 10, 20, 30, 40, 50 -> relevant 1 0 1 0 0: AP = (1/1 + 2/3) / 2 = 5/6, P@1 = 1, P@5 = 2/5.
    # Query B (label 0) at 60 degrees ranks them 50, 40, 30, 20, 10 -> relevant 1 1 0 1 0:
    # AP = (1/1 + 2/2 + 3/4) / 3 = 11/12, P@1 = 1, P@5 = 3/5.
    gallery = _unit([10, 20, 30, 40, 50])
    labels = torch.tensor([1, 0, 1, 0, 0])
    m = ranking_metrics(_unit([0, 60]), torch.tensor([1, 0]), gallery, labels, ks=(1, 3, 5))
    assert m["mAP"] == pytest.approx((5 / 6 + 11 / 12) / 2)
    assert m["precision@1"] == pytest.approx(1.0)
    assert m["precision@3"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert m["precision@5"] == pytest.approx((2 / 5 + 3 / 5) / 2)
    assert average_precision([0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 0, 0]) == pytest.approx(5 / 6)


def test_map_agrees_with_sklearn_per_query():
    g = torch.Generator().manual_seed(0)
    gallery, queries = torch.randn(200, 8, generator=g), torch.randn(23, 8, generator=g)
    gl, ql = torch.randint(0, 4, (200,), generator=g), torch.randint(0, 4, (23,), generator=g)
    scores = (l2_normalize(queries) @ l2_normalize(gallery).T).numpy()
    per_query = [average_precision_score((gl == ql[i]).numpy(), scores[i]) for i in range(23)]
    ours = [average_precision(scores[i], (gl == ql[i]).numpy()) for i in range(23)]
    np.testing.assert_allclose(ours, per_query, rtol=1e-6)
    m = ranking_metrics(l2_normalize(queries), ql, l2_normalize(gallery), gl, ks=(10,), chunk=7)
    assert m["mAP"] == pytest.approx(np.mean(per_query), rel=1e-5)
    top10 = np.argsort(-scores, axis=1)[:, :10]
    assert m["precision@10"] == pytest.approx(np.mean((gl.numpy()[top10] == ql.numpy()[:, None]).mean(1)))


def test_same_split_leaves_each_query_out_of_its_own_ranking():
    g = torch.Generator().manual_seed(1)
    x, y = l2_normalize(torch.randn(30, 5, generator=g)), torch.randint(0, 3, (30,), generator=g)
    m = ranking_metrics(x, y, x, y, ks=(1,), exclude_self=True, chunk=8)
    want = []
    for i in range(30):
        keep = torch.arange(30) != i
        want.append(average_precision_score((y[keep] == y[i]).numpy(), (x[keep] @ x[i]).numpy()))
    assert m["mAP"] == pytest.approx(np.mean(want), rel=1e-5)


def test_nearest_matches_brute_force():
    g = torch.Generator().manual_seed(2)
    gallery, queries = l2_normalize(torch.randn(50, 6, generator=g)), l2_normalize(torch.randn(9, 6, generator=g))
    scores, ids = nearest(gallery, queries, 4, chunk=4)
    want = (queries @ gallery.T).topk(4, dim=1)
    assert torch.equal(ids, want.indices) and torch.allclose(scores, want.values)


def test_evaluate_retrieval_cli_on_digits_pixels(capsys):
    assert main(["evaluate-retrieval", "pixels", "--data", "digits", "-k", "1,10", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["queries"] == 360 and r["gallery"] == 1437 and 0.5 < r["mAP"] < 0.8 and r["precision@1"] > 0.95
    assert main(["evaluate-retrieval", "pixels", "--data", "digits", "--gallery", "val"]) == 2
    assert "no 'val' split" in capsys.readouterr().err


def test_tied_scores_count_as_in_sklearn():
    g = torch.Generator().manual_seed(3)
    base = l2_normalize(torch.randn(10, 4, generator=g))
    gallery = base[torch.randint(0, 10, (80,), generator=g)]  # many exact duplicates: tied scores
    gl, ql = torch.randint(0, 3, (80,), generator=g), torch.randint(0, 3, (6,), generator=g)
    queries = base[:6]
    scores = (queries @ gallery.T).numpy()
    want = [average_precision_score((gl == ql[i]).numpy(), scores[i]) for i in range(6)]
    assert [average_precision(scores[i], (gl == ql[i]).numpy()) for i in range(6)] == pytest.approx(want)
    assert ranking_metrics(queries, ql, gallery, gl, ks=())["mAP"] == pytest.approx(np.mean(want))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small CNN trained for one epoch on digits."""
    import os

    from fovea.train.config import TrainConfig
    from fovea.train.loop import Trainer

    os.environ.pop("FOVEA_RUN_DIR", None)
    out = tmp_path_factory.mktemp("runs") / "digits"
    cfg = TrainConfig(data="digits", model="conv3x3-8,relu,maxpool2,fc16,relu,fc10", epochs=1, batch_size=64,
                      lr=0.05, val_fraction=0.0, out=str(out))
    Trainer(cfg).fit()
    return out


def test_a_run_as_feature_model_and_index_model(run_dir, folder, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from fovea.apps.features import FeatureSet

    feats = tmp_path / "f.safetensors"
    assert main(["features", str(run_dir), "--splits", "test", "--out", str(feats)]) == 0  # the run's own data
    fs = FeatureSet.load(feats)
    assert fs.features.shape == (360, 16) and fs.meta["data"] == "digits"
    index = tmp_path / "i.safetensors"
    assert main(["index", str(run_dir), str(folder), "--out", str(index)]) == 0  # colour files, grey model
    capsys.readouterr()
    assert main(["search", str(index), str(folder / "img07.png"), "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["path"].endswith("img07.png")
    # the run's weights change (retrained in place): its old index no longer fits
    weights = load_file(str(run_dir / "model.safetensors"))
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()},
              str(run_dir / "model.safetensors"))
    assert main(["search", str(index), str(folder / "img07.png")]) == 2
    assert "fingerprint" in capsys.readouterr().err
