"""Video classifiers: C3D, the two-stream network and CNN + LSTM.

- C3D (Tran et al. 2015, "Learning Spatiotemporal Features with 3D Convolutional Networks"):
  eight 3x3x3 convolutions (stride 1, padding 1), max pooling 1x2x2 after conv1a (so that
  temporal information is not merged too early) and 2x2x2 after conv2a, conv3b, conv4b and
  conv5b, then fc6 and fc7 (4096 units, ReLU, dropout 0.5) and fc8 with a softmax. pool5 pads
  its height and width by one, as the released Sports-1M model does, so a 16x112x112 clip
  ends in a 512x1x4x4 map: 8192 inputs to fc6.
- Two-stream (Simonyan & Zisserman 2014, "Two-Stream Convolutional Networks for Action
  Recognition in Videos"): a spatial 2D CNN on one RGB frame and a temporal 2D CNN on 2L
  stacked optical-flow channels (u and v of L consecutive frame pairs), each with its own
  classifier and loss; class scores fused by averaging the two softmax distributions.
- CNN + LSTM (Donahue et al. 2015, "Long-term Recurrent Convolutional Networks"; Ng et al.
  2015, "Beyond Short Snippets"): a 2D CNN applied to every frame, its pooled features read
  in order by an LSTM, whose last hidden state is classified. Any number of frames.

Conventions: clips are (B, C, T, H, W) tensors; every config has ``clip = (T, H, W)``, the
published (default) input of the model, which sizes C3D's fc6 and is what
``default_input_size`` reports (``(C, T, H, W)``, for ``fovea summary``). ``min_frames`` is
the shortest clip each model takes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fovea.arith import pool_output_size
from fovea.errors import InputTooSmallError, UserError
from fovea.models.base import Classifier, build_config
from fovea.models.registry import register_model
from fovea.nn.init import he_init
from fovea.nn.norm import get_norm, has_norm

__all__ = [
    "C3D", "C3DConfig", "CNNLSTM", "CNNLSTMConfig", "FrameCNN", "FrameCNNConfig", "StreamLogits",
    "TwoStream", "TwoStreamConfig", "c3d", "c3d_pool_sizes", "cnn_lstm", "two_stream",
]

NORMS = ("bn", "gn", "in")


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def _check_common(name: str, width: float, dropout: float, norm: str | None) -> None:
    if not (isinstance(width, (int, float)) and width > 0):
        raise UserError(f"{name} width must be a positive number, got {width!r}")
    if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise UserError(f"{name} dropout must be in [0, 1), got {dropout!r}")
    if norm not in (None, "none", *NORMS):
        raise UserError(f"{name} norm must be one of none, {', '.join(NORMS)}, got {norm!r}")


def _check_clip(name: str, clip) -> tuple[int, int, int]:
    try:
        t, h, w = (int(v) for v in clip)
    except (TypeError, ValueError):
        raise UserError(f"{name} clip must be (frames, height, width), got {clip!r}") from None
    if min(t, h, w) < 1:
        raise UserError(f"{name} clip must have positive sizes, got {clip!r}")
    return t, h, w


def _check_clip_batch(name: str, x: torch.Tensor, channels: int) -> None:
    if x.dim() != 5:
        raise UserError(f"{name} takes a batch of clips (B, C, T, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise UserError(f"{name} takes clips of {channels} channels, got {x.shape[1]} (shape {tuple(x.shape)})")


# ---------------------------------------------------------------------------------------------
# C3D

# (name, output channels) for a 3x3x3 convolution, or (name, kernel, padding) for a max pool
# (stride = kernel). The paper's Figure 3; pool5's padding is the released model's.
C3D_LAYERS: tuple[tuple, ...] = (
    ("conv1a", 64), ("pool1", (1, 2, 2), (0, 0, 0)),
    ("conv2a", 128), ("pool2", (2, 2, 2), (0, 0, 0)),
    ("conv3a", 256), ("conv3b", 256), ("pool3", (2, 2, 2), (0, 0, 0)),
    ("conv4a", 512), ("conv4b", 512), ("pool4", (2, 2, 2), (0, 0, 0)),
    ("conv5a", 512), ("conv5b", 512), ("pool5", (2, 2, 2), (0, 1, 1)),
)
C3D_POOLS = tuple(layer for layer in C3D_LAYERS if layer[0].startswith("pool"))


def c3d_pool_sizes(clip: Sequence[int]) -> dict[str, tuple[int, int, int]]:
    """(T, H, W) after each C3D pool for an input clip (T, H, W); the 3x3x3 / padding 1
    convolutions keep sizes, each pool gives floor((n + 2p - k) / k) + 1 per axis.

    Raises ``InputTooSmallError`` naming the pool where a size drops below 1."""
    size = tuple(int(v) for v in clip)
    out = {}
    for name, k, p in C3D_POOLS:
        new = tuple(pool_output_size(n, ki, pi) for n, ki, pi in zip(size, k, p))
        if min(new) < 1:
            t, h = _C3D_MIN
            raise InputTooSmallError(
                f"input too small: a {'x'.join(map(str, clip))} clip (frames x height x width) drops to "
                f"{'x'.join(map(str, new))} at layer {name!r} ({'x'.join(map(str, k))} max pool); "
                f"C3D needs at least {t} frames of {h}x{h}")
        out[name] = size = new
    return out


def _pool_chain(n: int, axis: int) -> list[int]:
    sizes = []
    for _, k, p in C3D_POOLS:
        n = pool_output_size(n, k[axis], p[axis]) if n >= 1 else 0
        sizes.append(n)
    return sizes


def _smallest(axis: int) -> int:
    n = 1
    while min(_pool_chain(n, axis)) < 1:
        n += 1
    return n


_C3D_MIN = (_smallest(0), _smallest(1))  # (16 frames, 16 pixels): four temporal and four spatial halvings


@dataclass
class C3DConfig:
    num_classes: int = 487  # Sports-1M
    in_channels: int = 3
    width: float = 1.0  # multiplies the convolution widths 64 ... 512
    fc_width: int = 4096  # fc6 and fc7
    dropout: float = 0.5
    norm: str | None = None  # "bn": BatchNorm3d after every convolution (not in the paper)
    clip: tuple[int, int, int] = (16, 112, 112)  # (T, H, W) of the input; sizes fc6


class C3D(Classifier):
    """conv1a pool1 conv2a pool2 conv3a conv3b pool3 conv4a conv4b pool4 conv5a conv5b pool5
    fc6 fc7 fc8 (Tran et al. 2015). ``forward_features`` gives the pool5 map (B, C, t, h, w),
    ``forward_head`` flattens it through fc6 and fc7 (``pre_logits=True`` stops there: the
    paper's "C3D features" are fc6 activations of this network) and fc8 gives the logits.

    Any clip that survives the pooling (16 frames of 16x16 at least) works; fc6 is sized for
    ``cfg.clip``, and a clip whose pool5 map has another size is refused in one line.
    Initialization: He et al. 2015 for the convolutions, fc6 and fc7; N(0, 0.01) for fc8.
    """

    canonical_size = 112

    def __init__(self, cfg: C3DConfig):
        super().__init__()
        _check_common("C3D", cfg.width, cfg.dropout, cfg.norm)
        if not (isinstance(cfg.fc_width, int) and cfg.fc_width >= 1):
            raise UserError(f"C3D fc_width must be a positive integer, got {cfg.fc_width!r}")
        cfg.clip = _check_clip("C3D", cfg.clip)
        pool_sizes = c3d_pool_sizes(cfg.clip)
        self.cfg = cfg
        self.layer_names: dict[str, str] = {}  # "features.conv1a" -> "conv1a" (for fovea summary)
        self.feature_info: list[dict] = []
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in, reduction, t_reduction = cfg.in_channels, 1, 1
        for name, *spec in C3D_LAYERS:
            if name.startswith("pool"):
                k, p = spec
                layers[name] = nn.MaxPool3d(k, k, p)
                reduction, t_reduction = reduction * k[1], t_reduction * k[0]
                self.feature_info.append(dict(module=f"features.{name}", num_chs=c_in, reduction=reduction,
                                              temporal_reduction=t_reduction))
                continue
            c_out, suffix = _scaled(spec[0], cfg.width), name[4:]  # "conv3b" -> "3b"
            layers[name] = nn.Conv3d(c_in, c_out, 3, padding=1, bias=not has_norm(cfg.norm))
            if has_norm(cfg.norm):
                layers[f"{cfg.norm}{suffix}"] = get_norm(cfg.norm, c_out, dim=3)
            layers[f"relu{suffix}"] = nn.ReLU()  # not in place, so hooks on conv outputs see them intact
            c_in = c_out
        self.features = nn.Sequential(layers)
        self.pool5_shape = (c_in, *pool_sizes["pool5"])
        self.classifier = nn.Sequential(OrderedDict(
            fc6=nn.Linear(math.prod(self.pool5_shape), cfg.fc_width), relu6=nn.ReLU(), drop6=nn.Dropout(cfg.dropout),
            fc7=nn.Linear(cfg.fc_width, cfg.fc_width), relu7=nn.ReLU(), drop7=nn.Dropout(cfg.dropout),
            fc8=nn.Linear(cfg.fc_width, cfg.num_classes) if cfg.num_classes else nn.Identity(),
        ))
        for prefix, seq in (("features", self.features), ("classifier", self.classifier)):
            self.layer_names.update({f"{prefix}.{n}": n for n, _ in seq.named_children()})
        self.num_classes, self.num_features = cfg.num_classes, cfg.fc_width
        self.min_input_size = _C3D_MIN[1]
        self.min_frames = _C3D_MIN[0]
        he_init(self)
        if isinstance(self.classifier.fc8, nn.Linear):
            nn.init.normal_(self.classifier.fc8.weight, 0.0, 0.01)

    @property
    def default_input_size(self) -> tuple[int, int, int, int]:
        return (self.cfg.in_channels, *self.cfg.clip)

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse anything but (B, C, T, H, W) clips that survive the pooling, naming the pool
        where a size drops below 1."""
        if torch.compiler.is_compiling():
            return
        _check_clip_batch("C3D", x, self.cfg.in_channels)
        c3d_pool_sizes(tuple(x.shape[2:]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.pool5_shape and not torch.compiler.is_compiling():
            want, got = "x".join(map(str, self.pool5_shape)), "x".join(map(str, x.shape[1:]))
            raise UserError(
                f"C3D's fc6 was sized for {'x'.join(map(str, self.cfg.clip))} clips (pool5 {want} = "
                f"{math.prod(self.pool5_shape)} values), got a pool5 map of {got}; build the model with "
                f"clip=(T, H, W) of its input")
        x = torch.flatten(x, 1)
        for layer in self.classifier[:-1]:
            x = layer(x)
        return x if pre_logits else self.classifier[-1](x)

    def get_classifier(self) -> nn.Module:
        return self.classifier.fc8

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier.fc8 = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.num_classes = self.cfg.num_classes = num_classes


# ---------------------------------------------------------------------------------------------
# The per-frame 2D CNN of the two-stream and CNN + LSTM networks


@dataclass
class FrameCNNConfig:
    num_classes: int = 10
    in_channels: int = 3
    width: float = 1.0
    channels: tuple[int, ...] = (32, 64, 128, 256)  # one stage each, times width
    dropout: float = 0.5
    norm: str | None = "bn"


class FrameCNN(Classifier):
    """A small VGG-like 2D CNN (Simonyan & Zisserman 2015 in miniature): per stage two 3x3
    convolutions (each + norm + ReLU) and a 2x2 max pool; global average pooling, dropout and
    a fully connected output layer. ``forward_features`` gives the last stage's map,
    ``forward_head(pre_logits=True)`` the pooled ``num_features``-vector (after dropout)."""

    canonical_size = 112

    def __init__(self, cfg: FrameCNNConfig):
        super().__init__()
        _check_common("frame-cnn", cfg.width, cfg.dropout, cfg.norm)
        if not cfg.channels or any(not (isinstance(c, int) and c > 0) for c in cfg.channels):
            raise UserError(f"frame-cnn channels must be positive integers, got {cfg.channels!r}")
        self.cfg = cfg
        stages, self.feature_info = [], []
        c_in = cfg.in_channels
        for i, c in enumerate(cfg.channels):
            c = _scaled(c, cfg.width)
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            for j in (1, 2):
                layers[f"conv{j}"] = nn.Conv2d(c_in if j == 1 else c, c, 3, padding=1, bias=not has_norm(cfg.norm))
                if has_norm(cfg.norm):
                    layers[f"{cfg.norm}{j}"] = get_norm(cfg.norm, c)
                layers[f"relu{j}"] = nn.ReLU()
            layers["pool"] = nn.MaxPool2d(2, 2)
            stages.append(nn.Sequential(layers))
            self.feature_info.append(dict(module=f"stages.{i}", num_chs=c, reduction=2 ** (i + 1)))
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.drop = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(c_in, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.num_classes, self.num_features = cfg.num_classes, c_in
        he_init(self)
        if isinstance(self.fc, nn.Linear):
            nn.init.normal_(self.fc.weight, 0.0, 0.01)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean((2, 3)))
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.num_classes = self.cfg.num_classes = num_classes


def _frame_network(backbone: str, num_classes: int, in_channels: int, width: float, dropout: float,
                   norm: str | None, owner: str, channels: tuple[int, ...] | None = None) -> Classifier:
    """``backbone="frame-cnn"``: a FrameCNN; any other name: that registered 2D classifier
    (built with ``num_classes`` and ``in_channels`` only; width, dropout and norm are the
    FrameCNN's)."""
    if backbone == "frame-cnn":
        stages = {} if channels is None else dict(channels=tuple(channels))
        return FrameCNN(FrameCNNConfig(num_classes=num_classes, in_channels=in_channels, width=width,
                                       dropout=dropout, norm=norm, **stages))
    from fovea.models.registry import create_model, list_models, model_family

    if backbone not in list_models() or model_family(backbone) in ("video", "depthnet"):
        raise UserError(f"{owner} backbone {backbone!r} is not a 2D classifier; expected frame-cnn or a "
                        "registered image classifier such as resnet18 (`fovea models`)")
    if width != 1.0:
        raise UserError(f"{owner} width={width} applies to the frame-cnn backbone only, not {backbone!r}")
    net = create_model(backbone, num_classes=num_classes, in_channels=in_channels)
    if not isinstance(net, Classifier):
        raise UserError(f"{owner} backbone {backbone!r} is not a classifier with forward_features / forward_head")
    return net


def _run(net: Classifier, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
    # forward_features + forward_head: the main logits even where forward adds auxiliary ones
    return net.forward_head(net.forward_features(x), pre_logits=pre_logits)


# ---------------------------------------------------------------------------------------------
# Two-stream


class StreamLogits(NamedTuple):
    spatial: torch.Tensor
    temporal: torch.Tensor


FUSIONS = ("avg", "sum")


@dataclass
class TwoStreamConfig:
    num_classes: int = 101  # UCF-101
    in_channels: int = 5  # RGB, then the quantized flow (u, v) of frame t -> t+1 at index t
    flow_stack: int = 10  # L: the temporal stream sees 2L channels
    backbone: str = "frame-cnn"
    width: float = 1.0
    fusion: str = "avg"
    dropout: float = 0.5
    norm: str | None = "bn"
    clip: tuple[int, int, int] = (16, 224, 224)


class TwoStream(nn.Module):
    """The two-stream network (Simonyan & Zisserman 2014).

    Input: clips (B, 5, T, H, W) in [0, 1]: channels 0-2 the RGB frames, channels 3-4 the
    optical flow (u, v) from frame t to t + 1 at index t, quantized to [0, 255] around 127.5
    (``fovea.data.video.quantize_flow``) and divided by 255 like the pixels.

    - Spatial stream: a 2D CNN on the RGB frame at index T // 2.
    - Temporal stream: a 2D CNN on the L flows at indices s ... s + L - 1,
      s = min(T // 2 - L // 2, T - 1 - L) (centred on the middle frame, never using the last
      index, which has no next frame), stacked interleaved (u_1, v_1, u_2, v_2, ...) and
      mapped to [-1, 1] by 2 (q - 0.5), so that zero flow is 0. Needs T >= L + 1.

    ``forward_streams(x)`` gives both streams' logits (each has its own loss in training);
    ``forward(x) = fuse(*forward_streams(x))``: for ``fusion="avg"``
    log(w softmax(s) + (1 - w) softmax(t)) with the buffer ``spatial_weight`` w (1/2 by default:
    the log of the paper's averaged class scores, usable as logits: its argmax and its softmax
    are those of the average); for ``fusion="sum"``
    s + t, whose softmax is the normalized product of the two distributions.
    """

    def __init__(self, cfg: TwoStreamConfig):
        super().__init__()
        if cfg.in_channels != 5:
            raise UserError(f"two-stream takes in_channels=5 (RGB + flow u, v), got {cfg.in_channels}")
        if not (isinstance(cfg.flow_stack, int) and cfg.flow_stack >= 1):
            raise UserError(f"two-stream flow_stack must be a positive integer, got {cfg.flow_stack!r}")
        if cfg.fusion not in FUSIONS:
            raise UserError(f"two-stream fusion must be one of {', '.join(FUSIONS)}, got {cfg.fusion!r}")
        _check_common("two-stream", cfg.width, cfg.dropout, cfg.norm)
        cfg.clip = _check_clip("two-stream", cfg.clip)
        self.cfg = cfg
        self.min_frames = cfg.flow_stack + 1
        self._check_frames(cfg.clip[0])
        self.spatial = _frame_network(cfg.backbone, cfg.num_classes, 3, cfg.width, cfg.dropout, cfg.norm, "two-stream")
        self.temporal = _frame_network(cfg.backbone, cfg.num_classes, 2 * cfg.flow_stack, cfg.width, cfg.dropout,
                                       cfg.norm, "two-stream")
        self.num_classes = cfg.num_classes
        # "avg" fusion: w softmax(spatial) + (1 - w) softmax(temporal); the paper's average is w = 1/2,
        # and fovea's video task fits w on the validation videos (fovea.tasks.video.fit_fusion_weight)
        self.register_buffer("spatial_weight", torch.tensor(0.5))

    @property
    def default_input_size(self) -> tuple[int, int, int, int]:
        return (self.cfg.in_channels, *self.cfg.clip)

    def _check_frames(self, t: int) -> None:
        if t < self.min_frames:
            raise InputTooSmallError(
                f"two-stream needs clips of at least {self.min_frames} frames (flow_stack={self.cfg.flow_stack} "
                f"flows and the frame after the last), got {t}")

    def flow_window(self, t: int) -> range:
        """Indices of the L flows the temporal stream reads in a clip of ``t`` frames."""
        L = self.cfg.flow_stack
        start = max(0, min(t // 2 - L // 2, t - 1 - L))
        return range(start, start + L)

    def spatial_input(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :3, x.shape[2] // 2]

    def temporal_input(self, x: torch.Tensor) -> torch.Tensor:
        w = self.flow_window(x.shape[2])
        flow = x[:, 3:5, w.start:w.stop]  # (B, 2, L, H, W)
        return (flow.transpose(1, 2).flatten(1, 2) - 0.5) * 2  # (B, 2L, H, W): u1 v1 u2 v2 ...

    def forward_streams(self, x: torch.Tensor) -> StreamLogits:
        if not torch.compiler.is_compiling():
            _check_clip_batch("two-stream", x, self.cfg.in_channels)
            self._check_frames(x.shape[2])
        return StreamLogits(_run(self.spatial, self.spatial_input(x)), _run(self.temporal, self.temporal_input(x)))

    def fuse(self, spatial: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
        if self.cfg.fusion == "sum":
            return spatial + temporal
        w = self.spatial_weight.float()
        both = torch.stack([F.log_softmax(spatial.float(), -1) + w.log(),
                            F.log_softmax(temporal.float(), -1) + (1 - w).log()])
        return torch.logsumexp(both, 0).to(spatial.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(*self.forward_streams(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.spatial.reset_classifier(num_classes)
        self.temporal.reset_classifier(num_classes)
        self.num_classes = self.cfg.num_classes = num_classes


# ---------------------------------------------------------------------------------------------
# CNN + LSTM


@dataclass
class CNNLSTMConfig:
    num_classes: int = 101
    in_channels: int = 3
    backbone: str = "frame-cnn"
    width: float = 1.0
    hidden: int = 256
    layers: int = 1
    dropout: float = 0.5
    norm: str | None = "bn"
    clip: tuple[int, int, int] = (16, 112, 112)
    pool: str = "flatten"  # frame features: "flatten" (a fully connected layer on the map) or "avg"
    head: str = "last"  # classify the last step's hidden state, or the "mean" of every step's (LRCN)
    channels: tuple[int, ...] = (32, 64, 128, 256)  # frame-cnn stages (x width); fewer keep a finer map
    features: int = 256  # width of the per-frame features with pool="flatten"


class CNNLSTM(Classifier):
    """Per-frame CNN features read by an LSTM (Donahue et al. 2015; Ng et al. 2015).

    ``forward_features(x)`` runs the 2D CNN on every frame of a (B, C, T, H, W) clip and gives
    its features (B, T, F): with ``pool="flatten"`` (the default) a fully connected layer of
    ``features`` units with ReLU on the flattened last map, like the fc6 features of AlexNet that
    Donahue et al. feed to their LSTM, which keep where things are in the frame; with
    ``pool="avg"`` the CNN's global average, which does not (so a shape moving left and one
    moving right give nearly the same sequence). ``forward_head`` reads them in order with an LSTM
    (``layers`` layers of ``hidden`` units, dropout between layers) and classifies the last
    step's hidden state (``pre_logits=True`` returns it, after dropout). Any T >= 1.
    """

    canonical_size = 112

    def __init__(self, cfg: CNNLSTMConfig):
        super().__init__()
        for field in ("hidden", "layers"):
            v = getattr(cfg, field)
            if not (isinstance(v, int) and v >= 1):
                raise UserError(f"cnn-lstm {field} must be a positive integer, got {v!r}")
        _check_common("cnn-lstm", cfg.width, cfg.dropout, cfg.norm)
        cfg.clip = _check_clip("cnn-lstm", cfg.clip)
        self.cfg = cfg
        self.cnn = _frame_network(cfg.backbone, 0, cfg.in_channels, cfg.width, cfg.dropout, cfg.norm, "cnn-lstm",
                                  cfg.channels if cfg.backbone == "frame-cnn" else None)
        self.cnn.reset_classifier(0)  # only its features are used
        if cfg.pool not in ("flatten", "avg"):
            raise UserError(f"cnn-lstm pool must be flatten or avg, got {cfg.pool!r}")
        if cfg.head not in ("last", "mean"):
            raise UserError(f"cnn-lstm head must be last or mean, got {cfg.head!r}")
        self.project = None
        width = self.cnn.num_features
        if cfg.pool == "flatten":
            if not (isinstance(cfg.features, int) and cfg.features >= 1):
                raise UserError(f"cnn-lstm features must be a positive integer, got {cfg.features!r}")
            with torch.no_grad():
                frame = torch.zeros(1, cfg.in_channels, *cfg.clip[1:])
                self.map_shape = tuple(self.cnn.forward_features(frame).shape[1:])
            self.project = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(self.map_shape), cfg.features), nn.ReLU(),
                                         nn.Dropout(cfg.dropout))
            width = cfg.features
        self.lstm = nn.LSTM(width, cfg.hidden, cfg.layers, batch_first=True,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(cfg.hidden, cfg.num_classes) if cfg.num_classes else nn.Identity()
        if isinstance(self.fc, nn.Linear):
            nn.init.normal_(self.fc.weight, 0.0, 0.01)
            nn.init.zeros_(self.fc.bias)
        self.feature_info = [dict(f, module=f"cnn.{f['module']}") for f in self.cnn.feature_info]
        self.feature_info.append(dict(module="lstm", num_chs=cfg.hidden, reduction=self.feature_info[-1]["reduction"]))
        self.num_classes, self.num_features = cfg.num_classes, cfg.hidden
        self.min_input_size = self.cnn.min_input_size
        self.min_frames = 1

    @property
    def default_input_size(self) -> tuple[int, int, int, int]:
        return (self.cfg.in_channels, *self.cfg.clip)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            _check_clip_batch("cnn-lstm", x, self.cfg.in_channels)
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        if self.project is None:
            return _run(self.cnn, frames, pre_logits=True).view(b, t, -1)
        maps = self.cnn.forward_features(frames)
        if tuple(maps.shape[1:]) != self.map_shape and not torch.compiler.is_compiling():
            raise UserError(f"cnn-lstm's frame features were sized for frames of "
                            f"{self.cfg.clip[1]}x{self.cfg.clip[2]}, got {h}x{w}; build it with clip=(T, H, W) "
                            "of its input, or pool='avg'")
        return self.project(maps).view(b, t, -1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        out, _ = self.lstm(x)
        x = self.drop(out[:, -1] if self.cfg.head == "last" else out.mean(1))
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.num_classes = self.cfg.num_classes = num_classes


# ---------------------------------------------------------------------------------------------
# Builders


def _clip_kwargs(kwargs: dict) -> dict:
    if "clip" in kwargs and isinstance(kwargs["clip"], list):  # from JSON
        kwargs = {**kwargs, "clip": tuple(kwargs["clip"])}
    return kwargs


@register_model
def c3d(**kwargs) -> C3D:
    """C3D (Tran et al. 2015): 8 3x3x3 convolutions, 5 max pools, fc6 fc7 (4096) fc8; 16x112x112 clips."""
    return C3D(build_config(C3DConfig, "c3d", _clip_kwargs(kwargs)))


@register_model(name="two-stream")
def two_stream(**kwargs) -> TwoStream:
    """Two-stream network (Simonyan & Zisserman 2014): spatial CNN on the middle RGB frame, temporal CNN
    on 2L stacked flow channels, softmax scores averaged."""
    return TwoStream(build_config(TwoStreamConfig, "two-stream", _clip_kwargs(kwargs)))


@register_model(name="cnn-lstm")
def cnn_lstm(**kwargs) -> CNNLSTM:
    """CNN + LSTM (Donahue et al. 2015, Ng et al. 2015): per-frame CNN features read by an LSTM."""
    return CNNLSTM(build_config(CNNLSTMConfig, "cnn-lstm", _clip_kwargs(kwargs)))
