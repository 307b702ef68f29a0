"""fovea.data.video: the moving-shapes generator (each class moves as named, one frame tells
nothing), video files and frame folders, folder datasets, clip sampling and cached flow."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fovea.data import video as vd
from fovea.data.video import (
    FLOW_BOUND, MOVING_SHAPES_CLASSES, BadVideoError, clip_starts, dequantize_flow, load_video_data,
    load_video_folder, make_moving_shapes, moving_shapes_splits, parse_moving_shapes_spec, quantize_flow,
    read_video, take_clips, video_flows, write_video,
)
from fovea.errors import UserError

K = len(MOVING_SHAPES_CLASSES)


# ---------------------------------------------------------------------------- moving-shapes


def test_moving_shapes_is_deterministic_with_the_stated_shapes():
    videos, labels = make_moving_shapes(2, frames=8, size=32, seed=3)
    assert videos.shape == (2 * K, 3, 8, 32, 32) and videos.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.tolist() == [i % K for i in range(2 * K)]
    again, _ = make_moving_shapes(2, frames=8, size=32, seed=3)
    other, _ = make_moving_shapes(2, frames=8, size=32, seed=4)
    assert torch.equal(videos, again) and not torch.equal(videos, other)
    assert make_moving_shapes(1, frames=4, size=48)[0].shape == (K, 3, 4, 48, 48)
    splits = moving_shapes_splits(train=2, val=1, test=0, frames=6, size=32, seed=0)
    assert set(splits) == {"train", "val"} and len(splits["val"][1]) == K
    assert not torch.equal(splits["train"][0][:K], splits["val"][0])  # distinct seeds per split
    with pytest.raises(UserError, match="size=8"):
        make_moving_shapes(1, size=8)


def _torus_centroid(m):
    """(T, 2) circular-mean centre (x, y) of coverage masks (T, S, S) on the torus."""
    s = m.shape[-1]
    ang = torch.arange(s, dtype=torch.float64) * (2 * math.pi / s)
    out = []
    for w in (m.double().sum(-2), m.double().sum(-1)):  # weights along x, along y
        out.append(torch.atan2((w * ang.sin()).sum(-1), (w * ang.cos()).sum(-1)) * (s / (2 * math.pi)))
    return torch.stack(out, -1)


def _wrap(d, s):
    return torch.remainder(d + s / 2, s) - s / 2


def _rotation_steps(m):
    """(T - 1,) degrees the shape turns per frame, from the angular harmonic (k = 2 or 3) of its
    coverage about its centre; positive is clockwise on screen (y down)."""
    s = m.shape[-1]
    c = _torus_centroid(m)
    xs = torch.arange(s, dtype=torch.float64)
    dx = _wrap(xs[None, None, :] - c[:, 0, None, None], s)
    dy = _wrap(xs[None, :, None] - c[:, 1, None, None], s)
    z = torch.complex(dx, dy)
    best = None
    for k in (2, 3):
        a = (m.double() * z**k).sum((-2, -1))
        strength = (a.abs() / (m.double() * z.abs() ** k).sum((-2, -1))).min()
        if best is None or strength > best[0]:
            best = (strength, k, a)
    _, k, a = best
    return torch.rad2deg(torch.angle(a[1:] * a[:-1].conj()) / k)


def test_each_class_moves_as_its_name_says():
    frames, size = 24, 32
    videos, labels, masks = make_moving_shapes(5, frames=frames, size=size, seed=1, return_masks=True)
    assert masks.shape == (5 * K, frames, size, size) and 0 <= masks.min() and masks.max() <= 1
    # the background is static: pixels the shape never covers do not change
    never = (masks == 0).all(1)
    diff = (videos[:, :, 1:].int() - videos[:, :, :-1].int()).abs().amax((1, 2))
    assert (diff[never] == 0).all()
    for i in range(len(labels)):
        name, m = MOVING_SHAPES_CLASSES[int(labels[i])], masks[i]
        area = m.sum((-2, -1))
        ratio = float(area[-1] / area[0])
        vel = _wrap(torch.diff(_torus_centroid(m), dim=0), size)  # (T - 1, 2) px/frame
        if name in ("left", "right", "up", "down"):
            axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}[name]
            assert 0.9 <= sign * vel[:, axis].mean() <= 2.1, (name, vel.mean(0))
            assert vel[:, 1 - axis].abs().max() < 0.15 and 0.9 < ratio < 1.1
        elif name.startswith("rotate"):
            step = float(_rotation_steps(m).median())
            assert 5 <= (1 if name == "rotate-cw" else -1) * step <= 13, (name, step)
            # the shape turns about a point of its own, so its centre only circles about it
            drift = _wrap(_torus_centroid(m) - _torus_centroid(m)[:1], size).norm(dim=-1)
            assert drift.max() < 0.8 * area.mean().sqrt() and 0.85 < ratio < 1.15
        elif name in ("grow", "shrink"):
            assert (3.0 < ratio < 5.0) if name == "grow" else (0.2 < ratio < 0.33), (name, ratio)
            steps = torch.diff(area)
            assert (steps > 0).all() if name == "grow" else (steps < 0).all()
        else:  # bounce: back and forth along one axis, reversing in every window of 16 frames
            axis = int(vel.abs().sum(0).argmax())
            assert vel[:, 1 - axis].abs().max() < 0.15 and 0.9 < ratio < 1.1
            v = vel[:, axis]
            assert 0.6 <= v.abs().mean() <= 2.1  # a step across a reversal moves less
            for start in range(0, frames - 16 + 1):
                w = v[start:start + 15]  # the 15 steps of a window of 16 frames
                assert w.max() > 0.05 and w.min() < -0.05, (i, v)


def _flow_features(flows):
    """Per video, means over frame pairs of: the mean flow (u, v), its mean size (|u|, |v|), and
    its swirl and spread about the centre of motion (the flow-weighted centre on the torus):
    sum(d x f) and sum(d . f) over sum(|d| |f|), d the offset from that centre."""
    f = dequantize_flow(flows[:, :, :-1]).double()  # (N, 2, V - 1, H, W)
    u, v = f[:, 0], f[:, 1]
    s = f.shape[-1]
    w = f.norm(dim=1)
    ang = torch.arange(s, dtype=torch.float64) * (2 * math.pi / s)
    cx = torch.atan2((w.sum(-2) * ang.sin()).sum(-1), (w.sum(-2) * ang.cos()).sum(-1)) * (s / (2 * math.pi))
    cy = torch.atan2((w.sum(-1) * ang.sin()).sum(-1), (w.sum(-1) * ang.cos()).sum(-1)) * (s / (2 * math.pi))
    xs = torch.arange(s, dtype=torch.float64)
    dx = _wrap(xs - cx[..., None, None], s)
    dy = _wrap(xs[:, None] - cy[..., None, None], s)
    norm = ((dx**2 + dy**2).sqrt() * w).sum((-2, -1)) + 1e-9
    swirl = (dx * v - dy * u).sum((-2, -1)) / norm
    spread = (dx * u + dy * v).sum((-2, -1)) / norm
    per_pair = torch.stack([u.mean((-2, -1)), v.mean((-2, -1)), u.abs().mean((-2, -1)), v.abs().mean((-2, -1)),
                            swirl, spread], -1)
    return per_pair.mean(1).numpy()


def test_one_frame_tells_nothing_about_the_class_but_motion_does(tmp_path):
    from scipy.stats import ks_2samp
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frames, size = 16, 32
    train, y_train, m_train = make_moving_shapes(40, frames=frames, size=size, seed=10, return_masks=True)
    test, y_test = make_moving_shapes(30, frames=frames, size=size, seed=11)
    # every per-frame quantity, at a frame drawn uniformly, has one distribution in every class
    pick = torch.randint(frames, (len(y_train),), generator=torch.Generator().manual_seed(0))
    rows = torch.arange(len(y_train))
    frame = train[rows, :, pick].float()  # (N, 3, H, W)
    stats = {"area": m_train[rows, pick].sum((-2, -1)), "luma": frame.mean((1, 2, 3)),
             "red": frame[:, 0].mean((-2, -1)), "spread": frame.std((2, 3)).mean(1)}
    for name, x in stats.items():
        for c in range(K):
            p = ks_2samp(x[y_train == c].numpy(), x[y_train != c].numpy()).pvalue
            assert p > 1e-3, (name, MOVING_SHAPES_CLASSES[c], p)

    def middle(videos):  # the middle frame, pixels at 16x16 and the magnitude of its spectrum
        f = videos[:, :, frames // 2].float() / 255
        small = F.avg_pool2d(f, 2).flatten(1)
        spectrum = torch.fft.fft2(f.mean(1)).abs()[:, :8, :8].flatten(1)
        return torch.cat([small, spectrum], 1).numpy()

    chance = 1 / K
    single = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=300))
    single.fit(middle(train), y_train.numpy())
    single_acc = single.score(middle(test), y_test.numpy())
    motion = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    motion.fit(_flow_features(video_flows(train, cache_dir=tmp_path)), y_train.numpy())
    motion_acc = motion.score(_flow_features(video_flows(test, cache_dir=tmp_path)), y_test.numpy())
    assert single_acc < chance + 0.09, single_acc
    assert motion_acc > 0.6, motion_acc


def test_spec_parsing_and_generated_bundle():
    assert parse_moving_shapes_spec("moving-shapes") == dict(n=200, val=20, test=50, frames=24, size=32, seed=0)
    o = parse_moving_shapes_spec("moving-shapes:n=3,frames=18", image_size=40)
    assert o == dict(n=3, val=1, test=3, frames=18, size=40, seed=0)
    assert parse_moving_shapes_spec("moving-shapes:size=48,val=0", image_size=40)["size"] == 48
    for bad, match in (("moving-shapes:n=x", "n='x'"), ("moving-shapes:colour=2", "colour=2"),
                       ("moving-shapes:n=0", "n=0"), ("moving-shapes:size=8", "size=8"),
                       ("moving-shape", "moving-shape")):
        with pytest.raises(UserError, match=match):
            parse_moving_shapes_spec(bad)
    data = load_video_data("moving-shapes:n=2,val=1,test=1,frames=16,size=32", clip=16)
    assert data.classes == list(MOVING_SHAPES_CLASSES) and data.in_channels == 3 and data.image_size == (32, 32)
    assert data.train.images.shape == (2 * K, 3, 16, 32, 32) and len(data.val) == len(data.test) == K
    assert load_video_data("moving-shapes:n=1,val=0,test=0", frames=17, clip=8).train.images.shape[2] == 17
    with pytest.raises(UserError, match="frames=8 is shorter than the clip of 16"):
        load_video_data("moving-shapes:n=1,frames=8", clip=16)
    with pytest.raises(UserError, match="'no-such-data'.*moving-shapes"):
        load_video_data("no-such-data")


# ---------------------------------------------------------------------------- files and folders


@pytest.mark.parametrize("ext, tolerance", [(".avi", 6.0), (".mp4", 8.0)])
def test_write_then_read_round_trip(tmp_path, ext, tolerance):
    videos, _ = make_moving_shapes(1, frames=12, size=32, seed=5)
    video = videos[1]  # "right"
    path = write_video(tmp_path / f"clip{ext}", video)
    assert path.is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
    back = read_video(path)
    assert back.shape == video.shape and back.dtype == torch.uint8
    err = (back.float() - video.float()).abs().mean(dim=(0, 2, 3))
    assert err.max() < tolerance, err
    small = read_video(path, size=16)
    assert small.shape == (3, 12, 16, 16)
    area = F.avg_pool2d(back.float().transpose(0, 1), 2).transpose(0, 1)  # INTER_AREA halves by 2x2 means
    assert (small.float() - area).abs().max() <= 1


def test_a_folder_of_frames_is_a_video(tmp_path):
    from PIL import Image

    videos, _ = make_moving_shapes(1, frames=12, size=32, seed=6)
    video = videos[4]
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(12):  # frame2 must come before frame10
        Image.fromarray(video[:, t].permute(1, 2, 0).numpy()).save(folder / f"frame{t}.png")
    (folder / "notes.txt").write_text("not a frame")
    assert torch.equal(read_video(folder), video)  # PNG is lossless
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(folder / "frame12.png")
    with pytest.raises(BadVideoError, match=r"'frame12.png' is 20x30 but 'frame0.png' is 32x32"):
        read_video(folder)


def test_bad_videos_end_in_one_clear_line(tmp_path, capfd):
    with pytest.raises(BadVideoError, match="not found"):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.avi").write_bytes(b"this is not a video" * 50)
    for name in ("empty.mp4", "junk.avi"):
        with pytest.raises(BadVideoError, match=f"'.*{name}' has no readable frames; expected a video OpenCV can"):
            read_video(tmp_path / name)
    assert capfd.readouterr().err == ""  # FFmpeg's own complaints are muted
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BadVideoError, match="unknown extension '.txt'"):
        read_video(tmp_path / "notes.txt")
    (tmp_path / "void").mkdir()
    with pytest.raises(BadVideoError, match="folder without frames"):
        read_video(tmp_path / "void")
    with pytest.raises(UserError, match="expected a video file name ending in"):
        write_video(tmp_path / "out.gif", torch.zeros(3, 2, 8, 8, dtype=torch.uint8))
    good = torch.full((3, 2, 16, 16), 100, dtype=torch.uint8)
    write_video(tmp_path / "keep.avi", good)
    before = (tmp_path / "keep.avi").read_bytes()
    with pytest.raises(UserError, match="expected a uint8 tensor"):
        write_video(tmp_path / "keep.avi", good.float())
    assert (tmp_path / "keep.avi").read_bytes() == before


def _dataset(tmp_path, frames=20):
    """root/{still,right}/: three videos each (an .avi, another .avi, a frame folder), plus a video
    too short for a clip of 16 and a file that is not a video."""
    from PIL import Image

    videos, labels = make_moving_shapes(3, frames=frames, size=32, seed=7)
    written = {}
    for cls, label in (("right", 1), ("grow", 6)):
        items = videos[labels == label]
        for i, v in enumerate(items):
            if i < 2:
                path = tmp_path / "root" / cls / f"v{i}.avi"
                write_video(path, v)
            else:
                path = tmp_path / "root" / cls / f"v{i}"
                path.mkdir(parents=True)
                for t in range(frames):
                    Image.fromarray(v[:, t].permute(1, 2, 0).numpy()).save(path / f"{t:03d}.png")
            written[str(path)] = v
    write_video(tmp_path / "root" / "right" / "short.avi", videos[0, :, :8])
    (tmp_path / "root" / "grow" / "broken.mp4").write_bytes(b"\x00" * 100)
    (tmp_path / "root" / "empty-class").mkdir()
    return tmp_path / "root", written


def test_folder_dataset_skips_what_it_cannot_use(tmp_path):
    root, written = _dataset(tmp_path)
    data = load_video_folder(root, size=32, frames=18, clip=16, val_fraction=0.0, seed=0)
    assert data.classes == ["grow", "right"] and data.image_size == (32, 32) and data.in_channels == 3
    reasons = dict(data.skipped)
    assert "fewer than the clip of 16" in reasons[str(root / "right" / "short.avi")]
    assert "no readable frames" in reasons[str(root / "grow" / "broken.mp4")]
    assert reasons[str(root / "empty-class")] == "empty class folder"
    n = len(data.train) + len(data.test)
    assert n == 6 and len(data.test) == 2 and data.val is None  # a fifth set aside for testing, per class
    for split in (data.train, data.test):
        assert split.images.shape[1:] == (3, 18, 32, 32)
        for video, label, path in zip(split.images, split.labels, split.paths):
            assert data.classes[int(label)] in path
            ref = written[path][:, 1:19].float()  # the middle 18 of 20 frames
            assert (video.float() - ref).abs().mean() < 6
    with pytest.raises(BadVideoError, match="broken.mp4' has no readable frames"):
        load_video_folder(root, size=32, frames=18, clip=16, on_bad="fail")
    whole = load_video_folder(root, size=16, frames=None, clip=4, val_fraction=0.25)
    assert whole.train.images.shape[2:] == (8, 16, 16)  # the short video (8 frames) sets the length
    assert len(whole.val) == 2 and len(whole.train) + len(whole.val) + len(whole.test) == 7


def test_split_folders_and_empty_data(tmp_path):
    videos, labels = make_moving_shapes(2, frames=16, size=32, seed=8)
    for split in ("train", "val"):
        for cls, label in (("left", 0), ("up", 2)):
            for i, v in enumerate(videos[labels == label][:1 if split == "val" else 2]):
                write_video(tmp_path / "split" / split / cls / f"{i}.avi", v)
    data = load_video_data(str(tmp_path / "split"), image_size=32, frames=16, clip=16)
    assert len(data.train) == 4 and len(data.val) == 2 and data.test is None and data.classes == ["left", "up"]
    (tmp_path / "nothing" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="no videos found"):
        load_video_data(str(tmp_path / "nothing"))
    assert load_video_data("split", root=tmp_path, image_size=32, clip=16).image_size == (32, 32)


# ---------------------------------------------------------------------------- clips


def test_clip_starts_and_take_clips():
    assert clip_starts(24, 16, "uniform").tolist() == [4]
    assert clip_starts(24, 16, "uniform", n=3).tolist() == [0, 4, 8]
    assert clip_starts(24, 16, "dense").tolist() == [0, 8]
    assert clip_starts(30, 16, "dense").tolist() == [0, 8, 14]
    assert clip_starts(16, 16, "dense").tolist() == [0]
    gen = torch.Generator().manual_seed(0)
    r = clip_starts(30, 16, "random", n=500, generator=gen)
    assert r.min() == 0 and r.max() == 14 and r.dtype == torch.long
    assert torch.equal(r, clip_starts(30, 16, "random", n=500, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(UserError, match="a clip of 16 frames does not fit in a video of 10 frames"):
        clip_starts(10, 16)
    with pytest.raises(UserError, match="'sparse'"):
        clip_starts(30, 16, "sparse")
    videos = torch.randint(0, 256, (3, 2, 10, 4, 5), dtype=torch.uint8)
    starts = torch.tensor([0, 3, 6])
    clips = take_clips(videos, starts, 4)
    assert clips.shape == (3, 2, 4, 4, 5)
    for i, s in enumerate(starts.tolist()):
        assert torch.equal(clips[i], videos[i, :, s:s + 4])
    many = take_clips(videos, torch.tensor([[0, 6], [1, 2], [5, 0]]), 4)
    assert many.shape == (3, 2, 2, 4, 4, 5) and torch.equal(many[2, 0], videos[2, :, 5:9])
    assert torch.equal(take_clips(videos, 2, 4), videos[:, :, 2:6])
    with pytest.raises(UserError, match="do not fit"):
        take_clips(videos, starts + 1, 4)


# ---------------------------------------------------------------------------- flow


def test_quantized_flow_round_trip():
    flow = (torch.rand(2, 2, 9, 7, generator=torch.Generator().manual_seed(0)) * 2 - 1) * FLOW_BOUND
    q = quantize_flow(flow)
    assert q.dtype == torch.uint8 and q.shape == flow.shape
    assert (dequantize_flow(q) - flow).abs().max() <= FLOW_BOUND / 255 + 1e-6
    assert int(quantize_flow(torch.zeros(1))) == 128
    assert quantize_flow(torch.tensor([-100.0, 100.0])).tolist() == [0, 255]


def _translated_square(frames=5, size=48, dx=2, dy=1):
    """A textured square moving (dx, dy) px/frame over a static textured background."""
    g = torch.Generator().manual_seed(0)
    smooth = lambda n, s: F.interpolate(torch.rand(1, 1, n, n, generator=g), size=(s, s), mode="bicubic",  # noqa: E731
                                        align_corners=False)[0, 0]
    bg = 60 + 60 * smooth(8, size)
    tex = 150 + 100 * smooth(4, 14)
    video = bg.expand(3, frames, size, size).clone()
    inner = torch.zeros(frames, size, size, dtype=torch.bool)
    for t in range(frames):
        y, x = 10 + dy * t, 8 + dx * t
        video[:, t, y:y + 14, x:x + 14] = tex
        inner[t, y + 3:y + 11, x + 3:x + 11] = True
    return video.round().clamp(0, 255).to(torch.uint8)[None], inner


def test_video_flows_recover_a_shift_and_are_cached(tmp_path, monkeypatch):
    import fovea.apps.flow_baselines as fb

    video, inner = _translated_square()
    flows = video_flows(video, "farneback", cache_dir=tmp_path)
    assert flows.shape == (1, 2, 5, 48, 48) and flows.dtype == torch.uint8
    assert (flows[:, :, -1] == 128).all()
    f = dequantize_flow(flows[0])
    for t in range(4):
        u, v = f[0, t][inner[t]].mean(), f[1, t][inner[t]].mean()
        assert abs(u - 2) < 0.5 and abs(v - 1) < 0.5, (t, u, v)
    cached = list(tmp_path.glob("*.pt"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("the cache should have been read")

    monkeypatch.setattr(fb, "farneback", refuse)
    assert torch.equal(video_flows(video, "farneback", cache_dir=tmp_path), flows)
    assert cached[0].stat().st_mtime_ns == mtime
    monkeypatch.undo()
    # another method, or other videos, are other entries; the default folder is $FOVEA_CACHE/video-flow
    monkeypatch.setenv("FOVEA_CACHE", str(tmp_path / "cache"))
    shifted = video_flows(video.roll(1, -1), "farneback")
    assert len(list((tmp_path / "cache" / "video-flow").glob("*.pt"))) == 1 and not torch.equal(shifted, flows)
    calls = []

    def fake(a, b):
        calls.append(1)
        return torch.ones(2, *a.shape[-2:])

    assert (dequantize_flow(video_flows(video, fake, cache_dir=tmp_path / "fn"))[:, :, :-1] - 1).abs().max() < 0.07
    assert not (tmp_path / "fn").exists() and len(calls) == 4  # no key: not cached
    video_flows(video, fake, cache_dir=tmp_path / "fn", key="ones")
    video_flows(video, fake, cache_dir=tmp_path / "fn", key="ones")
    assert len(calls) == 8 and len(list((tmp_path / "fn").glob("*.pt"))) == 1
    if "dis" in fb.available_baselines():
        f = dequantize_flow(video_flows(video, "dis", cache_dir=tmp_path)[0])
        assert abs(f[0, 1][inner[1]].mean() - 2) < 0.5
    with pytest.raises(UserError, match="expected farneback or dis"):
        video_flows(video, "lucas-kanade", cache_dir=tmp_path)
    with pytest.raises(UserError, match=r"expected a uint8 tensor \(N, 3, V, H, W\)"):
        video_flows(video[0], cache_dir=tmp_path)
