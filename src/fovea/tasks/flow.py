"""Optical flow with FlowNetS / FlowNetC (Dosovitskiy et al. 2015): ``fovea train flow``.

Data (``--data``): ``chairs[:KEY=VALUE,...]``, the synthetic Flying-Chairs-like generator, or
a folder of frame pairs with ``.flo`` ground truth (:mod:`fovea.data.chairs`). A sample is the
two frames stacked into a uint8 (6, H, W) tensor; its label the (2, H, W) flow in pixels.

Training minimizes FlowNet's multi-scale end-point error (:func:`fovea.losses.flow.multiscale_epe`)
with the paper's weighting carried over to fovea's units (:data:`LEVEL_WEIGHTS`). Validation and
test rows report, per pair and then averaged over pairs, the full-resolution average end-point
error ``epe`` (also logged as ``loss``, so ``metrics.csv`` holds it) and ``zero_epe``, the error
of predicting no motion, on the same pairs. Pixels whose ground truth is unknown (NaN, or
Middlebury's 1e9 marker) are left out.

``--augment hflip,vflip`` flips the two frames and the flow together (a horizontal flip negates
u, a vertical one v); other augmentations would change the flow in ways not modelled here, so
they are refused. ``--preprocess`` is ``zscore`` (default: per-RGB-channel statistics shared by
both frames, so the two frames are normalized alike) or ``none``.
"""

from __future__ import annotations

import dataclasses
import html
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import UserError
from fovea.tasks.base import Task, register_task

MODELS = ("flownets", "flownetc")


def _level_weights() -> tuple[float, ...]:
    """FlowNet's released loss weighs the EPE *summed* over each level's pixels, with the flow in
    one unit (input pixels / 20) at every level: w_l * sum_l. ``multiscale_epe`` takes each
    level's *mean*, in that level's own pixels (input pixels / 2^l); the level has HW / 4^l
    pixels, so the same loss is sum_l w_l * (HW / 4^l) * (2^l / 20) * mean_l, proportional to
    w_l / 2^l: (1, 1, 1, 2, 4) from flow2 to flow6 for any input size. (The weights applied to
    the means as they are, 0.005 ... 0.32, put 64 times more weight on flow6, one cell per 64x64
    pixels, than on flow2, and the network learned several times slower here.)"""
    from fovea.losses.flow import FLOWNET_WEIGHTS

    raw = [w / 2 ** level for level, w in enumerate(FLOWNET_WEIGHTS, start=2)]
    return tuple(round(w / raw[0], 6) for w in raw)


LEVEL_WEIGHTS = _level_weights()
AUGMENTATIONS = ("hflip", "vflip")
PREPROCESS = ("zscore", "none")


class FramePairPreprocess(nn.Module):
    """Per-channel normalization of a stacked frame pair (B, 2C, H, W) with statistics fitted on
    the frames of both positions together, so frame 1 and frame 2 get the same mapping."""

    def __init__(self, kind: str = "zscore", channels: int = 3):
        super().__init__()
        from fovea.data.transforms import Preprocess

        if kind not in PREPROCESS:
            raise UserError(f"--preprocess {kind!r}: the flow task takes {' or '.join(PREPROCESS)} "
                            "(statistics of fixed-size images would tie the model to one size)")
        self.kind, self.channels = kind, channels
        self.frames = Preprocess(kind)

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.reshape(b * c // self.channels, self.channels, h, w)

    def fit(self, images: torch.Tensor) -> "FramePairPreprocess":
        self.frames.fit(self._frames(images))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frames(self._frames(x)).reshape(x.shape)


class FlowModel(nn.Module):
    """A FlowNet with its input normalization in front: takes the stacked pair in [0, 1], returns
    what the FlowNet returns (five multi-scale flows in training mode, (B, 2, H, W) in eval mode)."""

    def __init__(self, net: nn.Module, preprocess: FramePairPreprocess):
        super().__init__()
        self.preprocess = preprocess
        self.net = net

    def forward(self, x: torch.Tensor):
        return self.net(self.preprocess(x))


def build_flow_model(model: str, model_kwargs: dict | None = None, preprocess: str = "zscore") -> FlowModel:
    from fovea.models.flownet import FlowNetConfig, build_flownet

    if model not in MODELS:
        raise UserError(f"--model {model!r}: the flow task trains {' or '.join(MODELS)}")
    kwargs = dict(model_kwargs or {})
    kwargs.pop("variant", None)
    if kwargs.get("in_channels", 3) != 3:
        raise UserError(f"--model-kwargs in_channels={kwargs['in_channels']!r}: flow frames are RGB (3 channels)")
    try:
        net = build_flownet(model, **kwargs)
    except TypeError as e:
        fields = [f.name for f in dataclasses.fields(FlowNetConfig) if f.name != "variant"]
        raise UserError(f"--model-kwargs {kwargs}: {e}; expected some of {', '.join(fields)}") from None
    _quiet_flow_predictors(net)
    return FlowModel(net, FramePairPreprocess(preprocess))


PREDICTOR_INIT_SCALE = 0.05


@torch.no_grad()
def _quiet_flow_predictors(net: nn.Module) -> None:
    """Start every ``predict_flow`` convolution near zero (MSRA weights x 0.05, zero bias), so the
    first predictions are close to no motion. With the full MSRA scale the untrained network
    predicts flow fields of about one pixel per level at random; its first steps go into
    shrinking them, and FlowNetC at width 0.25 then stayed at zero flow's error for as long as
    it ran (900 steps); with quiet predictors it learned from the start (docs/optical-flow.md)."""
    for name, module in net.decoder.named_children():
        if name.startswith("predict_flow"):
            module.weight.mul_(PREDICTOR_INIT_SCALE)
            module.bias.zero_()


def parse_flow_augment(text: str | None) -> tuple[str, ...]:
    names = tuple(s.strip() for s in (text or "").split(",") if s.strip() and s.strip() != "none")
    bad = [s for s in names if s not in AUGMENTATIONS]
    if bad:
        raise UserError(f"--augment {text!r}: the flow task takes {', '.join(AUGMENTATIONS)} (they move the flow "
                        f"with the frames); {', '.join(bad)} would change the motion")
    return names


def known_flow(flow: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: pixels with ground truth (finite, below Middlebury's 1e9 marker)."""
    return (torch.isfinite(flow) & (flow.abs() < 1e9)).all(-3)


def pair_epe(pred: torch.Tensor, target: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) average end-point error of each pair over its known pixels."""
    diff = pred - target
    if known is None:
        return torch.linalg.vector_norm(diff, dim=1).flatten(1).mean(1)
    diff = torch.where(known[:, None], diff, torch.zeros((), dtype=diff.dtype, device=diff.device))
    dist = torch.linalg.vector_norm(diff, dim=1) * known
    return dist.flatten(1).sum(1) / known.flatten(1).sum(1).clamp_min(1)


def hflip_pair(x: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror both frames and the flow left-right: u changes sign."""
    flow = flow.flip(-1) * torch.tensor([-1.0, 1.0], dtype=flow.dtype, device=flow.device).view(2, 1, 1)
    return x.flip(-1), flow


def vflip_pair(x: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror both frames and the flow top-bottom: v changes sign."""
    flow = flow.flip(-2) * torch.tensor([1.0, -1.0], dtype=flow.dtype, device=flow.device).view(2, 1, 1)
    return x.flip(-2), flow


@register_task
class Flow(Task):
    name = "flow"
    monitor = "epe"
    monitor_mode = "min"
    metric_columns = ("epe", "zero_epe")

    def load_data(self, cfg):
        from fovea.data.chairs import load_flow_data

        if cfg.classes or cfg.train_fraction != 1.0 or cfg.normal_classes:
            raise UserError("--classes, --normal-classes and --train-fraction select classes of labels; flow pairs "
                            "have none (use chairs:n=N for fewer training pairs)")
        return load_flow_data(cfg.data, root=cfg.data_root, image_size=cfg.image_size,
                              val_fraction=cfg.val_fraction, seed=cfg.seed)

    def build_model(self, cfg, data, image_size):
        self.flips = parse_flow_augment(cfg.augment)
        model = build_flow_model(cfg.model, cfg.model_kwargs, cfg.preprocess)
        self.model_name, self.preprocess = cfg.model, cfg.preprocess
        self.flownet = dataclasses.asdict(model.net.cfg)
        # a mask costs a little per step: only for data with unknown pixels (decided once, here)
        self.masked = any(not bool(known_flow(s.labels).all()) for s in (data.train, data.val, data.test)
                          if s is not None)
        return model

    def augment_batch(self, augment, x, y, generator):
        for name in self.flips:
            flip = torch.rand(len(x), generator=generator, device=generator.device).to(x.device) < 0.5
            fx, fy = (hflip_pair if name == "hflip" else vflip_pair)(x, y)
            x = torch.where(flip.view(-1, 1, 1, 1), fx, x)
            y = torch.where(flip.view(-1, 1, 1, 1), fy, y)
        return x, y

    def training_step(self, model, x, y):
        from fovea.losses.flow import multiscale_epe

        known = known_flow(y) if self.masked else None
        preds = model(x)
        loss = multiscale_epe([p.float() for p in preds], y, LEVEL_WEIGHTS, mask=known)
        with torch.no_grad():  # flow2 at full resolution, as in eval mode
            h, w = y.shape[-2:]
            full = F.interpolate(preds[0].detach().float(), scale_factor=4, mode="bilinear", align_corners=False)
            epe = pair_epe(full[..., :h, :w] * 4, y, known).sum()
        n = len(y)
        return loss, dict(loss=loss.detach() * n, epe=epe, count=n)

    def eval_step(self, model, x, y):
        known = known_flow(y) if self.masked else None
        pred = model(x).float()
        epe = pair_epe(pred, y, known).sum()
        zero = pair_epe(torch.zeros_like(y), y, known).sum()
        return dict(loss=epe, epe=epe, zero_epe=zero, count=len(y))

    def label(self, cfg) -> str:
        return cfg.model

    def export_info(self, cfg, data, image_size):
        return dict(model=self.model_name, flownet=self.flownet, model_kwargs=dict(cfg.model_kwargs),
                    preprocess=self.preprocess, in_channels=3, image_size=list(image_size), data=cfg.data,
                    classes=["flow"])

    def report(self, run, model, data, batches_for):
        from fovea.report.html import write_report
        from fovea.report.plots import plot_curves

        plot_curves(run.metrics_path, run.plots)
        split_name, split = ("test", data.test) if data.test is not None else ("val", data.val)
        out: dict = {}
        sections = []
        if split is not None:
            out = flow_report(model, batches_for(split), run.plots, split_name)
            run.write_json("flow_eval.json", out)
            rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.3f}</td></tr>" for k, v in out["epe"].items())
            sections.append((f"average end-point error on {split_name} ({out['n']} pairs, pixels)",
                             f"<table><tr><th>method</th><th>EPE</th></tr>{rows}</table>"))
        write_report(run.path, title=f"fovea flow ({self.model_name}): {run.path.name}", sections=sections)
        return {"flow_eval": out} if out else {}


@torch.no_grad()
def predict_flows(model: nn.Module, batches) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predicted flows, ground truth and uint8 frame pairs of a whole split (CPU tensors)."""
    model.eval()
    preds, flows, images = [], [], []
    for xb, yb, _ in batches.epoch(0):
        preds.append(model(xb.float().div(255)).float().cpu())
        flows.append(yb.float().cpu())
        images.append(xb.cpu())
    return torch.cat(preds), torch.cat(flows), torch.cat(images)


def flow_report(model: nn.Module, batches, plots: Path, split_name: str, limit_baselines: int = 500) -> dict:
    """EPE of the model beside zero flow, Farneback and DIS on a split, and a figure of examples
    (frame 1, frame 2, ground truth, prediction, Farneback, coloured on one scale per row)."""
    from fovea.apps.flow_baselines import baseline_epes, farneback
    from fovea.report.flowviz import flow_to_color
    from fovea.report.plots import plot_image_grid

    pred, flow, images = predict_flows(model, batches)
    known = known_flow(flow)
    epe = dict(model=float(pair_epe(pred, flow, known).mean()))
    k = min(limit_baselines, len(images))
    epe.update(baseline_epes(images[:k], flow[:k]))
    n = min(6, len(images))
    cells, titles = [], []
    for i in range(n):
        gt = torch.where(known[i], flow[i], torch.zeros(()))
        scale = float(torch.linalg.vector_norm(gt, dim=0).max().clamp_min(1e-3))
        fb = farneback(images[i, :3], images[i, 3:])
        cells += [images[i, :3], images[i, 3:], flow_to_color(flow[i], scale), flow_to_color(pred[i], scale),
                  flow_to_color(fb, scale)]
        e = float(pair_epe(pred[i:i + 1], flow[i:i + 1], known[i:i + 1]))
        ef = float(pair_epe(fb[None], flow[i:i + 1], known[i:i + 1]))
        titles += ["frame 1", "frame 2", f"truth (max {scale:.1f}px)", f"model EPE {e:.2f}", f"Farneback {ef:.2f}"]
    plot_image_grid(torch.stack(cells), titles, plots / "flow_examples.png", ncols=5,
                    title=f"{split_name} pairs: Middlebury colour code, one scale per row")
    return dict(split=split_name, n=len(images), baseline_pairs=k, epe=epe)


def load_flow_model(run_dir: str | Path, device="cpu") -> tuple[FlowModel, dict]:
    """The trained flow model of a run (model.safetensors + model.json), in eval mode."""
    from fovea.train.run import Run

    run = Run.existing(run_dir)
    info = run.read_json("model.json")
    if info.get("task") != "flow":
        raise UserError(f"run {str(run.path)!r} is a {info.get('task')!r} run, not a flow run "
                        "(train one with `fovea train flow`)")
    cfg = dict(info["flownet"])
    model = build_flow_model(info["model"], {k: v for k, v in cfg.items() if k != "variant"}, info["preprocess"])
    run.load_weights(model)
    return model.to(device).eval(), info


__all__ = ["AUGMENTATIONS", "LEVEL_WEIGHTS", "MODELS", "Flow", "FlowModel", "FramePairPreprocess", "build_flow_model",
           "flow_report", "hflip_pair", "known_flow", "load_flow_model", "pair_epe", "parse_flow_augment",
           "predict_flows", "vflip_pair"]
