"""Plots of a run: learning curves, confusion matrices and image grids, written as PNG files.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas attached directly, so
plotting never touches pyplot or the user's interactive backend and works headless.

``metrics.csv`` has one row per logged point with the columns ``epoch``, ``step``, ``split``
("train", "val", "test", ...) and any metric columns (``loss``, ``acc``, ``lr``, ...); a value a
row did not log is an empty cell.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from fovea.errors import UserError

# Columns that place a point rather than measure the model. Wall-clock time and throughput are
# bookkeeping too: worth a table cell, not a learning curve.
INDEX_COLUMNS = ("epoch", "step", "split")
NOT_PLOTTED = frozenset(INDEX_COLUMNS) | {"time_s", "images_per_s"}
# Rows without a split were logged while training.
DEFAULT_SPLIT = "train"
SPLIT_ORDER = ("train", "val", "test")
# Same colour for a split in every plot of a run.
SPLIT_COLORS = {"train": "C0", "val": "C1", "test": "C2"}
# Above this many classes the cells get too small to hold a number.
MAX_ANNOTATED_CLASSES = 20


class ReportError(UserError, ValueError):
    """Input the report layer cannot draw: a missing metrics file, a bad array shape."""


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


def _text(s: object) -> str:
    """Literal text for matplotlib: a lone '$' would otherwise start math mode."""
    return str(s).replace("$", r"\$")


def _parse(value: str | None) -> int | float | str | None:
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def read_metrics(path: str | Path) -> dict[str, list[dict]]:
    """Rows of a ``metrics.csv`` grouped by their ``split``, in file order.

    Cells are parsed to ``int`` when they hold an integer, else ``float`` when they hold a
    number, else kept as text; empty cells become ``None``. Rows with no split go under
    ``"train"``.
    """
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"Metrics file not found: '{path}'. Expected the metrics.csv of a training run.")
    grouped: dict[str, list[dict]] = {}
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            row = {k: _parse(v) for k, v in raw.items() if k is not None}
            split = row.get("split")
            split = DEFAULT_SPLIT if split is None else str(split)
            row["split"] = split
            grouped.setdefault(split, []).append(row)
    return grouped


def ordered_splits(splits: Sequence[str]) -> list[str]:
    """Splits in reading order: train, val, test, then any others by name."""
    known = [s for s in SPLIT_ORDER if s in splits]
    return known + sorted(s for s in splits if s not in SPLIT_ORDER)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _series(rows: list[dict], x_key: str, y_key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        x, y = row.get(x_key), row.get(y_key)
        if _is_number(x) and _is_number(y):
            xs.append(x)
            ys.append(y)
    return xs, ys


def _metric_columns(metrics: dict[str, list[dict]]) -> list[str]:
    """Numeric columns worth a curve, in first-seen order, ``loss`` first."""
    columns: dict[str, None] = {}
    for rows in metrics.values():
        for row in rows:
            for k, v in row.items():
                if k not in NOT_PLOTTED and _is_number(v):
                    columns[k] = None
    names = list(columns)
    if "loss" in names:
        names.remove("loss")
        names.insert(0, "loss")
    return names


def _safe_filename(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return cleaned or "metric"


def plot_curves(metrics_csv: str | Path, out_dir: str | Path) -> list[Path]:
    """Learning curves from a ``metrics.csv``: one PNG per metric, every split that logged it.

    Writes ``loss.png`` (train and val loss), then ``<metric>.png`` for each other numeric
    column (``acc.png``, ``top5.png``, ``lr.png``, a GAN's ``loss_d.png``...), with epoch on
    the x axis (step when no row has an epoch). A trainer that logs within an epoch writes a
    fractional epoch (step / steps_per_epoch) so those points fall between the epoch marks.
    Splits with few points (validation, test) are drawn with markers. ``lr`` gets a log axis
    when it spans more than a factor of 10. Returns the written paths.
    """
    metrics = read_metrics(metrics_csv)
    out_dir = Path(out_dir)
    has_epoch = any(_is_number(r.get("epoch")) for rows in metrics.values() for r in rows)
    x_key = "epoch" if has_epoch else "step"
    written = []
    for name in _metric_columns(metrics):
        fig = _figure(6.0, 4.0)
        ax = fig.add_subplot()
        values: list[float] = []
        for split in ordered_splits(list(metrics)):
            xs, ys = _series(metrics[split], x_key, name)
            if not ys:
                continue
            values += ys
            sparse = len(ys) <= 50
            ax.plot(xs, ys, label=_text(split), color=SPLIT_COLORS.get(split),
                    marker="o" if sparse else None, markersize=3 if sparse else None, linewidth=1.2)
        if not values:  # the metric exists only in rows without an x position
            continue
        positive = [v for v in values if v > 0]
        if name == "lr" and len(positive) == len(values) and max(values) > 10 * min(values):
            ax.set_yscale("log")
        ax.set_xlabel(x_key)
        ax.set_ylabel(_text(name))
        ax.set_title(_text(name))
        ax.grid(True, alpha=0.3)
        ax.legend()
        written.append(_save(fig, out_dir / f"{_safe_filename(name)}.png"))
    return written


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()  # numpy has no bfloat16
    return np.asarray(x)


def plot_confusion(
    cm: np.ndarray | torch.Tensor,
    classes: Sequence[str],
    path: str | Path,
    normalize: bool = True,
) -> Path:
    """Confusion matrix as a heatmap: rows are true classes, columns predicted classes.

    With ``normalize`` the colours show each row divided by its sum (per-class recall on the
    diagonal), so rare classes are as readable as common ones. The cells hold the raw counts
    when there are at most 20 classes.
    """
    counts = _as_numpy(cm).astype(np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ReportError(
            f"Received a confusion matrix of shape {tuple(counts.shape)}, expected a square (K, K) matrix."
        )
    k = counts.shape[0]
    if len(classes) != k:
        raise ReportError(f"Received {len(classes)} class names for a {k}x{k} confusion matrix; expected {k}.")
    if normalize:
        sums = counts.sum(axis=1, keepdims=True)
        shown = np.divide(counts, sums, out=np.zeros_like(counts), where=sums > 0)
        vmax = 1.0
    else:
        shown = counts
        vmax = max(float(counts.max()), 1.0) if k else 1.0

    side = min(max(4.0, 0.45 * k + 2.0), 30.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class" if normalize else "count")
    labels = [_text(c) for c in classes]
    ax.set_xticks(range(k), labels, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix" + (" (row-normalized)" if normalize else ""))
    if k <= MAX_ANNOTATED_CLASSES:
        integral = np.allclose(counts, np.round(counts))
        for i in range(k):
            for j in range(k):
                text = f"{int(round(counts[i, j]))}" if integral else f"{counts[i, j]:.3g}"
                color = "white" if shown[i, j] > 0.5 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=8)
    return _save(fig, path)


def _to_hwc_float(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """(N, C, H, W) uint8 or float in [0, 1] (or (N, H, W)) -> (N, H, W, C) float in [0, 1]."""
    arr = _as_numpy(images)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ReportError(f"Received images of shape {tuple(arr.shape)}, expected (N, C, H, W) with C = 1 or 3.")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    else:
        arr = np.clip(arr.astype(np.float32), 0.0, 1.0)
    return arr.transpose(0, 2, 3, 1)


def plot_image_grid(
    images: np.ndarray | torch.Tensor,
    titles: Sequence[str] | None,
    path: str | Path,
    ncols: int = 8,
    title: str | None = None,
) -> Path:
    """Images in a grid with a caption under each: misclassified examples ("7 -> 1 (p=0.93)"),
    reconstructions, samples.

    ``images`` is (N, C, H, W) with C = 1 (drawn in grey) or 3, either uint8 or float in
    [0, 1] (values outside are clipped). ``titles`` holds one caption per image, or is empty.
    With no images the file still gets written, saying so, so a report never lacks a plot
    because a model made no mistakes.
    """
    if ncols < 1:
        raise ReportError(f"Received ncols={ncols}, expected a positive number of columns.")
    arr = _to_hwc_float(images)
    n = arr.shape[0]
    titles = list(titles or [])
    if titles and len(titles) != n:
        raise ReportError(f"Received {len(titles)} titles for {n} images; expected one title per image.")
    if n == 0:
        fig = _figure(4.0, 1.0)
        fig.text(0.5, 0.5, _text(f"{title}: no images") if title else "no images", ha="center", va="center")
        return _save(fig, path)

    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    h, w = arr.shape[1:3]
    cell = 1.6
    fig = _figure(cols * cell, rows * cell * h / w + (0.3 * rows if titles else 0.0))
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axis("off")
        if i >= n:
            continue
        if arr.shape[3] == 1:
            ax.imshow(arr[i, :, :, 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(arr[i], interpolation="nearest")
        if titles:
            ax.set_title(_text(titles[i]), fontsize=7)
    if title:
        fig.suptitle(_text(title))
    return _save(fig, path)


def save_image(img: np.ndarray | torch.Tensor, path: str | Path) -> Path:
    """One (C, H, W) image (C = 1 or 3, uint8 or float in [0, 1]) as a PNG at its own resolution."""
    arr = _as_numpy(img)
    if arr.ndim != 3:
        raise ReportError(f"Received an image of shape {tuple(arr.shape)}, expected (C, H, W).")
    hwc = _to_hwc_float(arr[None])[0]
    pixels = np.round(hwc * 255.0).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(path, format="PNG")
    return path
