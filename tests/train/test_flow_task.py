"""The flow task (a tiny `fovea train flow`, joint flips, EPE with unknown pixels) and the
classical baselines (zero flow, Farneback, DIS)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
import torch

from fovea.apps.flow_baselines import available_baselines, baseline_epes, dis, farneback, zero_flow
from fovea.cli.main import main
from fovea.data.chairs import make_chairs
from fovea.errors import UserError
from fovea.tasks.flow import (FramePairPreprocess, Flow, hflip_pair, pair_epe, parse_flow_augment, vflip_pair)
from fovea.train.run import Run

TINY = ["--model-kwargs", '{"width": 0.1}', "--epochs", "1", "--batch-size", "8", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("flow") / "run"
    rc = main(["train", "flow", "--data", "chairs:n=16,val=8,test=8,size=32", "--model", "flownets",
               "--augment", "hflip,vflip", *TINY, "--out", str(out)])
    assert rc == 0
    return out


def test_tiny_training_run_reports_epe_beside_baselines(tiny_run, capsys):
    info = Run.existing(tiny_run).read_json("model.json")
    assert info["task"] == "flow" and info["model"] == "flownets" and info["flownet"]["width"] == 0.1
    ev = json.loads((tiny_run / "flow_eval.json").read_text())
    assert ev["split"] == "test" and ev["n"] == 8
    assert set(ev["epe"]) >= {"model", "zero", "farneback"}
    # zero flow's EPE is the mean flow length of the test pairs
    test = make_chairs(8, (32, 32), seed=2)
    assert ev["epe"]["zero"] == pytest.approx(float(test.flows.norm(dim=1).mean()), rel=1e-5)
    rows = (tiny_run / "metrics.csv").read_text().splitlines()
    assert rows[-1].split(",")[2] == "test"
    assert (tiny_run / "plots" / "flow_examples.png").is_file() and (tiny_run / "report.html").is_file()


def test_eval_step_rows_hold_epe_and_zero_epe():
    task = Flow()
    task.masked = False
    y = torch.randn(3, 2, 8, 8)
    pred = y + torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    model = lambda x: pred  # noqa: E731  (eval_step only needs a callable giving the flow)
    row = task.eval_step(model, torch.zeros(3, 6, 8, 8), y)
    assert float(row["epe"]) == pytest.approx(15.0, rel=1e-5) and row["count"] == 3
    assert float(row["zero_epe"]) == pytest.approx(float(y.norm(dim=1).mean((1, 2)).sum()), rel=1e-5)


def test_epe_leaves_unknown_pixels_out():
    y = torch.zeros(1, 2, 4, 4)
    y[0, :, 0, 0] = 1e10  # Middlebury's unknown marker
    y[0, :, 0, 1] = float("nan")
    known = (torch.isfinite(y) & (y.abs() < 1e9)).all(1)
    pred = torch.full_like(y, 0.0)
    pred[0, 0] = 2.0
    assert float(pair_epe(pred, y, known)[0]) == pytest.approx(2.0)


def test_joint_flips_move_the_flow_with_the_frames():
    d = make_chairs(4, (32, 40), seed=5)
    x, y = d.images.float() / 255, d.flows
    for flip, axis in ((hflip_pair, -1), (vflip_pair, -2)):
        fx, fy = flip(x, y)
        assert torch.equal(fx, x.flip(axis))
        # a point moving by (u, v) moves by (-u, v) in the mirror (or (u, -v))
        sign = torch.tensor([-1.0, 1.0] if axis == -1 else [1.0, -1.0]).view(1, 2, 1, 1)
        assert torch.equal(fy, y.flip(axis) * sign)
    task = Flow()
    task.flips = parse_flow_augment("hflip")
    g = torch.Generator().manual_seed(0)
    ax, ay = task.augment_batch(None, x, y, g)
    flipped = torch.rand(4, generator=torch.Generator().manual_seed(0)) < 0.5
    for i in range(4):
        ex, ey = hflip_pair(x[i:i + 1], y[i:i + 1]) if flipped[i] else (x[i:i + 1], y[i:i + 1])
        assert torch.equal(ax[i:i + 1], ex) and torch.equal(ay[i:i + 1], ey)
    with pytest.raises(UserError, match="rotate"):
        parse_flow_augment("hflip,rotate:10")


def test_pair_preprocess_normalizes_both_frames_alike():
    x = torch.rand(5, 6, 8, 8)
    x[:, 3:] += 0.2  # frame 2 brighter
    pre = FramePairPreprocess("zscore").fit(x)
    y = pre(x)
    assert torch.allclose(y[:, :3] - y[:, 3:], (x[:, :3] - x[:, 3:]) / pre.frames.std.view(1, 3, 1, 1), atol=1e-5)
    frames = torch.cat([x[:, :3], x[:, 3:]])
    assert torch.allclose(pre.frames.mean.flatten(), frames.mean((0, 2, 3)), atol=1e-5)
    with pytest.raises(UserError):
        FramePairPreprocess("pca-whiten")


def test_bad_flags_exit_2(tmp_path, capsys):
    base = ["train", "flow", "--data", "chairs:n=8,val=0,test=0,size=16", "--epochs", "1", "--batch-size", "4"]
    for extra, needle in ((["--model", "lenet5"], "flownets or flownetc"),
                          (["--augment", "rotate:5"], "hflip"),
                          (["--model-kwargs", '{"depth": 3}'], "depth"),
                          (["--preprocess", "mean-image"], "zscore"),
                          (["--train-fraction", "0.5"], "chairs:n=N")):
        assert main([*base, *extra, "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------- baselines


def _translated_pair(dx: int = 3, dy: int = 2, size: int = 64):
    """Frame 2 is frame 1 moved by (dx, dy) pixels: flow (dx, dy) everywhere it is defined."""
    img = torch.from_numpy(np.array(skimage.data.astronaut())[100:100 + size + 8, 150:150 + size + 8]).permute(2, 0, 1)
    f1 = img[:, 4:4 + size, 4:4 + size]
    f2 = img[:, 4 - dy:4 - dy + size, 4 - dx:4 - dx + size]
    return f1.contiguous(), f2.contiguous()


def test_baselines_return_flow_fields_of_the_frames_size():
    f1, f2 = _translated_pair()
    for name, fn in available_baselines().items():
        for a, b in ((f1, f2), (f1.float() / 255, f2.float() / 255)):
            out = fn(a, b)
            assert out.shape == (2, 64, 64) and out.dtype == torch.float32, name
    assert torch.equal(zero_flow(f1, f2), torch.zeros(2, 64, 64))
    with pytest.raises(UserError, match="same size"):
        farneback(f1, f2[:, :-1])


def test_farneback_and_dis_beat_zero_flow_on_a_translation():
    f1, f2 = _translated_pair(3, 2)
    truth = torch.tensor([3.0, 2.0]).view(2, 1, 1).expand(2, 64, 64)
    inner = (slice(None), slice(8, -8), slice(8, -8))  # away from the border, where the motion is unseen
    zero = pair_epe(zero_flow(f1, f2)[inner][None], truth[inner][None])
    fb = pair_epe(farneback(f1, f2)[inner][None], truth[inner][None])
    assert float(fb) < 0.25 * float(zero)
    if "dis" in available_baselines():
        assert float(pair_epe(dis(f1, f2)[inner][None], truth[inner][None])) < 0.25 * float(zero)
    epes = baseline_epes(torch.cat([f1, f2])[None], truth[None].clone())
    assert epes["zero"] == pytest.approx(13 ** 0.5, rel=1e-5) and epes["farneback"] < epes["zero"]


def test_level_weights_reproduce_the_papers_pixel_sum_loss():
    """sum_l LEVEL_WEIGHTS_l * mean EPE_l (level pixels) is proportional to the released loss,
    sum_l FLOWNET_WEIGHTS_l * (EPE summed over level l's pixels, flow in input pixels / 20)."""
    from fovea.losses.flow import FLOWNET_WEIGHTS, multiscale_epe, resize_flow
    from fovea.tasks.flow import LEVEL_WEIGHTS

    assert LEVEL_WEIGHTS == (1.0, 1.0, 1.0, 2.0, 4.0)
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 2, 128, 192, generator=g) * 3
    preds = [torch.randn(2, 2, 128 // 2 ** lv, 192 // 2 ** lv, generator=g) for lv in range(2, 7)]
    ours = multiscale_epe(preds, y, LEVEL_WEIGHTS)
    paper = 0.0
    for lv, (p, w) in enumerate(zip(preds, FLOWNET_WEIGHTS), start=2):
        target = resize_flow(y, tuple(p.shape[-2:])) * 2 ** lv / 20  # one unit at every level
        paper += w * torch.linalg.vector_norm(p * 2 ** lv / 20 - target, dim=1).sum() / len(y)
    # level l has HW / 4^l pixels: the ratio is HW * w_2 / (4 * 20) whatever the errors
    assert float(paper / ours) == pytest.approx(128 * 192 * FLOWNET_WEIGHTS[0] / (4 * 20), rel=1e-4)
