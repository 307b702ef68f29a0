"""`fovea train video` and `fovea predict` on videos: tiny runs of every model on moving-shapes
and on a folder of video files the test writes itself; clip sampling and augmentation; errors."""

import json

import numpy as np
import pytest
import torch

from fovea.cli.main import main

TINY = {
    "c3d": {"width": 0.0625, "fc_width": 32, "norm": "bn"},
    "two-stream": {"width": 0.25},
    "cnn-lstm": {"width": 0.25, "hidden": 16},
}


def _train(tmp_path, model, *extra, data="moving-shapes:n=3,frames=18,size=32", out="run"):
    args = ["train", "video", "--model", model, "--model-kwargs", json.dumps(TINY[model]), "--data", data,
            "--epochs", "1", "--batch-size", "9", "--out", str(tmp_path / out), *extra]
    return main(args), tmp_path / out


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FOVEA_CACHE", str(tmp_path / "cache"))


def _video_file(path, frames=20, size=40, dx=2):
    """A bright square moving right by ``dx`` pixels a frame over a dark background."""
    from fovea.data.video import write_video

    video = torch.full((3, frames, size, size), 30, dtype=torch.uint8)
    for t in range(frames):
        x = 4 + dx * t % (size - 12)
        video[:, t, 14:26, x:x + 10] = 220
    write_video(path, video)
    return video


@pytest.mark.parametrize("model", ["c3d", "cnn-lstm"])
def test_train_and_predict(tmp_path, model, capsys):
    rc, run = _train(tmp_path, model, "--clip", "16")
    assert rc == 0
    video = json.loads((run / "video.json").read_text())
    assert video["split"] == "test" and video["videos"] == 9 * 3
    for key in ("clip_accuracy", "video_accuracy"):
        assert 0.0 <= video[key] <= 1.0
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "video_acc" in header
    assert (run / "plots" / "clips.png").is_file() and (run / "plots" / "confusion.png").is_file()
    info = json.loads((run / "model.json").read_text())
    assert info["task"] == "video" and info["clip"] == 16 and info["frames"] == 18
    capsys.readouterr()
    _video_file(tmp_path / "a.avi")
    assert main(["predict", str(run), str(tmp_path / "a.avi"), "--json", "-k", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["frames"] == 20 and len(out[0]["top"]) == 3
    assert abs(sum(t["prob"] for t in out[0]["top"]) - 1) < 1 and out[0]["top"][0]["cls"] in info["classes"]


def test_two_stream_reports_each_stream_and_caches_flow(tmp_path):
    rc, run = _train(tmp_path, "two-stream", "--clip", "12", "--flow-stack", "10")
    assert rc == 0
    video = json.loads((run / "video.json").read_text())
    for stream in ("", "spatial_", "temporal_"):
        assert 0.0 <= video[f"{stream}video_accuracy"] <= 1.0
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"spatial_acc", "temporal_acc"} <= set(header)
    cached = sorted((tmp_path / "cache").rglob("*.pt"))
    assert len(cached) == 3  # train, val and test flows
    mtimes = [p.stat().st_mtime_ns for p in cached]
    rc, _ = _train(tmp_path, "two-stream", "--clip", "12", out="run2")
    assert rc == 0 and [p.stat().st_mtime_ns for p in cached] == mtimes  # read back, not recomputed


def test_two_stream_on_the_flow_of_a_fovea_flow_run(tmp_path):
    from fovea.data.video import dequantize_flow, make_moving_shapes
    from fovea.tasks.video import flows_for

    flow_run = tmp_path / "flownet"
    assert main(["train", "flow", "--data", "chairs:n=16,val=8,test=8,size=32", "--model", "flownets",
                 "--model-kwargs", '{"width": 0.1}', "--epochs", "1", "--batch-size", "8",
                 "--out", str(flow_run)]) == 0
    videos, _ = make_moving_shapes(1, frames=4, size=32)
    flows = flows_for(videos[:2], str(flow_run))
    assert flows.shape == (2, 2, 4, 32, 32) and flows.dtype == torch.uint8
    assert (flows[:, :, -1] == 128).all()  # the last frame has no next one: zero flow
    from fovea.cli.flow import estimate_flow
    from fovea.tasks.flow import load_flow_model

    net, _ = load_flow_model(flow_run)
    direct = estimate_flow(net, torch.cat([videos[1, :, 2], videos[1, :, 3]])[None].float().div(255))
    assert (dequantize_flow(flows[1, :, 2]) - direct.clamp(-16, 16)).abs().max() <= 16 / 127.5
    rc, run = _train(tmp_path, "two-stream", "--clip", "12", "--flow-method", str(flow_run))
    assert rc == 0 and json.loads((run / "model.json").read_text())["flow_method"] == str(flow_run)


def test_a_folder_of_video_files_decodes_and_trains(tmp_path):
    from fovea.data.video import read_video

    written = {}
    for cls, dx in (("right", 2), ("still", 0)):
        for i in range(3):
            (tmp_path / "vids" / cls).mkdir(parents=True, exist_ok=True)
            written[cls, i] = _video_file(tmp_path / "vids" / cls / f"{i}.avi", frames=18, size=32, dx=dx)
    back = read_video(tmp_path / "vids" / "right" / "0.avi")
    assert back.shape == (3, 18, 32, 32) and back.dtype == torch.uint8
    assert (back.float() - written["right", 0].float()).abs().mean() < 6  # MJPG is lossy
    rc, run = _train(tmp_path, "c3d", "--clip", "16", "--image-size", "32", "--val-fraction", "0.34",
                     "--batch-size", "2", data=str(tmp_path / "vids"))
    assert rc == 0
    info = json.loads((run / "model.json").read_text())
    assert info["classes"] == ["right", "still"] and info["frames"] == 18


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    rc, run = _train(tmp_path, "c3d", "--clip", "16")
    assert rc == 0
    capsys.readouterr()
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    (tmp_path / "empty.avi").write_bytes(b"")
    _video_file(tmp_path / "short.avi", frames=5)
    frames = tmp_path / "frames"
    frames.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(frames / "0001.png")
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(frames / "0002.png")
    cases = [
        (["predict", str(run), str(tmp_path / "junk.mp4")], "junk.mp4"),
        (["predict", str(run), str(tmp_path / "empty.avi")], "empty.avi"),
        (["predict", str(run), str(tmp_path / "short.avi")], "16 frames"),
        (["predict", str(run), str(frames)], "0002.png"),
        (["predict", str(run), str(tmp_path / "missing.mp4")], "missing.mp4"),
        (["train", "video", "--model", "lenet5", "--out", str(tmp_path / "r1")], "c3d, two-stream, cnn-lstm"),
        (["train", "video", "--model", "c3d", "--augment", "rotate:5", "--data", "moving-shapes:n=2",
          "--out", str(tmp_path / "r2")], "crop:PIXELS and hflip"),
        (["train", "video", "--model", "c3d", "--clip", "40", "--data", "moving-shapes:n=2",
          "--out", str(tmp_path / "r3")], "clip of 40 frames"),
        (["train", "video", "--model", "two-stream", "--clip", "8", "--data", "moving-shapes:n=2",
          "--out", str(tmp_path / "r4")], "--flow-stack 10"),
        (["train", "video", "--model", "c3d", "--channels-last", "--data", "moving-shapes:n=2",
          "--out", str(tmp_path / "r5")], "--channels-last"),
        (["train", "video", "--model", "c3d", "--precision", "bf16-mixed", "--accelerator", "cpu",
          "--data", "moving-shapes:n=2", "--out", str(tmp_path / "r6")], "32-true"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, (argv, err)
    for name in ("r1", "r2", "r3", "r4", "r5", "r6"):
        assert not (tmp_path / name).exists()


def test_random_clips_are_consecutive_frames():
    from fovea.tasks.video import random_clips

    v = torch.arange(10, dtype=torch.float).view(1, 1, 10, 1, 1).expand(4, 2, 10, 3, 3).contiguous()
    g = torch.Generator().manual_seed(0)
    clips = random_clips(v, 4, g)
    assert clips.shape == (4, 2, 4, 3, 3)
    first = clips[:, 0, :, 0, 0]
    assert torch.equal(first - first[:, :1], torch.arange(4.0).expand(4, 4))  # t, t+1, t+2, t+3
    assert (first[:, 0] <= 6).all() and torch.equal(clips[:, 0], clips[:, 1])


def test_clip_augmentation_is_the_same_for_every_frame_and_flips_the_flow():
    from fovea.tasks.video import augment_clips

    g = torch.Generator().manual_seed(1)
    frame = torch.rand(8, 5, 1, 12, 12)
    x = frame.expand(-1, -1, 6, -1, -1).contiguous()
    out = augment_clips(x, {"crop": 2, "hflip": True}, g, flow_channels=2)
    assert out.shape == x.shape
    assert torch.equal(out, out[:, :, :1].expand_as(out))  # every frame of a clip moved alike
    plain = augment_clips(x, {"hflip": True}, torch.Generator().manual_seed(3), flow_channels=2)
    kept = [i for i in range(8) if torch.equal(plain[i], x[i])]
    assert 0 < len(kept) < 8  # each clip flipped with probability 1/2
    for i in set(range(8)) - set(kept):
        assert torch.allclose(plain[i, :3], x[i, :3].flip(-1))
        assert torch.allclose(plain[i, 3], 1 - x[i, 3].flip(-1))  # u negated
        assert torch.allclose(plain[i, 4], x[i, 4].flip(-1))  # v unchanged


def test_video_accuracy_terms_match_a_direct_computation():
    from fovea.tasks.video import video_accuracy_terms

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0])
    clip_acc, video_acc, probs = video_accuracy_terms(logits, y)
    p = logits.softmax(-1).numpy()
    assert np.isclose(clip_acc.item(), sum((logits[i].argmax(-1) == y[i]).float().mean().item() for i in range(5)))
    assert video_acc.item() == sum(int(p[i].mean(0).argmax() == y[i]) for i in range(5))
    assert np.allclose(probs.numpy(), p.mean(1), atol=1e-6)


def test_the_fusion_weight_minimizes_the_validation_cross_entropy():
    from fovea.data.sources import Split
    from fovea.tasks.video import ClipNormalize, VideoClassifier, build_net, clip_scores, fit_fusion_weight

    torch.manual_seed(0)
    net = build_net("two-stream", 3, 12, (16, 16), 10, {"width": 0.125})
    model = VideoClassifier(net, ClipNormalize("none")).eval()
    videos = torch.randint(0, 256, (12, 5, 14, 16, 16), dtype=torch.uint8)
    labels = torch.randint(0, 3, (12,))
    w = fit_fusion_weight(model, Split(images=videos, labels=labels), clip=12, batch_size=5)
    assert float(net.spatial_weight) == w and 0.0 <= w <= 1.0
    with torch.no_grad():
        fused, s, t = clip_scores(model, videos.float() / 255, 12, streams=True)
    ps, pt = s.softmax(-1), t.softmax(-1)
    torch.testing.assert_close(fused.exp(), w * ps + (1 - w) * pt, atol=1e-5, rtol=1e-4)
    vs, vt = ps.mean(1).double().numpy(), pt.mean(1).double().numpy()

    def nll(v):
        return -np.log((v * vs + (1 - v) * vt)[np.arange(12), labels.numpy()]).mean()

    assert all(nll(w) <= nll(v) + 1e-9 for v in np.linspace(0, 1, 21))
