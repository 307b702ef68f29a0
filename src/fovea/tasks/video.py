"""Video classification: C3D, the two-stream network and CNN + LSTM, trained on clips.

Data (``--data``): ``moving-shapes[:...]``, the built-in synthetic action set in which the class
is the motion itself (:mod:`fovea.data.video`), or a folder with one subfolder per class of video
files or folders of frames. Every video keeps ``--frames`` consecutive frames; the models see
clips of ``--clip`` frames.

- Training: one clip per video and step, at a random start (temporal jitter), with the spatial
  augmentations of ``--augment`` (``crop:PIXELS``, ``hflip``) applied alike to every frame of it.
- Evaluation: dense clips (every ``clip // 2`` frames, the end covered). Clip accuracy counts
  every clip; video accuracy averages the softmax scores of a video's clips first.

The two-stream network (``--model two-stream``) reads RGB frames and the optical flow of
consecutive frames (``--flow-method farneback|dis`` from OpenCV, or a fovea flow run directory),
computed once per video and cached; the data then carry 3 + 2 channels per frame. Each stream
has its own cross-entropy loss, and their sum is the training loss; the fused scores are a
weighted average of the two softmax distributions (the paper averages them), w for the spatial
stream and 1 - w for the temporal one, with w picked after every epoch on the validation videos:
the w of 0, 0.05, ..., 1 whose fused video scores have the lowest cross-entropy. The report gives
each stream's accuracy beside the fusion's.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import UserError
from fovea.tasks.base import Task, register_task

VIDEO_MODELS = ("c3d", "two-stream", "cnn-lstm")
AUGMENTATIONS = ("crop", "hflip")
RGB = 3  # channels of a frame; the two-stream data add the flow's (u, v)


# ---------------------------------------------------------------------------- the model


class ClipNormalize(nn.Module):
    """Per-channel z-score of the first ``channels`` channels of a clip (B, C, T, H, W), with
    statistics fitted on the training videos; further channels (quantized flow) pass unchanged.
    ``kind="none"`` leaves the [0, 1] pixels as they are."""

    def __init__(self, kind: str = "zscore", channels: int = RGB):
        super().__init__()
        if kind not in ("zscore", "none"):
            raise UserError(f"--preprocess {kind!r}: the video task takes zscore or none")
        self.kind, self.channels = kind, channels
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    @torch.no_grad()
    def fit(self, videos: torch.Tensor) -> "ClipNormalize":
        if self.kind == "none":
            return self
        c = self.channels
        s1 = torch.zeros(c, dtype=torch.float64)
        s2 = torch.zeros(c, dtype=torch.float64)
        n = 0
        for chunk in videos.split(64):
            px = chunk[:, :c].to(torch.float64).div_(255).transpose(0, 1).reshape(c, -1)
            s1 += px.sum(1)
            s2 += px.square().sum(1)
            n += px.shape[1]
        mean = s1 / max(n, 1)
        std = (s2 / max(n, 1) - mean.square()).clamp(min=0).sqrt().clamp(min=1e-2)
        self.mean.copy_(mean.float())
        self.std.copy_(std.float())
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return x
        c = self.channels
        shape = (1, c) + (1,) * (x.dim() - 2)
        rgb = (x[:, :c] - self.mean.view(shape).to(x.dtype)) / self.std.view(shape).to(x.dtype)
        return rgb if x.shape[1] == c else torch.cat([rgb, x[:, c:]], 1)


class VideoClassifier(nn.Module):
    """The network with its fitted normalization in front: takes clips in [0, 1].
    ``model(x, streams=True)`` gives a two-stream network's (fused, spatial, temporal) scores."""

    def __init__(self, net: nn.Module, preprocess: ClipNormalize):
        super().__init__()
        self.preprocess = preprocess
        self.net = net

    def forward(self, x: torch.Tensor, streams: bool = False):
        x = self.preprocess(x)
        if streams:
            spatial, temporal = self.net.forward_streams(x)
            return self.net.fuse(spatial, temporal), spatial, temporal
        return self.net(x)


def build_net(name: str, num_classes: int, clip: int, image_size: tuple[int, int], flow_stack: int,
              model_kwargs: dict | None = None) -> nn.Module:
    import fovea.models.video  # noqa: F401  (registers c3d, two-stream, cnn-lstm)
    from fovea.models.registry import create_model

    if name not in VIDEO_MODELS:
        raise UserError(f"--model {name!r}: the video task takes {', '.join(VIDEO_MODELS)}")
    kwargs = dict(model_kwargs or {})
    kwargs.setdefault("clip", (clip, *image_size))  # sizes C3D's fc6; the others record it
    if name == "two-stream":
        kwargs.setdefault("flow_stack", flow_stack)
    return create_model(name, num_classes=num_classes, **kwargs)


def is_two_stream(model: nn.Module) -> bool:
    return hasattr(model.net if isinstance(model, VideoClassifier) else model, "forward_streams")


# ---------------------------------------------------------------------------- clips and augmentation


def parse_video_augment(text: str | None) -> dict:
    """``crop:PIXELS`` (pad by replication and crop back at a random offset, the same for every
    frame of a clip) and ``hflip``; anything else is refused."""
    out: dict = {}
    for item in (t.strip() for t in (text or "").split(",") if t.strip()):
        name, _, arg = item.partition(":")
        if name == "crop":
            try:
                out["crop"] = int(arg or 4)
            except ValueError:
                raise UserError(f"--augment {item!r}: expected crop:PIXELS, e.g. crop:4") from None
            if out["crop"] < 0:
                raise UserError(f"--augment {item!r}: the crop padding must be >= 0")
        elif name == "hflip" and not arg:
            out["hflip"] = True
        else:
            raise UserError(f"--augment {item!r}: the video task takes crop:PIXELS and hflip (applied alike to "
                            "every frame of a clip); note that hflip swaps left and right motions")
    return out


def random_clips(videos: torch.Tensor, clip: int, generator: torch.Generator) -> torch.Tensor:
    """One clip of ``clip`` frames per video (B, C, V, H, W), each at a random start."""
    from fovea.data.video import take_clips

    starts = torch.randint(0, videos.shape[2] - clip + 1, (len(videos),), generator=generator,
                           device=generator.device).cpu()
    return take_clips(videos, starts, clip)


def augment_clips(x: torch.Tensor, ops: dict, generator: torch.Generator, flow_channels: int = 0) -> torch.Tensor:
    """Spatial augmentation of clips (B, C, T, H, W), drawn per clip and shared by its frames.
    A flip mirrors the flow too: u (channel 3 of a two-stream clip, stored as (u + B) / 2B in
    [0, 1]) becomes 1 - u."""
    b, _, _, h, w = x.shape
    draw = lambda *shape: torch.rand(*shape, generator=generator, device=generator.device).to(x.device)  # noqa: E731
    if ops.get("hflip"):
        flip = draw(b) < 0.5
        fx = x.flip(-1)
        if flow_channels:
            fx = torch.cat([fx[:, :RGB], 1 - fx[:, RGB:RGB + 1], fx[:, RGB + 1:]], 1)
        x = torch.where(flip.view(b, 1, 1, 1, 1), fx, x)
    pad = ops.get("crop", 0)
    if pad:
        padded = F.pad(x.flatten(1, 2), (pad, pad, pad, pad), mode="replicate").view(*x.shape[:3], h + 2 * pad,
                                                                                       w + 2 * pad)
        dy = (draw(b) * (2 * pad + 1)).long().clamp(max=2 * pad)
        dx = (draw(b) * (2 * pad + 1)).long().clamp(max=2 * pad)
        x = torch.stack([padded[i, :, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    return x


@torch.no_grad()
def clip_scores(model: nn.Module, videos: torch.Tensor, clip: int, streams: bool = False):
    """Logits of every dense clip of every video: (B, S, K), or three such tensors (fused,
    spatial, temporal) for a two-stream network with ``streams``."""
    from fovea.data.video import clip_starts, take_clips

    starts = clip_starts(videos.shape[2], clip, "dense")
    clips = take_clips(videos, starts.expand(len(videos), -1), clip).flatten(0, 1)  # (B*S, C, T, H, W)
    out = model(clips, streams=True) if streams else model(clips)
    unflat = lambda t: t.float().view(len(videos), len(starts), -1)  # noqa: E731
    return tuple(unflat(t) for t in out) if streams else unflat(out)


def video_accuracy_terms(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For (B, S, K) clip logits: per-video sums of the clip accuracy (the share of its clips
    right), of the video accuracy (its averaged softmax right), and the averaged softmax."""
    probs = logits.softmax(-1)
    clip_acc = (logits.argmax(-1) == y[:, None]).float().mean(1).sum()
    video_probs = probs.mean(1)
    return clip_acc, (video_probs.argmax(-1) == y).sum(), video_probs


# ---------------------------------------------------------------------------- the task


def check_config(cfg) -> None:
    """Flags the video task refuses, checked before anything is set up."""
    if cfg.channels_last:
        raise UserError("--channels-last: video clips are 5-D (N, C, T, H, W); drop the flag")
    if cfg.loss != "ce":
        raise UserError(f"--loss {cfg.loss!r}: the video task trains with cross-entropy (ce)")
    on_cpu = cfg.accelerator == "cpu" or (cfg.accelerator == "auto" and not torch.cuda.is_available())
    if cfg.model == "c3d" and on_cpu and cfg.precision in ("bf16-mixed", "bf16-true", "16-mixed"):
        # torch's CPU conv3d backward in bf16 gives non-finite weight gradients on small maps now
        # and then (docs/video.md, Doubts); such runs stopped on a NaN after a few dozen steps
        raise UserError(f"--precision {cfg.precision}: C3D on the CPU trains in fp32 (32-true); half-precision "
                        "3D convolutions there give NaN gradients")


@register_task
class Video(Task):
    name = "video"
    monitor = "video_acc"
    monitor_mode = "max"
    metric_columns = ("video_acc",)
    streams = False  # a two-stream network: each stream's scores too
    val_split = None

    def load_data(self, cfg):
        from fovea.data.video import load_video_data

        if cfg.model not in VIDEO_MODELS:
            raise UserError(f"--model {cfg.model!r}: the video task takes {', '.join(VIDEO_MODELS)}")
        if cfg.clip < 1:
            raise UserError(f"--clip {cfg.clip}: expected a number of frames >= 1")
        if cfg.model == "two-stream" and cfg.clip < cfg.flow_stack + 1:
            raise UserError(f"--clip {cfg.clip} is too short for --flow-stack {cfg.flow_stack}: the temporal stream "
                            f"needs {cfg.flow_stack + 1} frames per clip")
        data = load_video_data(cfg.data, root=cfg.data_root, image_size=cfg.image_size, frames=cfg.frames,
                               clip=cfg.clip, val_fraction=cfg.val_fraction, seed=cfg.seed)
        frames = data.train.images.shape[2]
        if frames < cfg.clip:
            raise UserError(f"--clip {cfg.clip} is longer than the {frames} frames kept per video of {cfg.data!r}; "
                            "lower --clip or raise --frames")
        if cfg.model == "two-stream":
            data = with_flow(data, cfg.flow_method)
        return data

    def prepare_data(self, cfg, data):
        self.val_split = data.val  # a two-stream network's fusion weight is picked on it
        return data

    def epoch_end(self, run, model, epoch):
        if self.streams and self.val_split is not None and model.net.cfg.fusion == "avg":
            fit_fusion_weight(model, self.val_split, self.clip, self.batch_size)

    def augment_batch(self, augment, x, y, generator):
        x = random_clips(x, self.clip, generator)
        return augment_clips(x, self.augment_ops, generator, flow_channels=x.shape[1] - RGB), y

    def build_model(self, cfg, data, image_size):
        check_config(cfg)
        self.clip, self.augment_ops, self.batch_size = cfg.clip, parse_video_augment(cfg.augment), cfg.batch_size
        self.model_name, self.model_kwargs = cfg.model, dict(cfg.model_kwargs)
        self.frames = data.train.images.shape[2]
        net = build_net(cfg.model, len(data.classes), cfg.clip, image_size, cfg.flow_stack, cfg.model_kwargs)
        self.streams = cfg.model == "two-stream"
        if self.streams:
            self.metric_columns = ("video_acc", "spatial_acc", "temporal_acc", "spatial_video_acc",
                                   "temporal_video_acc")
        return VideoClassifier(net, ClipNormalize(cfg.preprocess))

    def training_step(self, model, x, y):
        n = len(y)
        if self.streams:
            fused, spatial, temporal = model(x, streams=True)
            loss = F.cross_entropy(spatial.float(), y) + F.cross_entropy(temporal.float(), y)
            right = lambda t: (t.detach().argmax(1) == y).sum()  # noqa: E731
            return loss, dict(loss=loss.detach() * n, acc=right(fused), spatial_acc=right(spatial),
                              temporal_acc=right(temporal), count=n)
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        return loss, dict(loss=loss.detach() * n, acc=(logits.detach().argmax(1) == y).sum(), count=n)

    def eval_step(self, model, x, y):
        n = len(y)
        if self.streams:
            fused, spatial, temporal = clip_scores(model, x, self.clip, streams=True)
            k = fused.shape[-1]
            loss = (F.cross_entropy(spatial.reshape(-1, k), y.repeat_interleave(spatial.shape[1]), reduction="sum")
                    + F.cross_entropy(temporal.reshape(-1, k), y.repeat_interleave(temporal.shape[1]),
                                      reduction="sum")) / spatial.shape[1]
            acc, video_acc, _ = video_accuracy_terms(fused, y)
            s_acc, s_video, _ = video_accuracy_terms(spatial, y)
            t_acc, t_video, _ = video_accuracy_terms(temporal, y)
            return dict(loss=loss, acc=acc, video_acc=video_acc, spatial_acc=s_acc, temporal_acc=t_acc,
                        spatial_video_acc=s_video, temporal_video_acc=t_video, count=n)
        logits = clip_scores(model, x, self.clip)
        k = logits.shape[-1]
        loss = F.cross_entropy(logits.reshape(-1, k), y.repeat_interleave(logits.shape[1]),
                               reduction="sum") / logits.shape[1]
        acc, video_acc, _ = video_accuracy_terms(logits, y)
        return dict(loss=loss, acc=acc, video_acc=video_acc, count=n)

    def export_info(self, cfg, data, image_size):
        return dict(model=self.model_name, model_kwargs=self.model_kwargs, num_classes=len(data.classes),
                    classes=list(data.classes), in_channels=RGB, image_size=list(image_size), clip=cfg.clip,
                    frames=self.frames, flow_stack=cfg.flow_stack,
                    flow_method=cfg.flow_method if self.streams else None, preprocess=cfg.preprocess, data=cfg.data)

    def report(self, run, model, data, batches_for):
        from fovea.report.html import write_report
        from fovea.report.plots import plot_confusion, plot_curves

        plot_curves(run.metrics_path, run.plots)
        split_name, split = ("test", data.test) if data.test is not None else ("val", data.val)
        out: dict = {}
        if split is not None:
            result = evaluate_videos(model, batches_for(split), self.clip, self.streams)
            cm = result.pop("confusion")
            plot_confusion(cm, data.classes, run.plots / "confusion.png")
            plot_clips(split.images, result["labels"], result["predicted"], data.classes,
                       run.plots / "clips.png", title=f"{split_name} clips: true -> predicted")
            out["video"] = dict(split=split_name, videos=len(split), confusion=cm.tolist(),
                                **{k: v for k, v in result.items() if k not in ("labels", "predicted")})
            if self.streams:
                out["video"]["fusion"] = model.net.cfg.fusion
                out["video"]["spatial_weight"] = float(model.net.spatial_weight)
            run.write_json("video.json", out["video"])
        write_report(run.path, title=f"fovea video: {run.path.name}")
        return out


@torch.no_grad()
def fit_fusion_weight(model: nn.Module, split, clip: int, batch_size: int = 16, steps: int = 21) -> float:
    """Set a two-stream network's spatial weight w (its fused scores are w softmax(spatial) +
    (1 - w) softmax(temporal)) to the value of ``steps`` evenly spaced in [0, 1] whose fused
    video scores have the lowest cross-entropy on ``split`` (the validation videos); return it.
    A stream that knows nothing (the spatial one on moving-shapes) gets a weight near 0."""
    net = model.net
    was_training = model.training
    model.eval()
    device = net.spatial_weight.device
    spatial, temporal = [], []
    for start in range(0, len(split), batch_size):
        x = split.images[start:start + batch_size].to(device).float().div_(255)
        _, s, t = clip_scores(model, x, clip, streams=True)
        spatial.append(s.softmax(-1).mean(1))  # video scores: the clips' softmax averaged
        temporal.append(t.softmax(-1).mean(1))
    ps, pt, y = torch.cat(spatial), torch.cat(temporal), split.labels.to(device)
    weights = torch.linspace(0, 1, steps, device=device)
    fused = weights.view(-1, 1, 1) * ps + (1 - weights.view(-1, 1, 1)) * pt  # (steps, N, K)
    nll = -fused.gather(2, y.view(1, -1, 1).expand(steps, -1, 1)).clamp_min(1e-12).log().mean((1, 2))
    w = float(weights[nll.argmin()])
    net.spatial_weight.fill_(w)
    model.train(was_training)
    return w


# ---------------------------------------------------------------------------- flow for the temporal stream


def with_flow(data, method: str):
    """The bundle with the quantized optical flow of every video appended to its RGB channels
    (N, 3 + 2, V, H, W); the flow of each split is computed once and cached."""
    from dataclasses import replace

    splits = {}
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        splits[name] = None if split is None else replace(split, images=torch.cat(
            [split.images, flows_for(split.images, method)], 1))
    return replace(data, **splits)


def flows_for(videos: torch.Tensor, method: str) -> torch.Tensor:
    """uint8 flow (N, 2, V, H, W) of uint8 videos (N, 3, V, H, W): OpenCV's Farneback or DIS,
    or the network of a fovea flow run (a directory)."""
    from fovea.data.video import video_flows

    if method in ("farneback", "dis"):
        return video_flows(videos, method=method)
    if Path(method).is_dir():
        from fovea.cli.flow import estimate_flow
        from fovea.tasks.flow import load_flow_model

        net, _ = load_flow_model(method)
        weights = Path(method).resolve() / "model.safetensors"

        def estimate(frame1: torch.Tensor, frame2: torch.Tensor) -> torch.Tensor:
            return estimate_flow(net, torch.cat([frame1, frame2])[None].float().div(255))

        return video_flows(videos, method=estimate, key=f"run:{weights}:{weights.stat().st_mtime_ns}")
    raise UserError(f"--flow-method {method!r}: expected farneback, dis or a fovea flow run directory")


# ---------------------------------------------------------------------------- evaluation, report, loading


@torch.no_grad()
def evaluate_videos(model: nn.Module, batches, clip: int, streams: bool) -> dict:
    """Clip and video accuracy over a split (each stream's too for a two-stream network), the
    confusion matrix of the video predictions, and the labels and predictions."""
    from fovea.tasks.classify import confusion_matrix

    model.eval()
    sums: dict[str, float] = {}
    labels, predicted = [], []
    for xb, yb, _ in batches.epoch(0):
        x = xb.float().div_(255)
        outs = clip_scores(model, x, clip, streams=True) if streams else (clip_scores(model, x, clip),)
        for name, logits in zip(("", "spatial_", "temporal_"), outs):
            acc, video_acc, probs = video_accuracy_terms(logits, yb)
            sums[f"{name}clip_accuracy"] = sums.get(f"{name}clip_accuracy", 0.0) + acc.item()
            sums[f"{name}video_accuracy"] = sums.get(f"{name}video_accuracy", 0.0) + video_acc.item()
            if not name:
                predicted.append(probs.argmax(-1).cpu())
        labels.append(yb.cpu())
    labels_t, pred_t = torch.cat(labels), torch.cat(predicted)
    n = max(len(labels_t), 1)
    k = int(getattr(model.net, "num_classes", 0) or pred_t.max().item() + 1)
    return dict({key: v / n for key, v in sums.items()}, labels=labels_t, predicted=pred_t,
                confusion=confusion_matrix(pred_t, labels_t, max(k, int(labels_t.max()) + 1)))


def plot_clips(videos: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor, classes, path: Path,
               n: int = 6, frames: int = 4, title: str | None = None) -> Path:
    """One row per video (the first of each class, up to ``n``): ``frames`` evenly spaced RGB
    frames, the first titled with the true and the predicted class."""
    from fovea.report.plots import plot_image_grid

    picks: list[int] = []
    for c in range(len(classes)):
        hit = (labels == c).nonzero().flatten()
        if len(hit):
            picks.append(int(hit[0]))
    picks = picks[:n]
    v = videos.shape[2]
    ts = torch.linspace(0, v - 1, frames).round().long().tolist()
    images, titles = [], []
    for i in picks:
        for j, t in enumerate(ts):
            images.append(videos[i, :RGB, t].cpu())
            titles.append(f"{classes[labels[i]]} -> {classes[predicted[i]]}" if j == 0 else f"t = {t}")
    return plot_image_grid(torch.stack(images), titles, path, ncols=frames, title=title)


def load_video_model(run_dir: str | Path, device="cpu") -> tuple[VideoClassifier, dict]:
    """The trained model of a video run (model.safetensors + model.json), in eval mode."""
    from fovea.train.run import Run

    run = Run.existing(run_dir)
    info = run.read_json("model.json")
    if info.get("task") != "video":
        raise UserError(f"run {str(run.path)!r} is a {info.get('task')!r} run, not a video run")
    net = build_net(info["model"], info["num_classes"], info["clip"], tuple(info["image_size"]),
                    info["flow_stack"], info.get("model_kwargs"))
    model = VideoClassifier(net, ClipNormalize(info.get("preprocess", "zscore")))
    run.load_weights(model)
    return model.to(device).eval(), info


@torch.no_grad()
def predict_video(model: VideoClassifier, info: dict, video: torch.Tensor, name: str = "video") -> torch.Tensor:
    """Class probabilities of one uint8 video (3, T, H, W), already at the run's image size:
    the softmax averaged over its dense clips (with its optical flow for a two-stream run). A
    video shorter than the run's clip is refused."""
    clip = info["clip"]
    if video.shape[1] < clip:
        raise UserError(f"{name} has {video.shape[1]} frames; the {info['model']} run needs clips of {clip} frames")
    x = video[None]
    if info["model"] == "two-stream":
        x = torch.cat([x, flows_for(x, info["flow_method"])], 1)
    logits = clip_scores(model, x.float().div_(255), clip)
    return logits.softmax(-1).mean(1)[0]


__all__ = ["ClipNormalize", "Video", "VideoClassifier", "augment_clips", "build_net", "check_config", "clip_scores",
           "evaluate_videos", "fit_fusion_weight", "flows_for", "load_video_model", "parse_video_augment", "predict_video", "random_clips",
           "video_accuracy_terms", "with_flow"]
