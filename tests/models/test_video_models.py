"""Video classifiers: C3D's layer table against the paper, the two-stream network's inputs and
fusion, CNN + LSTM over any number of frames."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

import fovea.models.video  # noqa: F401  (registers c3d, two-stream, cnn-lstm)
from fovea.arith import conv_macs, conv_params, trace
from fovea.cli.main import main
from fovea.errors import InputTooSmallError, UserError
from fovea.models.registry import create_model, list_models, model_family
from fovea.models.video import C3D, CNNLSTM, TwoStream, c3d_pool_sizes

# Tran et al. 2015, Fig. 3 for a 3x16x112x112 clip (C x T x H x W); pool5 as in the released model.
C3D_TABLE = {
    "conv1a": (64, 16, 112, 112), "pool1": (64, 16, 56, 56),
    "conv2a": (128, 16, 56, 56), "pool2": (128, 8, 28, 28),
    "conv3a": (256, 8, 28, 28), "conv3b": (256, 8, 28, 28), "pool3": (256, 4, 14, 14),
    "conv4a": (512, 4, 14, 14), "conv4b": (512, 4, 14, 14), "pool4": (512, 2, 7, 7),
    "conv5a": (512, 2, 7, 7), "conv5b": (512, 2, 7, 7), "pool5": (512, 1, 4, 4),
    "fc6": (4096,), "fc7": (4096,), "fc8": (487,),
}
C3D_CONVS = (("conv1a", 3, 64), ("conv2a", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
             ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512), ("conv5b", 512, 512))


def c3d_param_count(num_classes: int, fc6_in: int = 8192, fc: int = 4096) -> int:
    convs = sum(conv_params((3, 3, 3), m, n) for _, m, n in C3D_CONVS)
    return convs + (fc6_in + 1) * fc + (fc + 1) * fc + (fc + 1) * num_classes


def test_video_models_are_registered():
    assert {"c3d", "two-stream", "cnn-lstm"} <= set(list_models())
    assert {model_family(n) for n in ("c3d", "two-stream", "cnn-lstm")} == {"video"}


def test_c3d_summary_matches_the_papers_layer_table(tmp_path):
    path = tmp_path / "c3d.json"
    assert main(["summary", "c3d", "--input", "3x16x112x112", "--json", str(path)]) == 0
    summary = json.loads(path.read_text())
    shapes = {layer["name"]: tuple(layer["output_shape"]) for layer in summary["layers"]}
    assert {name: shapes[name] for name in C3D_TABLE} == C3D_TABLE
    assert summary["output_shape"] == [487]
    assert summary["total_params"] == c3d_param_count(487) == 79_991_015
    macs = {layer["name"]: layer["macs"] for layer in summary["layers"]}
    for name, m, n in C3D_CONVS:  # every output value is a 3x3x3xm dot product
        assert macs[name] == conv_macs(C3D_TABLE[name][1:], (3, 3, 3), m, n)
    assert summary["total_macs"] == sum(macs.values()) == 38_548_959_232


def test_c3d_too_short_clip_from_the_cli(capsys):
    # 8 frames drop below 1 at pool5 (8 -> 8 -> 4 -> 2 -> 1 -> 0): refused, naming the layer
    assert main(["summary", "c3d", "--input", "3x8x112x112"]) == 2
    err = capsys.readouterr().err
    assert "at layer 'pool5'" in err and "16 frames" in err and len(err.strip().splitlines()) == 1


def test_c3d_pool_sizes_and_other_clips():
    assert c3d_pool_sizes((16, 112, 112))["pool5"] == (1, 4, 4)
    assert c3d_pool_sizes((16, 32, 32)) == {"pool1": (16, 16, 16), "pool2": (8, 8, 8), "pool3": (4, 4, 4),
                                            "pool4": (2, 2, 2), "pool5": (1, 2, 2)}
    with pytest.raises(InputTooSmallError, match="at layer 'pool4'"):
        c3d_pool_sizes((16, 15, 16))  # 15 -> 7 -> 3 -> 1 -> 0
    with pytest.raises(InputTooSmallError, match="at layer 'pool5'"):
        c3d_pool_sizes((15, 16, 16))
    with pytest.raises(InputTooSmallError, match="pool5"):
        create_model("c3d", clip=(8, 32, 32))
    model = create_model("c3d", num_classes=5, width=1 / 16, fc_width=32, clip=(16, 32, 32)).eval()
    assert model.default_input_size == (3, 16, 32, 32) and model.min_frames == 16
    with torch.no_grad():
        assert model(torch.rand(2, 3, 16, 32, 32)).shape == (2, 5)
        with pytest.raises(InputTooSmallError, match="at layer 'pool5'"):
            model(torch.rand(1, 3, 8, 32, 32))
        # a clip that survives the pooling but is not the one fc6 was sized for: one clear line
        with pytest.raises(UserError, match=r"sized for 16x32x32 clips .* clip=\(T, H, W\)"):
            model(torch.rand(1, 3, 16, 64, 64))
        with pytest.raises(UserError, match=r"\(B, C, T, H, W\)"):
            model(torch.rand(1, 3, 32, 32))


def test_c3d_width_norm_and_the_common_surface():
    clip = (16, 32, 32)
    model = create_model("c3d", num_classes=7, width=0.125, fc_width=64, norm="bn", clip=clip)
    assert isinstance(model, C3D)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 32, 64, 64, 64, 64]
    assert all(c.kernel_size == (3, 3, 3) and c.padding == (1, 1, 1) and c.bias is None for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm3d) for m in model.modules()) == 8
    assert [f["num_chs"] for f in model.feature_info] == [8, 16, 32, 64, 64]
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 16, 32]
    assert [f["temporal_reduction"] for f in model.feature_info] == [1, 2, 4, 8, 16]
    x = torch.rand(2, 3, *clip)
    model.train()
    out = model(x)
    out.sum().backward()
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 64, 1, 2, 2)
        torch.testing.assert_close(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (2, 64)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.get_classifier().out_features == 3
    # multiply-adds traced through the 3D layers equal the closed form
    tr = trace(model, (3, *clip))
    sizes = [(16, 32, 32), (16, 16, 16), (8, 8, 8), (8, 8, 8), (4, 4, 4), (4, 4, 4), (2, 2, 2), (2, 2, 2)]
    expected = sum(conv_macs(s, (3, 3, 3), c.in_channels, c.out_channels) for s, c in zip(sizes, convs))
    assert tr.total_macs == expected + 256 * 64 + 64 * 64 + 64 * 3


def test_c3d_parameter_count_at_other_widths():
    model = create_model("c3d", num_classes=10, width=0.25, fc_width=128, clip=(16, 64, 64))
    widths = [16, 32, 64, 64, 128, 128, 128, 128]
    convs = sum(conv_params((3, 3, 3), m, n) for m, n in zip([3, *widths[:-1]], widths))
    fc6_in = 128 * 1 * 3 * 3  # 64 -> 32 -> 16 -> 8 -> 4 -> pool5 (padded) 3
    assert sum(p.numel() for p in model.parameters()) == convs + (fc6_in + 1) * 128 + 129 * 128 + 129 * 10


def _two_stream(**kw):
    kw = dict(num_classes=4, width=0.125, flow_stack=4, clip=(9, 32, 32), **kw)
    return create_model("two-stream", **kw).eval()


def test_two_stream_streams_see_the_middle_frame_and_the_flow_window():
    torch.manual_seed(0)
    model = _two_stream()
    assert isinstance(model, TwoStream) and model.default_input_size == (5, 9, 32, 32) and model.min_frames == 5
    x = torch.rand(2, 5, 9, 32, 32)
    window = model.flow_window(9)
    assert list(window) == [2, 3, 4, 5]  # centred on frame 4, flows 4 -> 5 and 5 -> 6 included
    with torch.no_grad():
        s, t = model.forward_streams(x)
        y = x.clone()
        y[:, :3, [0, 1, 2, 3, 5, 6, 7, 8]] = torch.rand(2, 3, 8, 32, 32)  # every RGB frame but the middle
        y[:, 3:, [0, 1, 6, 7, 8]] = torch.rand(2, 2, 5, 32, 32)  # flow outside the window
        s2, t2 = model.forward_streams(y)
        torch.testing.assert_close(s2, s)
        torch.testing.assert_close(t2, t)
        y[:, :3, 4] = torch.rand(2, 3, 32, 32)
        y[:, 3:, 3] = torch.rand(2, 2, 32, 32)
        s3, t3 = model.forward_streams(y)
        assert not torch.allclose(s3, s) and not torch.allclose(t3, t)
    # the temporal input: u1 v1 u2 v2 ... of the window, zero flow (127.5 / 255) at 0, in [-1, 1]
    stacked = model.temporal_input(x)
    manual = torch.cat([torch.stack([x[:, 3, i], x[:, 4, i]], 1) for i in window], 1) * 2 - 1
    torch.testing.assert_close(stacked, manual)
    assert model.temporal.stages[0].conv1.in_channels == 8
    torch.testing.assert_close(model.spatial_input(x), x[:, :3, 4])


def test_two_stream_fusion_averages_the_softmax_scores():
    torch.manual_seed(1)
    x = torch.rand(3, 5, 9, 32, 32)
    avg = _two_stream()
    with torch.no_grad():
        s, t = avg.forward_streams(x)
        fused = avg(x)
    mean = (s.softmax(1) + t.softmax(1)) / 2
    torch.testing.assert_close(fused.exp(), mean)  # log of the averaged class scores
    torch.testing.assert_close(fused.softmax(1), mean)
    summed = _two_stream(fusion="sum")
    summed.load_state_dict(avg.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(summed(x), s + t)


def test_two_stream_trains_both_streams_and_refuses_short_clips():
    model = _two_stream().train()
    x = torch.rand(2, 5, 9, 32, 32)
    s, t = model.forward_streams(x)
    (F.cross_entropy(s, torch.tensor([0, 1])) + F.cross_entropy(t, torch.tensor([2, 3]))).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(InputTooSmallError, match="at least 5 frames .* got 4"):
        model(torch.rand(1, 5, 4, 32, 32))
    with pytest.raises(UserError, match="at least 11 frames"):
        create_model("two-stream", clip=(8, 64, 64))  # flow_stack 10 by default
    with pytest.raises(UserError, match="in_channels=5"):
        create_model("two-stream", in_channels=3)
    with pytest.raises(UserError, match="5 channels, got 3"):
        model(torch.rand(1, 3, 9, 32, 32))
    model.reset_classifier(6)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 6)


def test_two_stream_with_a_registered_backbone():
    model = create_model("two-stream", num_classes=3, backbone="resnet20", flow_stack=2, clip=(4, 32, 32)).eval()
    assert model.temporal.conv1.in_channels == 4
    with torch.no_grad():
        assert model(torch.rand(2, 5, 4, 32, 32)).shape == (2, 3)
    with pytest.raises(UserError, match="not a 2D classifier"):
        create_model("two-stream", backbone="c3d")


def test_cnn_lstm_any_length_gradients_and_frame_order():
    torch.manual_seed(2)
    model = create_model("cnn-lstm", num_classes=5, width=0.125, hidden=16, layers=2, pool="avg")
    assert isinstance(model, CNNLSTM) and model.default_input_size == (3, 16, 112, 112)
    model.train()
    for t in (1, 3, 7):
        out = model(torch.rand(2, 3, t, 32, 32))
        assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    x = torch.rand(2, 3, 6, 32, 32) * torch.linspace(0, 1, 6).view(1, 1, 6, 1, 1)  # frames that differ
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 6, model.cnn.num_features)
        # per-frame features are the CNN's on each frame alone
        torch.testing.assert_close(feats[:, 2], model.cnn.forward_head(model.cnn.forward_features(x[:, :, 2]),
                                                                      pre_logits=True))
        # the LSTM reads the frames in order: reversing them changes its last hidden state
        reversed_h = model.forward_head(model.forward_features(x.flip(2)), pre_logits=True)
        assert (model.forward_head(feats, pre_logits=True) - reversed_h).abs().max() > 5e-3
        torch.testing.assert_close(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (2, 16)
    with pytest.raises(InputTooSmallError, match="at layer"):
        model(torch.rand(1, 3, 4, 8, 8))


def test_summary_of_two_stream_and_cnn_lstm(tmp_path):
    path = tmp_path / "s.json"
    assert main(["summary", "cnn-lstm", "--input", "3x4x32x32", "--json", str(path)]) == 0
    assert json.loads(path.read_text())["output_shape"] == [101]
    assert main(["summary", "two-stream", "--input", "5x16x32x32", "--json", str(path)]) == 0
    assert json.loads(path.read_text())["output_shape"] == [101]


@pytest.mark.parametrize("name, kwargs, match", [
    ("c3d", dict(depth=3), "c3d does not take depth; expected some of"),
    ("c3d", dict(norm="batch"), "norm must be one of"),
    ("c3d", dict(width=0), "width must be a positive number"),
    ("c3d", dict(clip=(16, 112)), r"clip must be \(frames, height, width\)"),
    ("two-stream", dict(fusion="max"), "fusion must be one of avg, sum"),
    ("two-stream", dict(backbone="nope"), "backbone 'nope' is not a 2D classifier"),
    ("cnn-lstm", dict(hidden=0), "hidden must be a positive integer"),
    ("cnn-lstm", dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
])
def test_bad_settings_are_refused_in_one_line(name, kwargs, match):
    with pytest.raises(UserError, match=match) as err:
        create_model(name, **kwargs)
    assert "\n" not in str(err.value)


def test_clip_from_json_lists():
    model = create_model("c3d", width=1 / 16, fc_width=8, clip=[16, 16, 16])
    assert model.cfg.clip == (16, 16, 16) and model.pool5_shape == (32, 1, 1, 1)
    assert math.prod(model.pool5_shape) == model.classifier.fc6.in_features


def test_cnn_lstm_flattened_frame_features_keep_position():
    torch.manual_seed(3)
    model = create_model("cnn-lstm", num_classes=4, width=0.25, hidden=8, features=32, clip=(4, 32, 32)).eval()
    frame = torch.zeros(1, 3, 1, 32, 32)
    frame[..., 4:12, 4:12] = 1.0
    moved = frame.roll(16, -1)  # the same square, half a frame to the right
    with torch.no_grad():
        a, b = model.forward_features(frame)[0, 0], model.forward_features(moved)[0, 0]
        assert a.shape == (32,)
        torch.testing.assert_close(a, model.project(model.cnn.forward_features(frame[:, :, 0]))[0])
    assert (a - b).abs().sum() > 0.1 * a.abs().sum()  # where the square is changes the features
    with pytest.raises(UserError, match="32x32"):
        model(torch.rand(1, 3, 4, 48, 48))


def test_cnn_lstm_frame_stages_and_mean_head():
    model = create_model("cnn-lstm", num_classes=3, width=0.25, channels=[32, 64], hidden=8, features=16,
                         head="mean", clip=(5, 32, 32)).eval()
    assert model.map_shape == (16, 8, 8)  # two stages of 8 and 16 channels: a finer map to flatten
    x = torch.rand(2, 3, 5, 32, 32)
    with torch.no_grad():
        out, _ = model.lstm(model.forward_features(x))
        torch.testing.assert_close(model(x), model.fc(out.mean(1)))  # every step's hidden state, averaged
    with pytest.raises(UserError, match="head"):
        create_model("cnn-lstm", head="first")
