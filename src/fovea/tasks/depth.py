"""Unsupervised depth from stereo (task ``depth``): a network predicts the left view's disparity
and learns only from how well the right view, inverse-warped by it, reconstructs the left
(Garg, Kumar, Carneiro & Reid 2016); the ground truth is used for evaluation alone.

Training (``fovea train depth``): the pairs of ``--data`` (``motorcycle`` or a folder, see
``fovea.data.stereo``) shrunk by ``--scale`` (a whole factor; disparities shrink with it),
random ``--patch`` x ``--patch`` crops cut at the same place in both views, and the multi-scale
loss of ``fovea.losses.stereo``: ``--loss PHOTOMETRIC:SMOOTHNESS`` (``ssim:edge`` by default,
``l2:l2`` is Garg et al.'s) weighted by ``--smoothness``. ``--augment`` is refused: a flip or
a rotation of one view breaks the rectified geometry.

Evaluation: each epoch, on every whole pair at the training scale: the same loss at the finest
scale (``loss``, which picks ``best.ckpt``: model selection stays unsupervised),
``photometric``, and where the pair has ground truth, the prediction upsampled to the full
resolution (bilinear, values x W / w) against it on the pixels where it is finite: ``mae``
(mean absolute error in pixels) and ``bad3`` (the fraction of pixels off by more than 3 px).
The report adds OpenCV's semi-global block matching (StereoSGBM) on the same pairs, the
disparity pictures and ``depth.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import UserError
from fovea.tasks.base import Task, register_task

DEFAULT_PATCH = 160
DEFAULT_MAX_DISP = 64.0  # full-resolution pixels: the motorcycle pair's largest disparity is 60
BAD_PIXEL_PX = 3.0  # the bad-pixel threshold of the Middlebury and KITTI tables


# ---------------------------------------------------------------------------- metrics and baselines


def disparity_errors(pred, truth, mask=None, threshold: float = BAD_PIXEL_PX) -> dict:
    """Mean absolute error (pixels) and the bad-pixel rate |error| > ``threshold`` of a
    predicted disparity against the ground truth, on the pixels where the truth is finite (and
    ``mask`` holds); arrays or tensors of one shape."""
    p = np.asarray(pred, np.float64)
    t = np.asarray(truth, np.float64)
    if p.shape != t.shape:
        raise UserError(f"prediction {p.shape} and ground truth {t.shape} differ in shape")
    m = np.isfinite(t) & np.isfinite(p)
    if mask is not None:
        m &= np.asarray(mask, bool)
    n = int(m.sum())
    if n == 0:
        return dict(mae=float("nan"), bad3=float("nan"), pixels=0)
    e = np.abs(p[m] - t[m])
    return dict(mae=float(e.mean()), bad3=float((e > threshold).mean()), pixels=n)


def sgbm_disparity(left: np.ndarray, right: np.ndarray, num_disparities: int = 64, block_size: int = 5) -> np.ndarray:
    """OpenCV's semi-global block matching (Hirschmuller 2008) on an (H, W, 3) uint8 pair:
    float32 disparity in pixels (StereoSGBM's fixed point / 16), NaN where it finds no match
    (negative output). ``num_disparities`` must be a multiple of 16; P1 = 8 * 3 * b^2 and
    P2 = 32 * 3 * b^2 (OpenCV's suggested smoothness penalties), 3-way mode."""
    import cv2

    if num_disparities % 16 or num_disparities < 16:
        raise UserError(f"num_disparities {num_disparities}: expected a positive multiple of 16")
    sgbm = cv2.StereoSGBM_create(minDisparity=0, numDisparities=num_disparities, blockSize=block_size,
                                 P1=8 * 3 * block_size ** 2, P2=32 * 3 * block_size ** 2, disp12MaxDiff=1,
                                 uniquenessRatio=10, speckleWindowSize=100, speckleRange=2,
                                 mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    raw = sgbm.compute(np.ascontiguousarray(left), np.ascontiguousarray(right))
    d = raw.astype(np.float32) / 16.0
    d[raw < 0] = np.nan
    return d


def bm_disparity(left: np.ndarray, right: np.ndarray, num_disparities: int = 64, block_size: int = 15) -> np.ndarray:
    """OpenCV's local block matching (StereoBM) on the grey images: float32 pixels, NaN where
    invalid."""
    import cv2

    bm = cv2.StereoBM_create(numDisparities=num_disparities, blockSize=block_size)
    grey = [cv2.cvtColor(np.ascontiguousarray(v), cv2.COLOR_RGB2GRAY) for v in (left, right)]
    raw = bm.compute(*grey)
    d = raw.astype(np.float32) / 16.0
    d[raw < 0] = np.nan
    return d


def fill_invalid(disp: np.ndarray) -> np.ndarray:
    """Fill NaN disparities along each row with the smaller of the nearest valid values to the
    left and to the right (the background side; KITTI's development kit fills the same way); a
    row with no valid pixel becomes 0."""
    d = np.asarray(disp, np.float32)
    h, w = d.shape
    valid = np.isfinite(d)
    idx = np.arange(w)[None].repeat(h, 0)
    left_idx = np.maximum.accumulate(np.where(valid, idx, -1), axis=1)
    right_idx = np.minimum.accumulate(np.where(valid, idx, w)[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(h)[:, None]
    lv = np.where(left_idx >= 0, d[rows, np.clip(left_idx, 0, w - 1)], np.inf)
    rv = np.where(right_idx < w, d[rows, np.clip(right_idx, 0, w - 1)], np.inf)
    fill = np.minimum(lv, rv)
    fill = np.where(np.isfinite(fill), fill, 0.0)
    return np.where(valid, d, fill).astype(np.float32)


def num_disparities_for(max_disp: float) -> int:
    """The smallest multiple of 16 above ``max_disp`` (StereoSGBM's search range)."""
    return int(max(16, 16 * np.ceil((max_disp + 1) / 16)))


def disparity_to_color(disp, vmax: float, cmap: str = "turbo") -> np.ndarray:
    """A disparity map as an (H, W, 3) uint8 colour image on [0, vmax]; unknown pixels
    (non-finite) are black."""
    from matplotlib import colormaps

    d = np.asarray(disp, np.float64)
    ok = np.isfinite(d)
    rgb = colormaps[cmap](np.clip(np.where(ok, d, 0) / max(vmax, 1e-9), 0, 1))[..., :3]
    rgb[~ok] = 0
    return (rgb * 255 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------- inference


@torch.no_grad()
def predict_disparity(model: nn.Module, left: torch.Tensor, right: torch.Tensor, scale: int = 1) -> torch.Tensor:
    """The left view's disparity at full resolution, in full-resolution pixels: the pair (uint8
    or float (3, H, W) or (N, 3, H, W)) is shrunk by ``scale`` as in training, the prediction
    upsampled back (bilinear) and multiplied by W / w. Returns float (N, H, W) on the CPU."""
    from fovea.data.stereo import scaled_size

    if left.dim() == 3:
        left, right = left[None], right[None]
    x = torch.cat([left, right], 1)
    x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    size = tuple(x.shape[-2:])
    small = scaled_size(size, scale)
    if small != size:
        x = F.interpolate(x, size=small, mode="bilinear", align_corners=False, antialias=True)
    device = next(model.parameters()).device
    views = getattr(model, "views", 1)
    d = model((x if views == 2 else x[:, :3]).to(device)).float()
    return upsample_disparity(d, size).cpu()


def upsample_disparity(disp: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 1, h, w) disparity in pixels of width w -> (N, H, W) in pixels of width W."""
    if tuple(disp.shape[-2:]) == tuple(size):
        return disp[:, 0]
    up = F.interpolate(disp, size=size, mode="bilinear", align_corners=False)
    return up[:, 0] * (size[1] / disp.shape[-1])


def load_depth_model(run_dir: str | Path, device="cpu") -> tuple[nn.Module, dict]:
    """The disparity network of a depth run (model.safetensors + model.json), in eval mode."""
    from fovea.models.depthnet import DisparityNet, DisparityNetConfig
    from fovea.train.run import Run

    run = Run.existing(run_dir)
    info = run.read_json("model.json")
    if info.get("task") != "depth":
        raise UserError(f"run {str(run.path)!r} is a {info.get('task')!r} run; fovea depth needs a depth run "
                        "(fovea train depth)")
    arch = dict(info["arch"])
    arch["widths"] = tuple(arch["widths"])
    model = DisparityNet(DisparityNetConfig(**arch))
    run.load_weights(model)
    return model.to(device).eval(), info


# ---------------------------------------------------------------------------- the task


def _pair_views(x: torch.Tensor, views: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    left, right = x[:, :3], x[:, 3:6]
    return left, right, (x[:, :6] if views == 2 else left)


@register_task
class Depth(Task):
    name = "depth"
    monitor = "loss"
    metric_columns = ("mae", "bad3")

    def label(self, cfg) -> str:
        return cfg.model

    def load_data(self, cfg):
        from fovea.data.stereo import load_stereo, stereo_bundle
        from fovea.losses.stereo import parse_stereo_loss

        if cfg.augment:
            raise UserError(f"--augment {cfg.augment!r}: depth trains on random crops of the pair and takes no "
                            "augmentation (a flip or rotation of one view breaks the rectified geometry)")
        self.photometric, self.smoothness = parse_stereo_loss(cfg.loss)
        if cfg.smoothness < 0:
            raise UserError(f"--smoothness {cfg.smoothness}: expected a weight >= 0")
        if cfg.patch is not None and cfg.patch < 1:
            raise UserError(f"--patch {cfg.patch}: expected a positive crop side in pixels")
        self.pairs = load_stereo(cfg.data)
        self.scale = cfg.scale
        return stereo_bundle(self.pairs, cfg.scale, min_samples=cfg.batch_size)

    def build_model(self, cfg, data, image_size):
        import fovea.models.depthnet  # noqa: F401  (registers the disparity networks)
        from fovea.models.depthnet import DisparityNet, config_dict
        from fovea.models.registry import create_model, list_models, model_family

        known = [n for n in list_models() if model_family(n) == "depthnet"]
        if cfg.model not in known:
            raise UserError(f"--model {cfg.model!r} is not a disparity network; expected {' or '.join(known)}")
        kwargs = dict(cfg.model_kwargs)
        kwargs.setdefault("max_disp", DEFAULT_MAX_DISP / cfg.scale)  # in pixels of the shrunk pair
        model = create_model(cfg.model, **kwargs)
        assert isinstance(model, DisparityNet)
        self.views, self.max_disp, self.arch = model.views, model.max_disp, config_dict(model)
        self.cfg = cfg
        m = model.multiple
        h, w = image_size
        patch = cfg.patch or DEFAULT_PATCH
        if patch % m:
            raise UserError(f"--patch {patch}: expected a multiple of {m} (the network halves the size "
                            f"{m.bit_length() - 1} times)")
        self.crop = (min(patch, h // m * m), min(patch, w // m * m))
        if min(self.crop) < m:
            raise UserError(f"the pairs are {h}x{w} at --scale {cfg.scale}, smaller than the network's {m}x{m} "
                            "minimum; use a smaller --scale")
        return model

    def augment_batch(self, augment, x, y, generator):
        """The same random crop window in both views of each pair (the horizontal position too,
        so rows stay matched and disparities unchanged)."""
        ch, cw = self.crop
        h, w = x.shape[-2:]
        ys = torch.randint(0, h - ch + 1, (len(x),), generator=generator, device=generator.device).tolist()
        xs = torch.randint(0, w - cw + 1, (len(x),), generator=generator, device=generator.device).tolist()
        return torch.stack([x[i, :, a:a + ch, b:b + cw] for i, (a, b) in enumerate(zip(ys, xs))]), y

    def _loss_kwargs(self) -> dict:
        # the first max_disp columns may match outside the right view: smoothness only
        return dict(photometric=self.photometric, smoothness=self.smoothness, smoothness_weight=self.cfg.smoothness,
                    mask="columns", margin=self.max_disp)

    def training_step(self, model, x, y):
        from fovea.losses.stereo import multiscale_stereo_loss

        left, right, inp = _pair_views(x, self.views)
        disps = model(inp, scales=True)
        parts = multiscale_stereo_loss(left.float(), right.float(), [d.float() for d in disps], **self._loss_kwargs())
        n = len(x)
        return parts["loss"], dict(loss=parts["loss"].detach() * n, photometric=parts["photometric"].detach() * n,
                                   smoothness=parts["smoothness"].detach() * n, count=n)

    def eval_step(self, model, x, y):
        from fovea.losses.stereo import stereo_loss

        left, right, inp = _pair_views(x, self.views)
        d = model(inp).float()
        parts = stereo_loss(left.float(), right.float(), d, **self._loss_kwargs())
        n = len(x)
        out = dict(loss=parts["loss"] * n, photometric=parts["photometric"] * n, smoothness=parts["smoothness"] * n,
                   count=n)
        truth = y.float()
        known = torch.isfinite(truth)
        full = upsample_disparity(d, tuple(truth.shape[-2:]))
        err = torch.where(known, (full - truth).abs(), torch.zeros_like(full))
        out.update(abs_error_px=err.sum(), bad3_px=((err > BAD_PIXEL_PX) & known).sum().float(),
                   truth_px=known.sum().float())
        return out

    def summarize(self, means):
        if "truth_px" not in means:
            return means
        out = {k: v for k, v in means.items() if k not in ("abs_error_px", "bad3_px", "truth_px")}
        if means["truth_px"] > 0:  # pixel-weighted over the split: sums over the split divided alike
            out["mae"] = means["abs_error_px"] / means["truth_px"]
            out["bad3"] = means["bad3_px"] / means["truth_px"]
        return out

    def export_info(self, cfg, data, image_size):
        return dict(model=cfg.model, arch=self.arch, scale=cfg.scale, data=cfg.data, loss=cfg.loss,
                    smoothness=cfg.smoothness, patch=list(self.crop), image_size=list(image_size))

    def report(self, run, model, data, batches_for):
        from fovea.report.html import write_report
        from fovea.report.plots import plot_curves

        plot_curves(run.metrics_path, run.plots)
        model = getattr(model, "module", model)
        result = depth_report(model, self.pairs, self.scale, run.plots, max_disp=model.max_disp * self.scale)
        run.write_json("depth.json", result)
        write_report(run.path, title=f"fovea depth ({run.path.name})",
                     sections=[("disparity errors", _table_html(result))])
        return dict(depth=result)


def evaluate_pairs(model: nn.Module, pairs, scale: int, num_disparities: int,
                   keep_maps: int = 4) -> tuple[dict, list[dict]]:
    """Errors of the network, StereoSGBM (valid pixels only, and invalid ones filled) and the
    constant median of the truth, over every pair with ground truth (pixel-weighted); and the
    disparity maps of the first ``keep_maps`` pairs, for pictures."""
    acc: dict[str, list] = {}
    maps = []
    for i in range(len(pairs.left)):
        truth = pairs.disparity[i].numpy()
        pred = predict_disparity(model, pairs.left[i], pairs.right[i], scale)[0].numpy()
        l_np, r_np = (v[i].permute(1, 2, 0).numpy() for v in (pairs.left, pairs.right))
        sgbm = sgbm_disparity(l_np, r_np, num_disparities)
        if i < keep_maps:
            maps.append(dict(name=pairs.names[i], left=l_np, truth=truth, ours=pred, sgbm=sgbm))
        if not np.isfinite(truth).any():
            continue
        sgbm_ok = np.isfinite(sgbm)
        median = np.full_like(truth, np.median(truth[np.isfinite(truth)]))
        for name, p, mask in (("network", pred, None), ("network on SGBM-valid pixels", pred, sgbm_ok),
                              ("StereoSGBM (valid pixels)", sgbm, sgbm_ok),
                              ("StereoSGBM (filled)", fill_invalid(sgbm), None),
                              ("constant median of the truth", median, None)):
            e = disparity_errors(p, truth, mask)
            acc.setdefault(name, []).append(e)
        acc.setdefault("_sgbm_coverage", []).append(dict(valid=float(sgbm_ok.mean())))
    table = {}
    for name, rows in acc.items():
        if name.startswith("_"):
            continue
        n = sum(r["pixels"] for r in rows)
        table[name] = dict(mae=sum(r["mae"] * r["pixels"] for r in rows) / max(n, 1),
                           bad3=sum(r["bad3"] * r["pixels"] for r in rows) / max(n, 1), pixels=n)
    if "_sgbm_coverage" in acc:
        table["StereoSGBM (valid pixels)"]["coverage"] = float(np.mean([r["valid"] for r in acc["_sgbm_coverage"]]))
    return table, maps


def save_disparity_figure(m: dict, path: Path, vmax: float) -> Path:
    """Left image, ground truth, the network's disparity and StereoSGBM's, on one colour scale
    (turbo, 0 to ``vmax`` pixels; black: unknown or no match), with a colour bar."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    h, w = m["truth"].shape
    fig = Figure(figsize=(10, 10 * h / w), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    tiles = [("left view", m["left"]), ("ground truth", disparity_to_color(m["truth"], vmax)),
             ("network", disparity_to_color(m["ours"], vmax)), ("StereoSGBM", disparity_to_color(m["sgbm"], vmax))]
    axes = fig.subplots(2, 2)
    for ax, (title, img) in zip(axes.flat, tiles):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.colorbar(ScalarMappable(Normalize(0, vmax), colormaps["turbo"]), ax=axes, shrink=0.8,
                 label="disparity (px); black: unknown")
    fig.suptitle(f"{m['name']}: the left view's disparity")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


def depth_report(model: nn.Module, pairs, scale: int, plots: Path, max_disp: float) -> dict:
    known = pairs.disparity[torch.isfinite(pairs.disparity)]
    top = float(known.max()) if len(known) else float(max_disp)
    table, maps = evaluate_pairs(model, pairs, scale, num_disparities_for(top))
    for m in maps:
        save_disparity_figure(m, plots / f"disparity-{m['name']}.png", vmax=top)
    return dict(scale=scale, methods=table, pairs=list(pairs.names))


def _table_html(result: dict) -> str:
    import html

    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v['mae']:.3f}</td><td>{100 * v['bad3']:.2f}%</td>"
                   f"<td>{v['pixels']}</td></tr>" for k, v in result["methods"].items())
    if not rows:
        return "<p class='muted'>no ground truth: no errors</p>"
    return ("<table><tr><th>method</th><th>MAE (px)</th><th>bad 3 px</th><th>pixels</th></tr>" + rows + "</table>")


__all__ = ["Depth", "bm_disparity", "depth_report", "disparity_errors", "disparity_to_color", "evaluate_pairs",
           "fill_invalid", "load_depth_model", "num_disparities_for", "predict_disparity", "sgbm_disparity",
           "upsample_disparity"]
