"""Fast feed-forward style transfer (Johnson, Alahi & Fei-Fei 2016, "Perceptual Losses for
Real-Time Style Transfer and Super-Resolution"): ``fovea train stylenet --style STYLE --data
FOLDER|skimage`` trains an image transformation network (:mod:`fovea.models.stylenet`) for one
style image; ``fovea stylize --net RUN INPUT... --out OUT`` applies it (:func:`stylize_inputs`).

Content images (``--data``):

- ``skimage``: scikit-image's bundled photographs (offline; the lists of
  :mod:`fovea.data.patches`), greys repeated to RGB, cut into ``--image-size`` tiles at half a
  tile's stride (a 512 x 512 photo gives 49 tiles of 128);
- a folder of images: each training image resized so its shorter side is ``--image-size``, then
  centre-cropped to a square (how Johnson et al. prepared COCO at 256 x 256). The folder's
  validation and test images (``train/``, ``val/``, ``test/`` subfolders, or a seeded split)
  only appear in the report.

Every batch gets a random flip or rotation by a multiple of 90 degrees.

The loss (``fovea.losses.style``), with ``phi_j`` the responses of a frozen VGG-16 to the
ImageNet-normalized images, ``y = f(x)`` the network's output and ``s`` the style image:

    L = content_weight * ||phi_c(y) - phi_c(x)||^2 / (C H W) / mean(phi_c(x)^2)
      + style_weight * sum_j ||G_j(y) - G_j(s)||_F^2 / ||G_j(s)||_F^2
      + tv_weight * TV(y) + temporal_weight * L_temporal

``G_j`` are the Gram matrices normalized by ``C_j H_j W_j`` (:func:`gram_matrix`), content layer
``c`` = relu2_2 (relu3_3 by option), style layers relu1_2, relu2_2, relu3_3, relu4_3: Johnson et
al.'s choice. Each term is divided by the size of its target (the mean square of the content
features, the squared norm of the style Gram), so the weights mean the same with ImageNet
weights and with random ones, whose features have other scales. ``TV`` is the sum of squared
differences of neighbouring pixels per image (:func:`total_variation`).

The temporal consistency (stability) term, when ``--temporal-weight`` is above 0: a copy ``x'``
of the batch shifted by a random 1-4 pixels and with Gaussian noise of sigma 2/255 should give
the shifted output, ``L_temporal = mean((f(x') - shift(f(x)))^2)`` over the pixels at least
:data:`TEMPORAL_MARGIN` from the border, which trains out the flicker of frame-by-frame video
stylization (small changes of the input move the output only as much).

The loss network's weights are chosen with ``--loss WEIGHTS[:CONTENT_LAYER]``: ``auto`` (the
default: torchvision's ImageNet VGG-16 when its file is in the torch hub cache, otherwise a
random-weight VGG-16), ``torchvision`` (download if missing), ``random`` (He-initialized VGG-16
with seed :data:`LOSS_NET_SEED`, the same network in every run), or a weights file; e.g.
``--loss random:relu3_3``. ``model.json`` records which was used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import UserError
from fovea.tasks.base import Task, register_task

__all__ = ["CONTENT_LAYERS", "LOSS_NET_SEED", "STYLE_LAYERS", "TEMPORAL_MARGIN", "PerceptualLoss",
           "StyleNetTask", "comparison_figure", "load_style_image", "load_stylenet", "loss_network", "stylize_image",
           "stylize_inputs", "stylize_video", "temporal_loss"]

STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
CONTENT_LAYERS = ("relu2_2", "relu3_3")
LOSS_NET_SEED = 0
DEFAULT_SIZE = 256  # Johnson et al.'s training crops
TEMPORAL_MARGIN = 8  # pixels left out at the border by the temporal term (shifts and padding)
TEMPORAL_SHIFT = 4  # the largest shift of the temporal term, in pixels
TEMPORAL_NOISE = 2 / 255
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------ inputs


def load_style_image(spec: str, longest: int | None = None) -> torch.Tensor:
    """The style image as a float (1, 3, H, W) RGB batch in [0, 1]: a file, or ``skimage:NAME``
    for one of scikit-image's bundled images; resized (antialiased) so its longer side is
    ``longest`` when given."""
    from fovea.data.decode import BadImageError, load_image

    if spec.startswith("skimage:"):
        from fovea.data.patches import convert_channels, skimage_image

        name = spec.split(":", 1)[1]
        try:
            image = convert_channels(skimage_image(name), "rgb")
        except (AttributeError, ImportError, ModuleNotFoundError, OSError, ValueError) as e:
            raise UserError(f"--style {spec!r}: scikit-image has no usable bundled image {name!r} "
                            f"({type(e).__name__}); try skimage:immunohistochemistry or a file") from None
    else:
        if not Path(spec).is_file():
            raise UserError(f"style image {spec!r} not found; expected an image file or skimage:NAME")
        try:
            image = load_image(spec, channels=3)
        except BadImageError as e:
            raise UserError(f"style image {spec!r} is unreadable: {e}") from None
    x = image.float().div(255)[None]
    if longest is not None:
        h, w = x.shape[-2:]
        scale = longest / max(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return x


def _parse_loss(spec: str | None) -> tuple[str, str]:
    """``--loss WEIGHTS[:CONTENT_LAYER]`` -> (weights, content layer)."""
    spec = spec or "auto"
    weights, layer = spec, CONTENT_LAYERS[0]
    head, sep, tail = spec.rpartition(":")
    if sep and tail in CONTENT_LAYERS:
        weights, layer = head, tail
    elif sep and tail.startswith(("relu", "conv")):
        raise UserError(f"--loss {spec!r}: content layer {tail!r} is not one of {', '.join(CONTENT_LAYERS)}")
    if weights in ("ce", ""):  # the classifier's default loss name: the task's own default applies
        weights = "auto"
    if weights not in ("auto", "torchvision", "random") and not Path(weights).is_file():
        raise UserError(f"--loss {spec!r}: expected auto, torchvision, random or a VGG-16 weights file "
                        f"(optionally followed by :relu3_3 for the content layer)")
    return weights, layer


def _torchvision_file() -> Path:
    import torchvision

    url = torchvision.models.get_model_weights("vgg16").DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def loss_network(weights: str = "auto") -> tuple[nn.Module, str]:
    """A VGG-16 for the perceptual loss and a line saying which weights it has (see the module
    docstring for ``weights``). Random weights are drawn from a fixed seed without touching
    the global random state."""
    import fovea
    from fovea.models.weights import load_weights

    if weights == "auto":
        weights = "torchvision" if _torchvision_file().is_file() else "random"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(LOSS_NET_SEED)
        net = fovea.create_model("vgg16")
    if weights == "random":
        return net, f"vgg16 random (He init, seed {LOSS_NET_SEED})"
    load_weights(net, "vgg16", weights)
    return net, "vgg16 torchvision ImageNet" if weights == "torchvision" else f"vgg16 {weights}"


class PerceptualLoss(nn.Module):
    """Johnson et al.'s perceptual loss for one style image (see the module docstring); the
    terms are returned separately, weighted, as a dict with their sum under ``loss``."""

    def __init__(self, vgg: nn.Module, style: torch.Tensor, content_layer: str = "relu2_2",
                 style_layers: Sequence[str] = STYLE_LAYERS, content_weight: float = 1.0,
                 style_weight: float = 0.3, tv_weight: float = 1e-6):
        super().__init__()
        from fovea.losses.style import FeatureTap, gram_matrix

        self.tap = FeatureTap(vgg, [*style_layers, content_layer])
        self.content_tap = FeatureTap(vgg, [content_layer])  # the same modules, truncated earlier
        self.content_layer, self.style_layers = content_layer, list(style_layers)
        self.weights = dict(content=content_weight, style=style_weight, tv=tv_weight)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        with torch.no_grad():
            feats = self.tap(self._norm(style))
            for i, layer in enumerate(self.style_layers):
                g = gram_matrix(feats[layer], normalize=True)
                self.register_buffer(f"gram{i}", g)
                self.register_buffer(f"gram{i}_sq", g.pow(2).sum())

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        from fovea.losses.style import feature_loss, gram_loss, gram_matrix, total_variation

        y = y.float()
        with torch.no_grad():
            target = self.content_tap(self._norm(x.float()))[self.content_layer]
        feats = self.tap(self._norm(y))
        content = feature_loss(feats[self.content_layer], target) / target.pow(2).mean().clamp_min(1e-12)
        style = sum(gram_loss(gram_matrix(feats[layer], normalize=True), getattr(self, f"gram{i}"))
                    / getattr(self, f"gram{i}_sq").clamp_min(1e-12) for i, layer in enumerate(self.style_layers))
        tv = total_variation(y, power=2) / len(y)
        out = dict(content=self.weights["content"] * content, style=self.weights["style"] * style,
                   tv=self.weights["tv"] * tv)
        out["loss"] = out["content"] + out["style"] + out["tv"]
        return out


def temporal_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """``mean((f(x') - shift(f(x)))^2)`` away from the border, ``x'`` = ``x`` shifted by a random
    1-:data:`TEMPORAL_SHIFT` pixels (each axis, random sign) plus Gaussian noise; ``y = f(x)``."""
    dev = generator.device if generator is not None else x.device
    shift = torch.randint(1, TEMPORAL_SHIFT + 1, (2,), generator=generator, device=dev)
    sign = torch.randint(0, 2, (2,), generator=generator, device=dev) * 2 - 1
    dy, dx = (int(v) for v in (shift * sign).tolist())
    noise = torch.randn(x.shape, generator=generator, device=dev).to(x.device, x.dtype) * TEMPORAL_NOISE
    y2 = model((torch.roll(x, (dy, dx), (-2, -1)) + noise).clamp(0, 1))
    m = TEMPORAL_MARGIN
    diff = y2.float() - torch.roll(y.float(), (dy, dx), (-2, -1))
    return diff[..., m:-m, m:-m].pow(2).mean()


# ------------------------------------------------------------------------------------ the task


@register_task
class StyleNetTask(Task):
    name = "stylenet"
    monitor = "loss"  # of the training epoch: the task keeps no validation split (see load_data)
    metric_columns = ("content", "style", "tv", "temporal")

    def label(self, cfg) -> str:
        stem = Path(cfg.style).stem if cfg.style and not cfg.style.startswith("skimage:") else \
            (cfg.style or "").split(":")[-1]
        return f"stylenet-{stem}"

    def load_data(self, cfg):
        from fovea.data.patches import load_restore_images, tile_grid
        from fovea.data.sources import DataBundle, Split

        if not cfg.style:
            raise UserError("fovea train stylenet needs --style STYLE_IMAGE (a file, or skimage:NAME for a "
                            "bundled image such as skimage:immunohistochemistry)")
        if cfg.model != "stylenet":
            raise UserError(f"--model {cfg.model!r} cannot be trained for stylenet; expected stylenet")
        size = cfg.image_size or DEFAULT_SIZE
        if not isinstance(size, int) or size < 32 or size % 4:
            raise UserError(f"--image-size {size}: expected a multiple of 4, at least 32 (training crop side)")
        if cfg.temporal_weight and size <= 2 * TEMPORAL_MARGIN + TEMPORAL_SHIFT:
            raise UserError(f"--image-size {size} is too small for the temporal term; expected above "
                            f"{2 * TEMPORAL_MARGIN + TEMPORAL_SHIFT}")
        self.loss_weights, self.content_layer = _parse_loss(cfg.loss)
        self.style = load_style_image(cfg.style, longest=2 * size)  # texture larger than a crop holds
        self.size = size
        images = load_restore_images(cfg.data, "rgb", root=cfg.data_root, val_fraction=cfg.val_fraction,
                                     seed=cfg.seed, on_bad_image=cfg.on_bad_image)
        train = [im for _, im in images.train]
        if cfg.data == "skimage":
            tiles = tile_grid(train, size, size // 2)
        else:
            tiles = torch.stack([_square_crop(im, size) for im in train])
        if len(tiles) == 0:
            raise UserError(f"no training image of {cfg.data!r} is at least {size}x{size}; lower --image-size")
        self.images = images
        return DataBundle(name=images.name, train=Split(images=tiles, labels=torch.zeros(len(tiles), dtype=torch.long)),
                          val=None, test=None, classes=["image"], in_channels=3, image_size=(size, size),
                          skipped=list(images.skipped))

    def augment_batch(self, augment, x, y, generator):
        from fovea.data.patches import random_dihedral

        self._generator = generator
        return random_dihedral(augment(x, generator=generator), generator), y

    def build_model(self, cfg, data, image_size):
        import fovea
        import fovea.models.stylenet  # noqa: F401  (registers the model)

        self.model_kwargs = dict(cfg.model_kwargs)
        model = fovea.create_model("stylenet", **self.model_kwargs)
        vgg, self.loss_net_name = loss_network(self.loss_weights)
        self.loss = PerceptualLoss(vgg, self.style, self.content_layer, content_weight=cfg.content_weight,
                                   style_weight=cfg.style_weight, tv_weight=cfg.tv_weight)
        self.temporal_weight = float(cfg.temporal_weight)
        self.cfg = cfg
        return model

    def _loss_on(self, device) -> PerceptualLoss:
        if self.loss.mean.device != torch.device(device):
            self.loss = self.loss.to(device)
        return self.loss

    def training_step(self, model, x, y):
        out = model(x)
        terms = self._loss_on(x.device)(out, x)
        loss = terms["loss"]
        if self.temporal_weight > 0:
            terms["temporal"] = self.temporal_weight * temporal_loss(model, x, out, getattr(self, "_generator", None))
            loss = loss + terms["temporal"]
        n = len(x)
        stats = {k: v.detach() * n for k, v in terms.items() if k != "loss"}
        return loss, dict(stats, loss=loss.detach() * n, count=n)

    def eval_step(self, model, x, y):
        terms = self._loss_on(x.device)(model(x), x)
        return dict({k: v.detach() * len(x) for k, v in terms.items()}, count=len(x))

    def export_info(self, cfg, data, image_size):
        return dict(model="stylenet", model_kwargs=dict(self.model_kwargs), style=cfg.style, image_size=self.size,
                    loss_network=self.loss_net_name, content_layer=self.content_layer, style_layers=list(STYLE_LAYERS),
                    content_weight=cfg.content_weight, style_weight=cfg.style_weight, tv_weight=cfg.tv_weight,
                    temporal_weight=cfg.temporal_weight, data=cfg.data,
                    report_images=[n for n, _ in self.images.val + self.images.test])

    @torch.no_grad()
    def report(self, run, model, data, batches_for):
        from fovea.report.html import write_report
        from fovea.report.plots import plot_curves, plot_image_grid

        plot_curves(run.metrics_path, run.plots)
        model = model.eval()
        device = next(model.parameters()).device
        held = self.images.val + self.images.test
        contents, outs, names = [], [], []
        for name, im in held:
            x = _fit(im.float().div(255)[None], 256).to(device)  # small, so the grid stays light
            contents.append(x.cpu())
            outs.append(model(x).float().clamp(0, 1).cpu())
            names.append(Path(name).name)
        # one comparison figure: content, style, stylized (the held-out photo with most colour first)
        first = max(range(len(held)), key=lambda i: float(contents[i].std(1).mean())) if held else None
        if first is not None:  # at up to 512 pixels, the style image at its own resolution
            content = _fit(held[first][1].float().div(255)[None], 512)
            h, w = content.shape[-2:]
            panels = [content, _fit_height(load_style_image(self.cfg.style), h, w),
                      model(content.to(device)).float().clamp(0, 1).cpu()]
            comparison_figure(panels, ["content: " + names[first], "style: " + Path(self.cfg.style).name,
                                       "stylized"], run.plots / "example.png")
        side = 160
        grid = [_fit_square(t, side) for t in contents] + [_fit_square(t, side) for t in outs]
        if grid:
            plot_image_grid(torch.cat(grid), names + [f"stylized {n}" for n in names], run.plots / "stylized.png",
                            ncols=len(names), title="held-out photos (top) and their stylization (bottom)")
        write_report(run.path, title=f"fovea stylenet: {run.path.name}",
                     sections=[("loss network", f"<p>{self.loss_net_name}; content layer {self.content_layer}; "
                                                f"style layers {', '.join(STYLE_LAYERS)}</p>")])
        return {}


def comparison_figure(images: Sequence[torch.Tensor], titles: Sequence[str], path: str | Path,
                      panel: float = 3.2) -> Path:
    """Images side by side (each a (1, 3, H, W) float batch in [0, 1], the same height), each
    ``panel`` inches high with its title: the content / style / stylized figure of a run."""
    from fovea.report.plots import _figure, _save, _text

    h = images[0].shape[-2]
    widths = [im.shape[-1] / h * panel for im in images]
    fig = _figure(sum(widths) + 0.1 * len(images), panel + 0.35)
    left = 0.0
    total = sum(widths) + 0.1 * len(images)
    for im, title, w in zip(images, titles, widths):
        ax = fig.add_axes((left / total, 0.0, w / total, panel / (panel + 0.35)))
        ax.imshow(im[0].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="lanczos")
        ax.set_title(_text(title), fontsize=9)
        ax.axis("off")
        left += w + 0.1
    return _save(fig, Path(path))


def _square_crop(im: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (C, H, W) uint8 so its shorter side is ``size``, then crop the centre square."""
    h, w = im.shape[-2:]
    scale = size / min(h, w)
    hh, ww = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(im[None].float(), size=(hh, ww), mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (hh - size) // 2, (ww - size) // 2
    return x[:, top:top + size, left:left + size].round().clamp(0, 255).to(torch.uint8)


def _fit(x: torch.Tensor, longest: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if max(h, w) <= longest:
        return x
    s = longest / max(h, w)
    return F.interpolate(x, size=(max(4, round(h * s)), max(4, round(w * s))), mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1)


def _fit_height(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``x`` scaled to cover (h, w) and centre-cropped to it (the style panel beside a photo)."""
    s = max(h / x.shape[-2], w / x.shape[-1])
    hh, ww = max(h, math.ceil(x.shape[-2] * s)), max(w, math.ceil(x.shape[-1] * s))
    x = F.interpolate(x, size=(hh, ww), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    top, left = (hh - h) // 2, (ww - w) // 2
    return x[..., top:top + h, left:left + w]


def _fit_square(x: torch.Tensor, side: int) -> torch.Tensor:
    return _fit_height(x, side, side)


# ------------------------------------------------------------------------------------ applying a run


def load_stylenet(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The trained network of a ``stylenet`` run, in eval mode, and its model.json."""
    from safetensors.torch import load_file

    import fovea
    import fovea.models.stylenet  # noqa: F401  (registers the model)
    from fovea.train.run import Run

    if not Path(run_dir).is_dir():
        raise UserError(f"--net {str(run_dir)!r} not found; expected the directory of a `fovea train stylenet` run")
    run = Run.existing(run_dir)
    try:
        info = run.read_json("model.json")
    except (FileNotFoundError, OSError):
        raise UserError(f"--net {str(run_dir)!r} has no model.json; is it a finished fovea run?") from None
    if info.get("task") != "stylenet":
        raise UserError(f"--net {str(run_dir)!r} is a {info.get('task')!r} run; expected a stylenet run "
                        f"(fovea train stylenet)")
    weights = run.path / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"{str(weights)!r} not found; is {str(run_dir)!r} a finished fovea run?")
    model = fovea.create_model("stylenet", **dict(info.get("model_kwargs") or {}))
    model.load_state_dict(load_file(str(weights)))
    return model.to(device).eval(), info


@torch.no_grad()
def stylize_image(model: nn.Module, image: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """A float (3, H, W) image or (N, 3, H, W) batch in [0, 1] (a grey (1, ...) one is repeated
    to RGB) through the network, ``batch`` images at a time; returns the same shape, RGB."""
    single = image.dim() == 3
    x = image[None] if single else image
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise UserError(f"Received an image of shape {tuple(image.shape)}; expected (1 or 3, H, W).")
    device = next(model.parameters()).device
    x = x.expand(-1, 3, -1, -1)
    out = torch.cat([model(x[i:i + batch].to(device).float()).float().clamp(0, 1).cpu()
                     for i in range(0, len(x), batch)])
    return out[0] if single else out


@torch.no_grad()
def stylize_video(model: nn.Module, video: torch.Tensor, batch: int = 4) -> torch.Tensor:
    """A uint8 (3, T, H, W) video stylized frame by frame -> uint8 (3, T, H, W)."""
    frames = video.permute(1, 0, 2, 3)  # (T, 3, H, W)
    out = torch.cat([stylize_image(model, frames[i:i + batch].float().div(255), batch)
                     for i in range(0, len(frames), batch)])
    return out.mul(255).round().to(torch.uint8).permute(1, 0, 2, 3).contiguous()


def _video_fps(path: Path) -> float:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()
    return float(fps) if fps and math.isfinite(fps) and 0 < fps <= 1000 else 25.0


def _write_image(image: torch.Tensor, path: Path) -> Path:
    from PIL import Image

    from fovea.train.checkpoint import atomic_write

    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
           ".webp": "WEBP"}[path.suffix.lower()]
    pixels = image.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return atomic_write(path, lambda f: Image.fromarray(pixels).save(f, format=fmt))


def _kind(path: Path) -> str:
    from fovea.data.decode import IMAGE_EXTENSIONS
    from fovea.data.video import VIDEO_EXTENSIONS

    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return "unknown"


def _resize_longest(x: torch.Tensor, longest: int | None) -> torch.Tensor:
    """(N, C, H, W) float resized so its longer side is ``longest`` (None: unchanged)."""
    if longest is None:
        return x
    h, w = x.shape[-2:]
    s = longest / max(h, w)
    return F.interpolate(x, size=(max(4, round(h * s)), max(4, round(w * s))), mode="bilinear",
                         antialias=s < 1, align_corners=False).clamp(0, 1)


def stylize_inputs(run: str | Path, inputs: Sequence[str | Path], out: str | Path, *, size: int | None = None,
                   device: str | torch.device = "cpu", batch: int = 4,
                   log: Callable[[str], None] | None = print) -> list[Path]:
    """Stylize images and videos with the network of a ``stylenet`` run (``fovea stylize --net
    RUN INPUT... --out OUT``).

    Images (:data:`fovea.data.decode.IMAGE_EXTENSIONS`) give stylized images; videos
    (:data:`fovea.data.video.VIDEO_EXTENSIONS`) give videos stylized frame by frame at the same
    frame rate. ``out``: with one input, a file name (an image suffix for an image, .mp4/.avi/...
    for a video) or a folder; with several, a folder (made if missing) that receives
    ``<stem>-stylized<suffix>`` for each (a video keeps its suffix when OpenCV can write it, else
    becomes .mp4). ``size``: resize each input so its longer side has this many pixels first.
    Every output is written atomically. Returns the written paths; ``log`` gets one line each.
    """
    from fovea.data.decode import BadImageError, load_image
    from fovea.data.video import read_video, write_video

    if not inputs:
        raise UserError("no input given; expected images or videos to stylize")
    if size is not None and (not isinstance(size, int) or size < 4):
        raise UserError(f"--size {size!r}: expected the longer side in pixels, at least 4")
    paths = [Path(p) for p in inputs]
    for p in paths:  # check every input before the (slow) work starts
        if not p.is_file():
            raise UserError(f"input {str(p)!r} not found; expected an image or a video file")
        if _kind(p) == "unknown":
            raise UserError(f"input {str(p)!r}: expected an image (.png, .jpg, ...) or a video (.mp4, .avi, ...)")
    out = Path(out)
    single_file = len(paths) == 1 and out.suffix != "" and not out.is_dir()
    if single_file:
        want = _kind(out)
        if want != _kind(paths[0]):
            expected = ("an image file name (.png, .jpg)" if _kind(paths[0]) == "image"
                        else "a video file name (.mp4, .avi)")
            raise UserError(f"--out {str(out)!r}: {str(paths[0])!r} is a{'n' if _kind(paths[0]) == 'image' else ''} "
                            f"{_kind(paths[0])}; expected {expected} or a folder")
        if not out.parent.is_dir():
            raise UserError(f"--out {str(out)!r}: folder {str(out.parent)!r} not found")
    elif out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; with {len(paths)} inputs expected a folder")
    model, info = load_stylenet(run, device)
    written = []
    for p in paths:
        kind = _kind(p)
        if single_file:
            target = out
        else:
            suffix = p.suffix.lower() if kind == "image" or p.suffix.lower() in (".mp4", ".avi", ".m4v", ".mov",
                                                                                  ".mkv") else ".mp4"
            target = out / f"{p.stem}-stylized{suffix}"
            out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if kind == "image":
            try:
                image = load_image(p, channels=3).float().div(255)
            except BadImageError as e:
                raise UserError(str(e)) from None
            result = stylize_image(model, _resize_longest(image[None], size)[0], batch)
            _write_image(result, target)
            what = f"{result.shape[-1]}x{result.shape[-2]}"
        else:
            video = read_video(p)
            if size is not None:
                video = _resize_longest(video.permute(1, 0, 2, 3).float().div(255), size).mul(255).round() \
                    .to(torch.uint8).permute(1, 0, 2, 3)
            result = stylize_video(model, video, batch)
            write_video(target, result, fps=_video_fps(p))
            what = f"{result.shape[1]} frames of {result.shape[-1]}x{result.shape[-2]}"
        written.append(target)
        if log is not None:
            log(f"{p}: {what} stylized ({info.get('style')}) in {time.perf_counter() - t0:.2f}s: {target}")
    return written
