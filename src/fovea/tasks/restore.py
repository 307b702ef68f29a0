"""Image restoration tasks: super-resolution (``superres``, SRCNN) and Gaussian denoising
(``denoise``, DnCNN), trained on random patches and measured on whole held-out images.

``fovea train superres --scale 3`` (Dong et al. 2014): the training images' luminance (BT.601
Y) is cut into tiles; every step draws a ``--patch`` crop (33 as in the paper, made a multiple
of the scale) from each tile with a random flip or rotation, degrades it by bicubic down- and
up-sampling (:func:`fovea.data.color.bicubic_degrade`) and regresses the crop from its
degradation with a mean squared error (a valid-padding SRCNN is compared with the centre of
the crop, as in the paper). Held-out images are whole: cropped to a multiple of the scale
(``modcrop``), degraded the same way, restored, clamped to [0, 1] and scored by PSNR and SSIM
on Y with ``scale`` pixels shaved off each side, beside the bicubic image itself.

``fovea train denoise --sigma 25`` (Zhang et al. 2017, DnCNN-S): grey-level 40x40 crops
(``--model-kwargs '{"in_channels": 3}'`` trains on colour instead) plus Gaussian noise of
standard deviation sigma/255 drawn afresh each step from the trainer's augmentation generator;
the noisy images are not clipped, as in the paper. Held-out images get a fixed noise (seeded by
their index) so every epoch and every run sees the same noisy images, and are scored against
the clean ones beside the noisy input, a Gaussian filter and a median filter whose width and
window were picked on the validation images (the best mean PSNR over :data:`GAUSSIAN_SIGMAS`
and :data:`MEDIAN_SIZES`). Outputs and baselines are clamped to [0, 1] before scoring.

Whole images pass through :func:`tiled_apply`, which cuts them into overlapping tiles wide
enough for each network's receptive field, so the result equals whole-image inference
while memory stays bounded; ``fovea upscale`` and ``fovea denoise`` use the same functions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import UserError
from fovea.tasks.base import Task, register_task

__all__ = ["GAUSSIAN_SIGMAS", "MEDIAN_SIZES", "MODELS", "NOISE_SEED", "Denoise", "SuperResolution", "add_noise",
           "build_restorer", "denoise_image", "denoise_metrics", "fixed_noise", "load_restorer", "pick_filter_params",
           "receptive_margin", "srcnn_y", "superres_metrics", "tiled_apply", "upscale_image"]

NOISE_SEED = 25_000  # held-out image i gets noise from torch.Generator().manual_seed(NOISE_SEED + i)
GAUSSIAN_SIGMAS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)  # pixels, searched on the validation images
MEDIAN_SIZES = (3, 5, 7)
SRCNN_INIT_STD = 0.05  # the task's default start for SRCNN's weights (the paper: 0.001)
TILE = 256  # side of the tiles whole images are processed in (input pixels)


def _builders() -> dict[str, dict]:
    from fovea.models.srcnn import dncnn, srcnn, srcnn_valid

    return {"superres": {"srcnn": srcnn, "srcnn-valid": srcnn_valid}, "denoise": {"dncnn": dncnn}}


MODELS = {"superres": ("srcnn", "srcnn-valid"), "denoise": ("dncnn",)}


def build_restorer(task: str, name: str, kwargs: dict | None = None) -> nn.Module:
    """The ``name`` network of a restoration task (``srcnn``, ``srcnn-valid``; ``dncnn``)."""
    builders = _builders()[task]
    if name not in builders:
        raise UserError(f"--model {name!r} cannot be trained for {task}; expected one of {', '.join(builders)}")
    return builders[name](**dict(kwargs or {}))


def receptive_margin(model: nn.Module) -> int:
    """Pixels of context an output pixel needs on each side: (f1 + f2 + f3 - 3) / 2 for SRCNN,
    one per 3x3 convolution for DnCNN."""
    cfg = model.cfg
    if hasattr(cfg, "kernels"):
        return sum(k - 1 for k in cfg.kernels) // 2
    return cfg.depth


def tiled_apply(fn, x: torch.Tensor, margin: int, tile: int = TILE, scale: int = 1) -> torch.Tensor:
    """``fn`` over an (N, C, H, W) batch in ``tile`` x ``tile`` pieces, each read with ``margin``
    extra input pixels on every side (clipped at the image border) and cut back after ``fn``.
    ``fn`` maps an (N, C, h, w) input to (N, C', h * scale, w * scale). Equals ``fn(x)`` when
    every output pixel depends only on inputs within ``margin`` of it and on the image border
    (true of a fully convolutional net with ``margin`` at least its receptive radius)."""
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return fn(x)
    rows = []
    for i0 in range(0, h, tile):
        i1 = min(i0 + tile, h)
        r0, r1 = max(i0 - margin, 0), min(i1 + margin, h)
        cols = []
        for j0 in range(0, w, tile):
            j1 = min(j0 + tile, w)
            c0, c1 = max(j0 - margin, 0), min(j1 + margin, w)
            out = fn(x[..., r0:r1, c0:c1])
            cols.append(out[..., (i0 - r0) * scale:(i1 - r0) * scale, (j0 - c0) * scale:(j1 - c0) * scale])
        rows.append(torch.cat(cols, -1))
    return torch.cat(rows, -2)


def srcnn_y(model: nn.Module, y_up: torch.Tensor) -> torch.Tensor:
    """SRCNN on a bicubic-upscaled (N, 1, H, W) luminance: a valid-padding model's smaller output
    is placed over the centre of ``y_up``, whose border it keeps (as :func:`super_resolve_rgb`);
    a piece too thin for it (the edge of a tile) keeps ``y_up`` whole."""
    margin = receptive_margin(model)
    if model.cfg.padding == "valid" and min(y_up.shape[-2:]) <= 2 * margin:
        return y_up.clone()
    y = model(y_up)
    if y.shape[-2:] == y_up.shape[-2:]:
        return y
    out = y_up.clone()
    m = (y_up.shape[-2] - y.shape[-2]) // 2, (y_up.shape[-1] - y.shape[-1]) // 2
    out[..., m[0]:m[0] + y.shape[-2], m[1]:m[1] + y.shape[-1]] = y
    return out


@torch.no_grad()
def upscale_image(model: nn.Module, image: torch.Tensor, scale: int, tile: int = 128) -> torch.Tensor:
    """A low-resolution (C, h, w) image in [0, 1], C = 1 or 3, upscaled to (C, h * scale,
    w * scale) the SRCNN way (:func:`fovea.models.srcnn.super_resolve_rgb`: the model on Y,
    bicubic Cb and Cr), in tiles. A grey image is upscaled as the colour image with three equal
    channels, whose Cb and Cr are constant."""
    from fovea.models.srcnn import super_resolve_rgb

    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise UserError(f"Received an image of shape {tuple(image.shape)}; expected (1 or 3, H, W).")
    rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    # bicubic reads 2 low-resolution pixels each side; SRCNN its receptive radius in high-resolution ones
    margin = 3 + math.ceil(receptive_margin(model) / scale)
    out = tiled_apply(lambda t: super_resolve_rgb(model, t, scale), rgb[None].float(), margin, tile, scale)[0]
    return out.mean(0, keepdim=True) if image.shape[0] == 1 else out


@torch.no_grad()
def denoise_image(model: nn.Module, noisy: torch.Tensor, tile: int = TILE) -> torch.Tensor:
    """A noisy (C, H, W) image (values need not lie in [0, 1]) denoised, in tiles, clamped to
    [0, 1]. A grey model denoises each channel of a colour image on its own; a colour model
    gets a grey image repeated to three channels and returns their mean."""
    channels = model.cfg.in_channels
    if noisy.dim() != 3 or noisy.shape[0] not in (1, 3):
        raise UserError(f"Received an image of shape {tuple(noisy.shape)}; expected (1 or 3, H, W).")
    if channels == 1:
        batch = noisy[:, None].float()  # each channel a grey image
    else:
        batch = noisy.expand(3, -1, -1)[None].float()
    out = tiled_apply(model, batch, receptive_margin(model), tile).clamp(0, 1)
    if channels == 1:
        return out[:, 0]
    return out[0].mean(0, keepdim=True) if noisy.shape[0] == 1 else out[0]


def add_noise(clean: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``clean + sigma / 255 * N(0, 1)``, not clipped; the noise is drawn on the generator's
    device (CPU when none) and moved to the image's."""
    dev = generator.device if generator is not None else clean.device
    noise = torch.randn(clean.shape, generator=generator, device=dev, dtype=torch.float32)
    return clean + noise.to(clean.device, clean.dtype) * (sigma / 255)


def fixed_noise(clean: torch.Tensor, sigma: float, index: int) -> torch.Tensor:
    """The noisy version of held-out image ``index``: the same on every device and every call."""
    return add_noise(clean, sigma, torch.Generator().manual_seed(NOISE_SEED + index))


def _quality(out: torch.Tensor, ref: torch.Tensor, border: int, prefix: str = "") -> dict[str, float]:
    from fovea.apps.image_quality import psnr, ssim

    return {f"{prefix}psnr": float(psnr(out, ref, border=border)),
            f"{prefix}ssim": float(ssim(out, ref, border=border))}


@torch.no_grad()
def superres_metrics(model: nn.Module, hr: torch.Tensor, scale: int, baseline: dict | None = None) -> dict[str, float]:
    """PSNR and SSIM (border ``scale``) of SRCNN and of bicubic upscaling on one high-resolution
    (1, H, W) luminance image in [0, 1] (cropped to a multiple of ``scale`` first), and the MSE
    of the unclamped output as ``loss``. ``baseline``: bicubic figures already computed."""
    from fovea.data.color import bicubic_degrade, modcrop

    hr = modcrop(hr.float(), scale)[None]
    up = bicubic_degrade(hr, scale)
    sr = tiled_apply(lambda t: srcnn_y(model, t), up, receptive_margin(model))
    out = dict(loss=float(F.mse_loss(sr.float(), hr)), **_quality(sr.float().clamp(0, 1), hr, scale))
    return {**out, **(baseline or _quality(up.clamp(0, 1), hr, scale, "bicubic_"))}


def _filter_metrics(noisy: torch.Tensor, clean: torch.Tensor, gaussian_sigma: float, median_size: int) -> dict:
    from fovea.apps.image_quality import gaussian_filter_baseline, median_filter_baseline

    return {**_quality(noisy.clamp(0, 1), clean, 0, "noisy_"),
            **_quality(gaussian_filter_baseline(noisy, gaussian_sigma).clamp(0, 1), clean, 0, "gaussian_"),
            **_quality(median_filter_baseline(noisy, median_size).clamp(0, 1), clean, 0, "median_")}


@torch.no_grad()
def denoise_metrics(model: nn.Module, clean: torch.Tensor, sigma: float, index: int, gaussian_sigma: float,
                    median_size: int, baseline: dict | None = None) -> dict[str, float]:
    """PSNR and SSIM of the denoiser, the noisy input, a Gaussian and a median filter on one clean
    (C, H, W) image in [0, 1] with the fixed noise of ``index``; ``loss`` is the MSE of the
    unclamped output. ``baseline``: the noisy and filter figures already computed."""
    clean = clean.float()[None]
    noisy = fixed_noise(clean, sigma, index)
    raw = tiled_apply(model, noisy, receptive_margin(model))
    out = dict(loss=float(F.mse_loss(raw.float(), clean)), **_quality(raw.float().clamp(0, 1), clean, 0))
    return {**out, **(baseline or _filter_metrics(noisy, clean, gaussian_sigma, median_size))}


def pick_filter_params(images: list[torch.Tensor], sigma: float, indices: list[int]) -> dict:
    """The Gaussian width (:data:`GAUSSIAN_SIGMAS`) and median window (:data:`MEDIAN_SIZES`) with
    the best mean PSNR on ``images`` (float (C, H, W) in [0, 1]) under their fixed noise."""
    from fovea.apps.image_quality import gaussian_filter_baseline, median_filter_baseline, psnr

    pairs = [(fixed_noise(im.float()[None], sigma, i), im.float()[None]) for im, i in zip(images, indices)]
    mean = lambda f: sum(float(psnr(f(n).clamp(0, 1), c)) for n, c in pairs) / len(pairs)  # noqa: E731
    gauss = {s: mean(lambda n, s=s: gaussian_filter_baseline(n, s)) for s in GAUSSIAN_SIGMAS}
    median = {k: mean(lambda n, k=k: median_filter_baseline(n, k)) for k in MEDIAN_SIZES}
    return dict(gaussian_sigma=max(gauss, key=gauss.get), median_size=max(median, key=median.get),
                gaussian_psnr_by_sigma=gauss, median_psnr_by_size=median)


class _Restore(Task):
    """What both tasks share: tiles of the training images, whole held-out images, per-image
    metrics summed by the trainer, a report with one held-out comparison."""

    monitor = "psnr"
    monitor_mode = "max"
    mode = "y"
    metric_columns = ("psnr", "ssim")

    # -- hooks the two tasks fill in
    def _check(self, cfg) -> None: ...

    def _default_patch(self, cfg) -> int:
        raise NotImplementedError

    def _corrupt(self, clean: torch.Tensor, generator) -> torch.Tensor:
        raise NotImplementedError

    def _metrics(self, model, image: torch.Tensor, index: int) -> dict[str, float]:
        raise NotImplementedError

    def _baseline_keys(self) -> tuple[str, ...]:
        raise NotImplementedError

    # -- data
    def _channel_mode(self, cfg) -> str:
        return self.mode

    def load_data(self, cfg):
        from fovea.data.patches import PaddedImages, load_restore_images, tile_grid
        from fovea.data.sources import DataBundle, Split

        self._check(cfg)
        if cfg.model not in MODELS[self.name]:
            raise UserError(f"--model {cfg.model!r} cannot be trained for {self.name}; expected one of "
                            f"{', '.join(MODELS[self.name])}")
        if cfg.image_size:
            raise UserError(f"--image-size {cfg.image_size} does not apply to {self.name}: it trains on "
                            f"--patch crops and evaluates whole images")
        self.patch = cfg.patch if cfg.patch is not None else self._default_patch(cfg)
        if not isinstance(self.patch, int) or self.patch < 8:
            raise UserError(f"--patch {self.patch}: expected a patch side of at least 8 pixels")
        self.mode = self._channel_mode(cfg)
        images = load_restore_images(cfg.data, self.mode, root=cfg.data_root, val_fraction=cfg.val_fraction,
                                     seed=cfg.seed, on_bad_image=cfg.on_bad_image)
        tile = 2 * self.patch
        tiles = tile_grid([im for _, im in images.train], tile, self.patch)
        small = [n for n, im in images.train if min(im.shape[-2:]) < tile]
        skipped = list(images.skipped) + [(n, f"smaller than a {tile}x{tile} training tile (2 x --patch)")
                                          for n in small]
        if len(tiles) == 0:
            raise UserError(f"no training image of {cfg.data!r} is at least {tile}x{tile} (2 x --patch "
                            f"{self.patch}); lower --patch")
        self.images = images
        nv = len(images.val)
        val = PaddedImages([im for _, im in images.val]) if images.val else None
        test = PaddedImages([im for _, im in images.test], first_index=nv)
        self._prepare_baselines(cfg, images)
        self._cache: dict[int, dict] = {}
        channels = tiles.shape[1]
        return DataBundle(
            name=images.name,
            train=Split(images=tiles, labels=torch.zeros(len(tiles), dtype=torch.long)),
            val=Split(images=None, labels=val.labels, dataset=val) if val else None,
            test=Split(images=None, labels=test.labels, dataset=test),
            classes=["image"], in_channels=channels, image_size=(tile, tile), skipped=skipped)

    def _prepare_baselines(self, cfg, images) -> None:
        pass

    def augment_batch(self, augment, x, y, generator):
        from fovea.data.patches import random_crops, random_dihedral

        x = augment(x, generator=generator)
        clean = random_dihedral(random_crops(x, self.patch, generator), generator)
        return self._corrupt(clean, generator), clean

    # -- steps
    def training_step(self, model, x, y):
        out = model(x)
        target = _centre(y, out.shape[-2:])
        loss = F.mse_loss(out.float(), target.float())
        return loss, dict(loss=loss.detach() * len(x), count=len(x))

    def eval_step(self, model, x, y):
        sums: dict[str, float] = defaultdict(float)
        for image, (h, w, index) in zip(x, y.tolist()):
            for k, v in self._metrics(model, image[:, :h, :w], index).items():
                sums[k] += v
        out = {k: torch.tensor(v, device=x.device) for k, v in sums.items()}
        return dict(out, count=len(x))

    def _cached(self, index: int, metrics: dict) -> dict:
        """Remember the baseline figures of a held-out image: they do not change with training."""
        self._cache.setdefault(index, {k: metrics[k] for k in self._baseline_keys()})
        return metrics

    # -- the end
    def export_info(self, cfg, data, image_size):
        return dict(model=cfg.model, model_kwargs=dict(self.model_kwargs), in_channels=data.in_channels,
                    channels=self.mode, patch=self.patch, data=cfg.data,
                    val_images=[n for n, _ in self.images.val], test_images=[n for n, _ in self.images.test])

    def report(self, run, model, data, batches_for):
        from fovea.report.html import write_report
        from fovea.report.plots import plot_curves

        plot_curves(run.metrics_path, run.plots)
        model.eval()
        rows = []
        for i, (name, im) in enumerate(self.images.test):
            m = self._metrics(model, im.float().div(255), len(self.images.val) + i)
            rows.append(dict(image=Path(name).name, **{k: round(v, 4) for k, v in m.items() if k != "loss"}))
        run.write_json("restore.json", dict(task=self.name, test_images=rows))
        self._comparison(model, run.plots / "comparison.png")
        write_report(run.path, title=f"fovea {self.name}: {run.path.name}",
                     sections=[("held-out images", _table(rows))])
        return {}


def _centre(x: torch.Tensor, size) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return x[..., top:top + size[0], left:left + size[1]]


def _table(rows: list[dict]) -> str:
    import html

    if not rows:
        return "<p>no test images</p>"
    keys = list(rows[0])
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[k]))}</td>" for k in keys) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _crop_box(h: int, w: int, side: int) -> tuple[slice, slice]:
    side = min(side, h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return slice(top, top + side), slice(left, left + side)


@register_task
class SuperResolution(_Restore):
    name = "superres"
    mode = "y"
    metric_columns = ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim")

    def label(self, cfg) -> str:
        return f"{cfg.model}-x{cfg.scale}"

    def _check(self, cfg) -> None:
        if not isinstance(cfg.scale, int) or cfg.scale < 2:
            raise UserError(f"--scale {cfg.scale}: expected an integer upscaling factor >= 2 (SRCNN uses 2, 3, 4)")
        if cfg.patch is not None and cfg.patch % cfg.scale:
            raise UserError(f"--patch {cfg.patch}: expected a multiple of --scale {cfg.scale}, e.g. "
                            f"{max(cfg.scale, cfg.patch - cfg.patch % cfg.scale)}")
        if dict(cfg.model_kwargs).get("in_channels", 1) != 1:
            raise UserError(f"--model-kwargs in_channels={cfg.model_kwargs['in_channels']}: super-resolution "
                            f"works on the luminance channel; expected 1")
        self.scale = cfg.scale

    def _default_patch(self, cfg) -> int:
        return 33 - 33 % cfg.scale  # the paper's 33 x 33 sub-images, a multiple of the scale

    def build_model(self, cfg, data, image_size):
        # the paper's N(0, 0.001^2) start leaves the output near zero for thousands of Adam steps
        # (docs/superres-denoise.md); N(0, 0.05^2) beats bicubic within a few hundred
        self.model_kwargs = {"init_std": SRCNN_INIT_STD, **dict(cfg.model_kwargs)}
        model = build_restorer(self.name, cfg.model, self.model_kwargs)
        margin = receptive_margin(model)
        if model.cfg.padding == "valid" and self.patch <= 2 * margin:
            raise UserError(f"--patch {self.patch} leaves no output for {cfg.model} (it loses {margin} px a side)")
        return model

    def _corrupt(self, clean, generator):
        from fovea.data.color import bicubic_degrade

        return bicubic_degrade(clean, self.scale)

    def _baseline_keys(self):
        return ("bicubic_psnr", "bicubic_ssim")

    def _metrics(self, model, image, index):
        return self._cached(index, superres_metrics(model, image, self.scale, self._cache.get(index)))

    def export_info(self, cfg, data, image_size):
        return dict(super().export_info(cfg, data, image_size), scale=self.scale)

    @torch.no_grad()
    def _comparison(self, model, path: Path) -> None:
        from fovea.data.color import bicubic_degrade, modcrop
        from fovea.report.plots import plot_image_grid

        hr = modcrop(self.images.test[0][1].float().div(255), self.scale)[None]
        up = bicubic_degrade(hr, self.scale)
        sr = tiled_apply(lambda t: srcnn_y(model, t), up, receptive_margin(model))
        box = _crop_box(*hr.shape[-2:], 96)
        panels = torch.cat([up, sr, hr])[..., box[0], box[1]].clamp(0, 1)
        plot_image_grid(panels, ["bicubic", "SRCNN", "ground truth"], path, ncols=3,
                        title=f"x{self.scale} on {Path(self.images.test[0][0]).name} (Y channel)")


@register_task
class Denoise(_Restore):
    name = "denoise"
    mode = "grey"
    metric_columns = ("psnr", "ssim", "noisy_psnr", "gaussian_psnr", "median_psnr")

    def label(self, cfg) -> str:
        return f"{cfg.model}-s{cfg.sigma:g}"

    def _check(self, cfg) -> None:
        if not (isinstance(cfg.sigma, (int, float)) and 0 < cfg.sigma <= 255):
            raise UserError(f"--sigma {cfg.sigma}: expected a noise standard deviation in (0, 255] (0-255 units)")
        self.sigma = float(cfg.sigma)

    def _channel_mode(self, cfg) -> str:
        channels = dict(cfg.model_kwargs).get("in_channels", 1)
        if channels not in (1, 3):
            raise UserError(f"--model-kwargs in_channels={channels!r}: expected 1 (grey) or 3 (colour)")
        return "grey" if channels == 1 else "rgb"

    def _default_patch(self, cfg) -> int:
        return 40  # DnCNN-S

    def _prepare_baselines(self, cfg, images) -> None:
        # filter settings are picked on the validation images, or without any on up to four
        # training images (centre 256 x 256), never on the test images
        if images.val:
            picks, idx = [im for _, im in images.val], list(range(len(images.val)))
            self.filter_source = "validation images"
        else:
            picks = [im[(slice(None),) + _crop_box(*im.shape[-2:], 256)] for _, im in images.train[:4]]
            idx = [-1 - i for i in range(len(picks))]
            self.filter_source = "training images (no validation split)"
        self.filters = pick_filter_params([im.float().div(255) for im in picks], self.sigma, idx)

    def build_model(self, cfg, data, image_size):
        # the last convolution starts at zero, so the net starts as the identity (see DnCNNConfig)
        self.model_kwargs = {"zero_init_last": True, **dict(cfg.model_kwargs)}
        return build_restorer(self.name, cfg.model, self.model_kwargs)

    def _corrupt(self, clean, generator):
        return add_noise(clean, self.sigma, generator)

    def _baseline_keys(self):
        return tuple(f"{p}_{m}" for p in ("noisy", "gaussian", "median") for m in ("psnr", "ssim"))

    def _metrics(self, model, image, index):
        m = denoise_metrics(model, image, self.sigma, index, self.filters["gaussian_sigma"],
                            self.filters["median_size"], self._cache.get(index))
        return self._cached(index, m)

    def export_info(self, cfg, data, image_size):
        return dict(super().export_info(cfg, data, image_size), sigma=self.sigma,
                    gaussian_sigma=self.filters["gaussian_sigma"], median_size=self.filters["median_size"],
                    filters_picked_on=self.filter_source)

    @torch.no_grad()
    def _comparison(self, model, path: Path) -> None:
        from fovea.apps.image_quality import gaussian_filter_baseline, median_filter_baseline
        from fovea.report.plots import plot_image_grid

        clean = self.images.test[0][1].float().div(255)[None]
        noisy = fixed_noise(clean, self.sigma, len(self.images.val))
        outs = [noisy, gaussian_filter_baseline(noisy, self.filters["gaussian_sigma"]),
                median_filter_baseline(noisy, self.filters["median_size"]),
                tiled_apply(model, noisy, receptive_margin(model)), clean]
        box = _crop_box(*clean.shape[-2:], 96)
        panels = torch.cat(outs)[..., box[0], box[1]].clamp(0, 1)
        titles = ["noisy", f"gaussian {self.filters['gaussian_sigma']:g}", f"median {self.filters['median_size']}",
                  "DnCNN", "clean"]
        plot_image_grid(panels, titles, path, ncols=5,
                        title=f"sigma {self.sigma:g} on {Path(self.images.test[0][0]).name}")


def load_restorer(run_dir: str | Path, task: str, device="cpu") -> tuple[nn.Module, dict]:
    """The trained network of a ``superres`` or ``denoise`` run, in eval mode, and its model.json."""
    from safetensors.torch import load_file

    from fovea.train.run import Run

    run = Run.existing(run_dir)
    info = run.read_json("model.json")
    if info.get("task") != task:
        what = {"superres": "super-resolution (superres)", "denoise": "denoising (denoise)"}[task]
        raise UserError(f"run {str(run.path)!r} is a {info.get('task')!r} run; expected a {what} run")
    weights = run.path / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"{str(weights)!r} not found; is {str(run.path)!r} a finished fovea run?")
    model = build_restorer(task, info["model"], info.get("model_kwargs"))
    model.load_state_dict(load_file(str(weights)))
    return model.to(device).eval(), info
