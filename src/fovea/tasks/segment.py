"""Semantic segmentation: a class for every pixel, with FCN-32s/16s/8s or U-Net (valid or same
padding) trained by pixel-wise cross-entropy; pixel accuracy, mean IoU and Dice while training;
per-class IoU, Dice and boundary F-score, and overlays of the predictions, in the report.

Data (``--data``):

- ``shapes[:TRAIN[:VAL[:TEST]]]``: the built-in synthetic set (:mod:`fovea.data.shapes`), 2000 /
  200 / 200 images of ``--image-size`` (default 64) pixels, generated from ``--seed``;
- a folder of images and masks (:func:`fovea.data.masks.load_segmentation`: VOC-style
  ``JPEGImages/`` + ``SegmentationClass/`` or plain ``images/`` + ``masks/``), with
  ``--num-classes``; without a val split, ``--val-fraction`` of train is held out.

Every model maps an image of any size to scores of that size (:class:`Segmenter`): FCN pads and
crops itself; a same-padding U-Net gets its input mirror-padded to a multiple of 2^depth and its
output cropped back; a valid-padding U-Net gets its input mirror-padded by its margin, as the
paper's overlap-tile strategy does at the image borders, so that the loss covers every pixel of
the image and training computes exactly what :func:`fovea.models.unet.overlap_tile_predict`
computes at inference.

``--loss ce`` is cross-entropy averaged over the pixels whose target is not the ignore index
(255); ``--loss unet-weighted`` weights each pixel by U-Net's map (class balance plus
``w0 = 10``, ``sigma = 5`` borders between touching objects, :func:`unet_weight_map`) computed
from the instance maps (``shapes`` draws them; for a folder, connected components of each class).
"""

from __future__ import annotations

import html
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fovea.data.masks import IGNORE_INDEX
from fovea.errors import UserError
from fovea.tasks.base import Task, register_task

SHAPES_COUNTS = (2000, 200, 200)  # train, val, test images of `--data shapes`
SHAPES_SIZE = 64
LOSSES = ("ce", "unet-weighted")
JOINT_OPS = ("hflip", "vflip", "rotate")  # moved with the mask
PHOTOMETRIC_OPS = ("jitter", "noise")  # image only
DEFAULT_ROTATE = 10.0  # degrees, for a bare "rotate"
_INSTANCE_SHIFT = 256  # instance id * 256 + class id: one integer map through joint_augment


# ---------------------------------------------------------------------------- the model


def _unet_cfg(net: nn.Module):
    from fovea.models.unet import UNetConfig

    cfg = getattr(net, "cfg", None)
    return cfg if isinstance(cfg, UNetConfig) else None


def valid_unet_plan(net: nn.Module, h: int, w: int) -> tuple[tuple[int, int, int, int], int]:
    """Mirror pads (top, bottom, left, right) that make an h x w image a valid input of a
    valid-padding U-Net whose output covers the whole image, and the row/column offset of the
    image's first pixel in that output. The top/left pad puts the input's origin on the
    2^depth grid of the image, as overlap_tile_predict's tiles, so both give the same scores."""
    from fovea.models.unet import valid_input_size

    cfg = _unet_cfg(net)
    g, m = 2**cfg.depth, net.margin
    shift = (-m) % g
    before = m + shift
    bottom = valid_input_size(h + before + m, cfg.depth) - h - before
    right = valid_input_size(w + before + m, cfg.depth) - w - before
    return (before, bottom, before, right), shift


def full_size_scores(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, K, H, W) scores of ``net`` for an (N, C, H, W) input of any size (see the module
    docstring for how each family gets there)."""
    from fovea.models.unet import mirror_pad

    cfg = _unet_cfg(net)
    if cfg is None:  # FCN: exact input size by construction
        return net(x)
    h, w = x.shape[-2:]
    if cfg.padding == "valid":
        (top, bottom, left, right), shift = valid_unet_plan(net, h, w)
        return net(mirror_pad(x, top, bottom, left, right))[..., shift:shift + h, shift:shift + w]
    g = 2**cfg.depth
    pad_h, pad_w = (-h) % g, (-w) % g
    if pad_h or pad_w:
        return net(mirror_pad(x, 0, pad_h, 0, pad_w))[..., :h, :w]
    return net(x)


class Segmenter(nn.Module):
    """A segmentation network with its fitted pre-processing in front: images in [0, 1] of any
    size in, (N, num_classes, H, W) scores of the same size out."""

    def __init__(self, net: nn.Module, preprocess: nn.Module):
        super().__init__()
        self.preprocess = preprocess
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return full_size_scores(self.net, self.preprocess(x))


@torch.no_grad()
def predict_scores(model: Segmenter, images: torch.Tensor, tile: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Scores for an (N, C, H, W) float batch in [0, 1]. A valid U-Net goes through
    overlap_tile_predict in tiles of side ``tile`` (memory bounded; the same scores as one pass)."""
    from fovea.models.unet import overlap_tile_predict

    cfg = _unet_cfg(model.net)
    if cfg is not None and cfg.padding == "valid" and tile is not None:
        return overlap_tile_predict(model.net, model.preprocess(images), tile)
    return model(images)


def _fcn_backbone(init: str | None):
    """``--init`` for an FCN: "torchvision", a fovea VGG-16 classifier run, or a weights file of a
    VGG-16 state dict (fovea's ``net.`` prefix is stripped)."""
    from fovea.models.weights import read_weights_file

    if init is None or init == "torchvision":
        return init
    p = Path(init)
    if p.is_dir():
        from fovea.train.run import Run

        info = Run.existing(p).read_json("model.json")
        if info.get("task") != "classify" or not str(info.get("model", "")).startswith("vgg16"):
            raise UserError(f"--init {init!r} is a {info.get('task')!r} run of {info.get('model')!r}; expected a "
                            f"classify run of vgg16 or vgg16_bn for an FCN backbone")
        p = p / "model.safetensors"
    elif not p.is_file():
        raise UserError(f"--init {init!r} is neither 'torchvision', a fovea VGG-16 run directory nor a weights file")
    state = read_weights_file(p)
    if any(k.startswith("net.") for k in state):
        state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    return state


def build_net(name: str, num_classes: int, in_channels: int, model_kwargs: dict | None = None,
              backbone=None) -> nn.Module:
    from fovea.models.segmenters import build_segmenter

    kwargs = dict(model_kwargs or {})
    if "backbone" in kwargs:
        raise UserError("--model-kwargs holds 'backbone'; give the backbone weights with --init instead")
    if backbone is not None:
        kwargs["backbone"] = backbone
    return build_segmenter(name, num_classes=num_classes, in_channels=in_channels, **kwargs)


# ---------------------------------------------------------------------------- data


def parse_shapes_spec(spec: str) -> tuple[int, int, int] | None:
    """``shapes`` -> the default counts; ``shapes:TRAIN[:VAL[:TEST]]`` -> those; else None."""
    name, *counts = spec.split(":")
    if name != "shapes":
        return None
    try:
        values = [int(c) for c in counts]
    except ValueError:
        values = []
    if len(counts) > 3 or (counts and (len(values) != len(counts) or values[0] < 1 or min(values) < 0)):
        raise UserError(f"--data {spec!r}: expected shapes or shapes:TRAIN[:VAL[:TEST]] with TRAIN >= 1 "
                        f"and VAL, TEST >= 0 image counts")
    return tuple(values + list(SHAPES_COUNTS[len(values):]))


def _components(mask: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Instance ids of an (H, W) class mask: the connected components (8-connected) of each
    class >= 1, numbered 1, 2, ...; background and ignored pixels 0."""
    import numpy as np
    from scipy import ndimage

    m = mask.numpy()
    out = np.zeros(m.shape, dtype=np.int64)
    count = 0
    for c in np.unique(m):
        if c == 0 or c == ignore_index:
            continue
        lab, n = ndimage.label(m == c, structure=np.ones((3, 3)))
        out[lab > 0] = lab[lab > 0] + count
        count += n
    return torch.from_numpy(np.minimum(out, 255))  # ids above 255 merge: they would not fit the packing


def _labels(masks: torch.Tensor, instances: torch.Tensor | None) -> torch.Tensor:
    """The targets a split holds: (N, H, W) class ids, or (N, 2, H, W) class and instance ids."""
    return masks if instances is None else torch.stack([masks, instances], 1)


def load_shapes(cfg, counts: tuple[int, int, int], weighted: bool):
    from fovea.data.shapes import SHAPE_CLASSES, shapes_splits
    from fovea.data.sources import DataBundle, Split

    size = cfg.image_size or SHAPES_SIZE
    sets = shapes_splits(*counts, size=size, seed=cfg.seed)
    splits = {name: Split(d.images, _labels(d.masks, d.instances if weighted else None)) for name, d in sets.items()}
    return DataBundle(name="shapes", train=splits["train"], val=splits.get("val"), test=splits.get("test"),
                      classes=list(SHAPE_CLASSES), in_channels=3, image_size=(size, size))


def load_folder(cfg, weighted: bool):
    from fovea.data.masks import load_segmentation
    from fovea.data.sources import DataBundle, Split

    root = Path(cfg.data)
    if not root.is_dir():
        raise UserError(f"--data {cfg.data!r}: expected shapes[:TRAIN[:VAL[:TEST]]] or a folder with "
                        f"JPEGImages/ + SegmentationClass/ or images/ + masks/")
    if cfg.num_classes is None:
        raise UserError(f"--data {cfg.data!r} is a mask folder: give --num-classes (class ids 0..N-1 in the masks)")
    if cfg.num_classes < 2:
        raise UserError(f"--num-classes {cfg.num_classes}: expected at least 2 (background and one class)")
    size = (cfg.image_size, cfg.image_size) if cfg.image_size else None
    loaded = load_segmentation(root, cfg.num_classes, size=size)
    if "train" not in loaded or len(loaded["train"]) == 0:
        raise UserError(f"--data {cfg.data!r} has no training images; expected a train split "
                        f"(ImageSets/Segmentation/train.txt, train/images/, or images/ at the top)")
    sizes = {tuple(m.shape) for s in loaded.values() for m in s.masks}
    if len(sizes) > 1:
        raise UserError(f"--data {cfg.data!r} holds images of {len(sizes)} sizes ({sorted(sizes)[:3]}); "
                        f"give --image-size to resize them all to one")
    splits = {}
    for name, s in loaded.items():
        if len(s) == 0:
            continue
        images, masks = s.stacked()
        instances = torch.stack([_components(m) for m in masks]) if weighted else None
        splits[name] = Split(images, _labels(masks, instances), paths=s.image_paths)
    if "val" not in splits and cfg.val_fraction > 0 and len(splits["train"]) >= 2:
        train = splits["train"]
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
        k = max(1, round(cfg.val_fraction * len(train)))
        take, keep = order[:k].sort().values, order[k:].sort().values
        splits["val"] = Split(train.images[take], train.labels[take], paths=[train.paths[i] for i in take])
        splits["train"] = Split(train.images[keep], train.labels[keep], paths=[train.paths[i] for i in keep])
    first = splits["train"].images
    return DataBundle(name=root.name, train=splits["train"], val=splits.get("val"), test=splits.get("test"),
                      classes=[str(i) for i in range(cfg.num_classes)], in_channels=first.shape[1],
                      image_size=tuple(first.shape[-2:]))


# ---------------------------------------------------------------------------- augmentation


def parse_augment(spec: str | None) -> tuple[dict, str | None]:
    """``--augment`` for segmentation: joint ops (hflip, vflip, rotate[:DEG]) as a dict, and the
    photometric ops (jitter, noise) as a BatchAugment spec for the image alone."""
    joint = dict(hflip=False, vflip=False, rotate=0.0)
    photometric = []
    for token in [t.strip() for t in (spec or "").split(",") if t.strip() and t.strip() != "none"]:
        name, _, arg = token.partition(":")
        if name in ("hflip", "vflip") and not arg:
            joint[name] = True
        elif name == "rotate":
            try:
                joint["rotate"] = float(arg) if arg else DEFAULT_ROTATE
            except ValueError:
                raise UserError(f"--augment {spec!r}: rotate:{arg} is not a number of degrees") from None
        elif name in PHOTOMETRIC_OPS:
            photometric.append(token)
        else:
            raise UserError(f"--augment {spec!r}: {token!r} does not move the mask with the image; segmentation "
                            f"takes {', '.join(JOINT_OPS)}[:DEG], {', '.join(PHOTOMETRIC_OPS)} (crops: --patch)")
    return joint, ",".join(photometric) or None


def pack_targets(y: torch.Tensor) -> torch.Tensor:
    """(N, H, W) class ids as they are; (N, 2, H, W) class and instance ids as one integer map
    instance * 256 + class, so one joint_augment call moves both (its ignore fill, 255, unpacks
    to class 255 and instance 0)."""
    return y if y.dim() == 3 else y[:, 1] * _INSTANCE_SHIFT + y[:, 0]


def unpack_targets(packed: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.dim() == 3:
        return packed
    return torch.stack([packed % _INSTANCE_SHIFT, packed // _INSTANCE_SHIFT], 1)


# ---------------------------------------------------------------------------- metrics


def pixel_sums(scores: torch.Tensor, target: torch.Tensor, num_classes: int,
               ignore_index: int = IGNORE_INDEX) -> dict[str, torch.Tensor]:
    """Per-batch sums: correct and counted pixels, and per class k the intersection
    ``|pred = k and true = k|`` and union ``|pred = k or true = k|`` over pixels whose target is
    not ``ignore_index`` (the confusion matrix's TP_k and TP_k + FP_k + FN_k)."""
    k = num_classes
    pred = scores.argmax(1)
    valid = target != ignore_index
    # one bincount of the confusion matrix; ignored pixels fall in an extra last bin
    index = torch.where(valid, target * k + pred, torch.full_like(target, k * k))
    cm = torch.bincount(index.flatten(), minlength=k * k + 1)[:k * k].view(k, k)
    inter = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - inter
    out = dict(correct=inter.sum(), pixels=cm.sum())
    for c in range(k):
        out[f"inter_{c}"], out[f"union_{c}"] = inter[c], union[c]
    return out


def summarize_sums(means: dict[str, float]) -> dict[str, float]:
    """Pixel accuracy (``acc``), mean IoU and mean Dice from the (equally scaled) sums of
    :func:`pixel_sums`; classes that occur in neither target nor prediction are left out, as
    :class:`fovea.apps.segmentation_metrics.SegmentationMetrics` does. Dice_k = 2 I / (I + U)."""
    out = {k: v for k, v in means.items()
           if not (k.startswith("inter_") or k.startswith("union_") or k in ("correct", "pixels"))}
    if "pixels" not in means:
        return out
    out["acc"] = means["correct"] / means["pixels"] if means["pixels"] > 0 else float("nan")
    ious, dices = [], []
    c = 0
    while f"inter_{c}" in means:
        i, u = means[f"inter_{c}"], means[f"union_{c}"]
        if u > 0:
            ious.append(i / u)
            dices.append(2 * i / (i + u))
        c += 1
    out["miou"] = sum(ious) / len(ious) if ious else float("nan")
    out["dice"] = sum(dices) / len(dices) if dices else float("nan")
    return out


# ---------------------------------------------------------------------------- the task


@register_task
class Segment(Task):
    name = "segment"
    monitor = "miou"
    monitor_mode = "max"
    metric_columns = ("miou", "dice")

    def load_data(self, cfg):
        if cfg.loss not in LOSSES:
            raise UserError(f"--loss {cfg.loss!r}: segmentation takes {', '.join(LOSSES)}")
        weighted = cfg.loss == "unet-weighted"
        counts = parse_shapes_spec(cfg.data)
        return load_shapes(cfg, counts, weighted) if counts else load_folder(cfg, weighted)

    def build_model(self, cfg, data, image_size):
        from fovea.data.transforms import BatchAugment, Preprocess

        if cfg.preprocess not in ("none", "zscore"):
            raise UserError(f"--preprocess {cfg.preprocess!r}: segmentation takes images of any size; "
                            f"expected none or zscore (per channel)")
        self.num_classes = len(data.classes)
        self.weighted = cfg.loss == "unet-weighted"
        self.joint, photometric = parse_augment(cfg.augment)
        self.photometric = BatchAugment(photometric) if photometric else None
        if cfg.patch is not None and not 1 <= cfg.patch <= min(image_size):
            raise UserError(f"--patch {cfg.patch}: expected a crop side in 1..{min(image_size)} "
                            f"(the images are {image_size[0]}x{image_size[1]})")
        self.patch = cfg.patch
        self.model_name, self.model_kwargs = cfg.model, dict(cfg.model_kwargs)
        backbone = None
        if cfg.init is not None:
            if not cfg.model.startswith("fcn"):
                raise UserError(f"--init {cfg.init!r}: backbone weights load into FCN (a VGG-16), not {cfg.model!r}")
            backbone = _fcn_backbone(cfg.init)
        net = build_net(cfg.model, self.num_classes, data.in_channels, self.model_kwargs, backbone)
        return Segmenter(net, Preprocess(cfg.preprocess))

    def augment_batch(self, augment, x, y, generator):
        from fovea.data.masks import joint_augment

        j = self.joint
        if self.patch is None and not (j["hflip"] or j["vflip"] or j["rotate"]):
            packed = None
        else:
            x, packed = joint_augment(x, pack_targets(y), generator, crop=self.patch, hflip=j["hflip"],
                                      rotate=j["rotate"])
            if j["vflip"]:
                u = torch.rand(len(x), generator=generator, device=generator.device).to(x.device)
                flip = u < 0.5
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-2), x)
                packed = torch.where(flip.view(-1, 1, 1), packed.flip(-2), packed)
            y = unpack_targets(packed, y)
        if self.photometric is not None:
            x = self.photometric.to(x.device)(x, generator=generator)
        return x, y

    def loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the non-ignored pixels; U-Net's weighted sum for unet-weighted."""
        target = y if y.dim() == 3 else y[:, 0]
        scores = scores.float()
        if not self.weighted:
            return F.cross_entropy(scores, target, ignore_index=IGNORE_INDEX)
        from fovea.models.unet import unet_weight_map

        inst = y[:, 1].cpu()
        weights = torch.stack([unet_weight_map(m, w0=10.0, sigma=5.0) for m in inst]).to(scores.device)
        per_pixel = F.cross_entropy(scores, target, ignore_index=IGNORE_INDEX, reduction="none")
        valid = (target != IGNORE_INDEX).sum().clamp(min=1)
        return (per_pixel * weights).sum() / valid

    def training_step(self, model, x, y):
        scores = model(x)
        loss = self.loss(scores, y)
        target = y if y.dim() == 3 else y[:, 0]
        n = len(y)
        return loss, dict(loss=loss.detach() * n, **pixel_sums(scores.detach(), target, self.num_classes), count=n)

    def eval_step(self, model, x, y):
        scores = model(x)
        target = y if y.dim() == 3 else y[:, 0]
        n = len(y)
        return dict(loss=self.loss(scores, y) * n, **pixel_sums(scores, target, self.num_classes), count=n)

    def summarize(self, means):
        return summarize_sums(means)

    def export_info(self, cfg, data, image_size):
        info = dict(model=self.model_name, model_kwargs=self.model_kwargs, num_classes=self.num_classes,
                    classes=list(data.classes), in_channels=data.in_channels, image_size=list(image_size),
                    preprocess=cfg.preprocess, palette="voc", ignore_index=IGNORE_INDEX, loss=cfg.loss,
                    data=cfg.data)
        return info

    def report(self, run, model, data, batches_for):
        from fovea.report.html import write_report
        from fovea.report.plots import plot_curves

        plot_curves(run.metrics_path, run.plots)
        split_name, split = ("test", data.test) if data.test is not None else ("val", data.val)
        out: dict = {}
        sections = []
        if split is not None:
            metrics, shown = evaluate_split(model, batches_for(split), self.num_classes)
            out["segmentation"] = dict(split=split_name, **metrics_json(metrics, data.classes))
            run.write_json("segmentation.json", out["segmentation"])
            plot_overlays(*shown, run.plots / "overlays.png",
                          title=f"{split_name} images; colours: {colour_legend(data.classes)}")
            sections.append((f"Per-class scores ({split_name})", metrics_html(out["segmentation"])))
        write_report(run.path, title=f"fovea segment: {run.path.name}", sections=sections)
        return out


# ---------------------------------------------------------------------------- evaluation and report


@torch.no_grad()
def evaluate_split(model: nn.Module, batches, num_classes: int, keep: int = 8, boundary: bool = True):
    """SegmentationMetrics (confusion matrix and BF score) over a split, and the first ``keep``
    (images, true masks, predicted masks) to show."""
    from fovea.apps.segmentation_metrics import SegmentationMetrics

    model.eval()
    metrics = SegmentationMetrics(num_classes, boundary=boundary)
    images, truths, preds = [], [], []
    for xb, yb, _ in batches.epoch(0):
        target = (yb if yb.dim() == 3 else yb[:, 0]).cpu()
        pred = model(xb.float().div(255)).float().argmax(1).cpu()
        metrics.update(pred, target)
        if sum(len(t) for t in images) < keep:
            images.append(xb.cpu())
            truths.append(target)
            preds.append(pred)
    shown = tuple(torch.cat(v)[:keep] for v in (images, truths, preds))
    return metrics, shown


def metrics_json(metrics, classes) -> dict:
    """SegmentationMetrics.compute() as plain numbers: means and one row per class."""
    r = metrics.compute()
    num = lambda v: None if v != v else float(v)  # noqa: E731 - NaN (absent class) -> null
    rows = [dict(cls=str(c), iou=num(float(r["iou"][i])), dice=num(float(r["dice"][i])),
                 **({"bf": num(float(r["bf"][i]))} if "bf" in r else {}))
            for i, c in enumerate(classes)]
    out = dict(pixel_accuracy=r["pixel_accuracy"], miou=r["miou"], dice=r["mdice"], per_class=rows)
    if "mbf" in r:
        out["bf"] = r["mbf"]
    return out


def metrics_html(m: dict) -> str:
    fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    has_bf = "bf" in m
    head = "<tr><th>class</th><th>IoU</th><th>Dice</th>" + ("<th>BF</th>" if has_bf else "") + "</tr>"
    rows = [f"<tr><td>{html.escape(r['cls'])}</td><td>{fmt(r['iou'])}</td><td>{fmt(r['dice'])}</td>"
            + (f"<td>{fmt(r['bf'])}</td>" if has_bf else "") + "</tr>" for r in m["per_class"]]
    rows.append(f"<tr><th>mean</th><th>{fmt(m['miou'])}</th><th>{fmt(m['dice'])}</th>"
                + (f"<th>{fmt(m['bf'])}</th>" if has_bf else "") + "</tr>")
    return (f"<p>pixel accuracy {m['pixel_accuracy']:.4f}; means over the classes that occur; BF: boundary "
            f"F1 score (Csurka et al. 2013), tolerance 0.75% of the image diagonal.</p>"
            f"<table>{head}{''.join(rows)}</table>")


def colour_masks(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) class ids as (N, 3, H, W) uint8 pictures in VOC's colours."""
    from fovea.data.masks import voc_palette

    return torch.from_numpy(voc_palette(256))[masks.clamp(0, 255).long()].permute(0, 3, 1, 2).contiguous()


_COLOUR_NAMES = {"#800000": "maroon", "#008000": "green", "#808000": "olive", "#000080": "navy",
                 "#800080": "purple", "#008080": "teal", "#808080": "grey"}  # VOC's colours 1-7 (HTML names)


def colour_legend(classes) -> str:
    """"ellipse maroon, rectangle green, ..." for a figure's caption: which colour is which class
    (class 0, the background, is black)."""
    from fovea.data.masks import voc_palette

    pal = voc_palette(256)
    hexes = ["#%02x%02x%02x" % tuple(int(v) for v in pal[i]) for i in range(len(classes))]
    return ", ".join(f"{c} {_COLOUR_NAMES.get(hexes[i], hexes[i])}" for i, c in enumerate(classes) if i)


def plot_overlays(images: torch.Tensor, truths: torch.Tensor, preds: torch.Tensor, path: Path,
                  title: str | None = None) -> Path:
    """Four rows: the images, the true masks, the predicted masks (VOC colours, background
    black) and the predictions drawn over the images."""
    from fovea.data.masks import overlay_mask
    from fovea.report.plots import plot_image_grid

    n = len(images)
    rgb = images if images.shape[1] == 3 else images.repeat(1, 3, 1, 1)
    over = torch.stack([torch.from_numpy(overlay_mask(images[i], preds[i], alpha=0.6)).permute(2, 0, 1)
                        for i in range(n)]) if n else rgb
    titles = ["image"] * n + ["truth"] * n + ["prediction"] * n + ["over the image"] * n
    return plot_image_grid(torch.cat([rgb, colour_masks(truths), colour_masks(preds), over]), titles, path,
                           ncols=max(n, 1), title=title)


def load_segmenter(run_dir: str | Path, device="cpu") -> tuple[Segmenter, dict]:
    """The trained model of a segmentation run (model.safetensors + model.json), in eval mode."""
    from fovea.data.transforms import Preprocess
    from fovea.train.run import Run

    run = Run.existing(run_dir)
    info = run.read_json("model.json")
    if info.get("task") != "segment":
        raise UserError(f"run {str(run.path)!r} is a {info.get('task')!r} run, not a segmentation run")
    net = build_net(info["model"], info["num_classes"], info["in_channels"], info.get("model_kwargs"))
    model = Segmenter(net, Preprocess(info.get("preprocess", "none")))
    run.load_weights(model)
    return model.to(device).eval(), info


def inference_tile(model: Segmenter, info: dict) -> tuple[int, int] | None:
    """The tile (height, width) a valid U-Net segments images with: the input it trained on."""
    cfg = _unet_cfg(model.net)
    if cfg is None or cfg.padding != "valid":
        return None
    h, w = info["image_size"]
    (top, bottom, left, right), _ = valid_unet_plan(model.net, h, w)
    return h + top + bottom, w + left + right


__all__ = ["LOSSES", "SHAPES_COUNTS", "Segment", "Segmenter", "colour_legend", "colour_masks", "evaluate_split",
           "full_size_scores", "inference_tile", "load_segmenter", "metrics_json", "parse_augment", "parse_shapes_spec",
           "pixel_sums", "plot_overlays", "predict_scores", "summarize_sums", "valid_unet_plan"]
