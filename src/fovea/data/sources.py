"""Data sources: a dataset name or a path in, uint8 image tensors and int64 labels out.

``load_data(spec)`` understands

- built-in names (:data:`DATASETS`): ``digits`` (scikit-learn's bundled 8x8 digits,
  always offline) and the torchvision datasets ``mnist``, ``fashion-mnist``,
  ``cifar10``, ``cifar100``, ``svhn``, ``stl10``, read from the data root
  (:func:`data_root`), for Fashion-MNIST also from Debian's ``dataset-fashion-mnist``
  package, and otherwise downloaded;
- a folder with one subfolder per class, optionally inside ``train/``, ``val/`` and
  ``test/`` subfolders (class names sorted, numerically when all are integers);
- a ``.csv`` file with a ``path,label`` header (an optional ``split`` column holds
  ``train``/``val``/``test``), paths relative to the CSV's folder.

A name is taken as built-in before it is taken as a path; write ``./digits`` for a
folder called ``digits``. Paths that do not exist as given are also looked up under
the data root.

Images from files are decoded by :func:`fovea.data.decode.load_image`, held in memory
as one tensor when they fit in ``max_memory_bytes`` and otherwise served by a
streaming ``Dataset`` that decodes per item (usable from DataLoader workers).
"""

from __future__ import annotations

import csv
import difflib
import gzip
import math
import os
import re
import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fovea.data.decode import IMAGE_EXTENSIONS, BadImageError, ImageFileDataset, decode_images, probe_images
from fovea.errors import UserError

__all__ = ["DATASETS", "DataBundle", "Split", "ImageFileDataset", "data_root", "load_data", "stratified_split"]

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "stl10")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # from `apt-get install dataset-fashion-mnist`
DEFAULT_TEST_FRACTION = 0.2
MAX_DEFAULT_SIDE = 256  # the default image size is capped so that its long side is at most this
_SIZE_SAMPLE = 200  # images whose sizes vote for the default size
_SPLIT_DIRS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
_DIGIT_CLASSES = [str(i) for i in range(10)]


@dataclass
class Split:
    """One split: images as a uint8 ``(N, C, H, W)`` tensor, or a streaming ``dataset``."""

    images: torch.Tensor | None
    labels: torch.Tensor
    paths: list[str] | None = None
    dataset: torch.utils.data.Dataset | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DataBundle:
    """Everything a task needs to know about its data; every image is ``in_channels x image_size``."""

    name: str
    train: Split
    val: Split | None
    test: Split | None
    classes: list[str]
    in_channels: int
    image_size: tuple[int, int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    normal_classes: list[int] | None = None  # anomaly detection: train and val hold only these


def data_root() -> Path:
    """Where datasets are looked for and downloaded to: ``$FOVEA_DATA`` or ``~/.cache/fovea/data``."""
    return Path(os.environ.get("FOVEA_DATA") or "~/.cache/fovea/data").expanduser()


# ---------------------------------------------------------------------------- splitting


def stratified_split(labels, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(keep, take)``: ``take`` holds ``ceil(fraction * N)`` samples, each class in
    proportion to its size (largest remainders get the leftovers), and never a class's
    last sample, so every class stays in ``keep``. Both index arrays are sorted."""
    labels = np.asarray(labels)
    n = len(labels)
    n_take = math.ceil(fraction * n - 1e-9) if fraction > 0 else 0
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (n_take / max(n, 1))
    per_class = np.floor(quota).astype(np.int64)
    leftover = n_take - int(per_class.sum())
    per_class[np.argsort(-(quota - per_class), kind="stable")[:leftover]] += 1
    per_class = np.minimum(per_class, counts - 1)
    rng = np.random.default_rng(seed)
    take = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, per_class)]
    take = np.sort(np.concatenate(take)) if take else np.zeros(0, np.int64)
    keep = np.setdiff1d(np.arange(n), take)
    return keep, take


def _subset(split: Split, idx: np.ndarray) -> Split:
    index = torch.as_tensor(idx, dtype=torch.long)
    return Split(
        images=split.images[index] if split.images is not None else None,
        labels=split.labels[index],
        paths=[split.paths[i] for i in idx] if split.paths is not None else None,
    )


def _carve_val(train: Split, val_fraction: float, seed: int) -> tuple[Split, Split | None]:
    keep, take = stratified_split(train.labels.numpy(), val_fraction, seed)
    if len(take) == 0:
        return train, None
    return _subset(train, keep), _subset(train, take)


# ---------------------------------------------------------------------------- tensor conversion


def _convert_tensor(images: torch.Tensor, channels: int | None, size: tuple[int, int] | None) -> torch.Tensor:
    """Channel count and size of a built-in uint8 ``(N, C, H, W)`` tensor, in chunks to bound memory."""
    if channels is not None and channels != images.shape[1]:
        if channels == 3:
            images = images.expand(-1, 3, -1, -1)
        else:  # ITU-R 601-2 luma, as PIL's "L" conversion
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = torch.cat(
                [(c.float() * weights).sum(1, keepdim=True).round().to(torch.uint8) for c in images.split(4096)]
            )
    if size is not None and tuple(images.shape[-2:]) != tuple(size):
        images = torch.cat(
            [
                F.interpolate(c.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
                .round()
                .clamp(0, 255)
                .to(torch.uint8)
                for c in images.split(2048)
            ]
        )
    return images.contiguous()


# ---------------------------------------------------------------------------- built-in datasets


def _load_digits() -> tuple[dict[str, Split], list[str]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    labels = digits.target.astype(np.int64)
    # a fixed test set (random_state=0 whatever the seed), so runs with different seeds compare
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=DEFAULT_TEST_FRACTION, stratify=labels, random_state=0
    )
    splits = {
        "train": Split(torch.from_numpy(x_train), torch.from_numpy(y_train)),
        "test": Split(torch.from_numpy(x_test), torch.from_numpy(y_test)),
    }
    return splits, _DIGIT_CLASSES


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format: big-endian dims, then uint8 data), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of uint8 values (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != math.prod(shape):
        raise UserError(f"{path} is truncated: its header declares shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_folder(folder: Path) -> dict[str, Split] | None:
    """MNIST-format train/t10k files read in place (gzipped or not), or None if any is absent."""
    paths = {split: [_find_idx(folder, stem) for stem in stems] for split, stems in _IDX_FILES.items()}
    if any(p is None for pair in paths.values() for p in pair):
        return None
    splits = {}
    for split, (image_file, label_file) in paths.items():
        images, labels = _read_idx(image_file), _read_idx(label_file)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"{image_file} and {label_file} do not match: shapes {images.shape} and {labels.shape}")
        splits[split] = Split(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    return splits


# MNIST-format datasets: torchvision's folder name under the root, and class names
_IDX_DATASETS = {
    "mnist": ("MNIST", _DIGIT_CLASSES),
    "fashion-mnist": (
        "FashionMNIST",
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    ),
}


def _torchvision_spec(name: str):
    """(class, constructor kwargs per split, files to place, folder to place them in, relative to root)."""
    from torchvision import datasets as tvd

    if name in ("mnist", "fashion-mnist"):
        cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
        files = [f for f, _ in cls.resources]
        return cls, {"train": {"train": True}, "test": {"train": False}}, files, Path(cls.__name__) / "raw"
    if name in ("cifar10", "cifar100"):
        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        return cls, {"train": {"train": True}, "test": {"train": False}}, [cls.filename], Path()
    if name == "svhn":
        cls = tvd.SVHN
        files = ["train_32x32.mat", "test_32x32.mat"]
        return cls, {"train": {"split": "train"}, "test": {"split": "test"}}, files, Path()
    if name == "stl10":
        cls = tvd.STL10
        return cls, {"train": {"split": "train"}, "test": {"split": "test"}}, [cls.filename], Path()
    raise AssertionError(name)


def _download(cls, root: Path, kwargs: dict):
    """Build a torchvision dataset with download=True. A stalled connection fails after 60 s."""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(60)
    try:
        return cls(str(root), download=True, **kwargs)
    finally:
        socket.setdefaulttimeout(previous)


def _tensor_split(ds) -> Split:
    """A torchvision dataset's arrays as uint8 NCHW images and int64 labels."""
    data = ds.data if isinstance(ds.data, torch.Tensor) else torch.from_numpy(np.asarray(ds.data))
    if data.ndim == 3:  # MNIST family: N, H, W
        data = data.unsqueeze(1)
    elif data.shape[-1] == 3:  # CIFAR: N, H, W, C
        data = data.permute(0, 3, 1, 2)
    targets = getattr(ds, "targets", None)
    if targets is None:
        targets = ds.labels
    return Split(data.to(torch.uint8).contiguous(), torch.as_tensor(np.asarray(targets), dtype=torch.int64))


def _load_torchvision(name: str, root: Path) -> tuple[dict[str, Split], list[str]]:
    if name in _IDX_DATASETS:  # read in place, without importing torchvision (slow to import)
        folder_name, classes = _IDX_DATASETS[name]
        places = [root / folder_name / "raw"] + ([DEBIAN_FASHION_MNIST] if name == "fashion-mnist" else [])
        for folder in places:  # 1. fovea's data root, 2. Debian's package (Fashion-MNIST)
            splits = _load_idx_folder(folder)
            if splits is not None:
                return splits, classes
    cls, split_kwargs, files, subdir = _torchvision_spec(name)
    try:  # 1. already in fovea's data root
        datasets = {split: cls(str(root), download=False, **kw) for split, kw in split_kwargs.items()}
    except (RuntimeError, OSError):
        try:  # 3. download (or unpack an archive already placed in the root)
            datasets = {split: _download(cls, root, kw) for split, kw in split_kwargs.items()}
        except Exception as exc:  # URLError, timeouts, RuntimeError from mirrors, bad archives
            reason = re.sub(r"\s+", " ", f"{type(exc).__name__}: {exc}").strip()
            reason = reason if len(reason) <= 160 else reason[:157] + "..."
            where = root / subdir
            fashion = name == "fashion-mnist"
            debian = f" nor in {DEBIAN_FASHION_MNIST}" if fashion else ""
            make = "; or run `make data` to install Fashion-MNIST from Debian (dataset-fashion-mnist)"
            raise UserError(
                f"dataset {name!r} is not in {where}{debian} and could not be downloaded ({reason}): "
                f"put {', '.join(files)} in {where} (the data root is $FOVEA_DATA or ~/.cache/fovea/data)"
                + (make if fashion else "")
            ) from None
    splits = {split: _tensor_split(ds) for split, ds in datasets.items()}
    if name in _IDX_DATASETS:
        return splits, _IDX_DATASETS[name][1]
    classes = getattr(datasets["train"], "classes", None)
    return splits, list(classes) if classes and name != "svhn" else _DIGIT_CLASSES


# ---------------------------------------------------------------------------- files: listing


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _scan_class_folders(folder: Path, skipped: list) -> list[tuple[str, str]]:
    """(file, class name) for every image in ``folder/<class>/**``; empty class folders are noted."""
    entries = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            f
            for f in class_dir.rglob("*")
            if f.is_file()
            and _is_image_file(f)
            and not any(part.startswith(".") for part in f.relative_to(class_dir).parts)  # hidden files
        )
        if not files:
            skipped.append((str(class_dir), "empty class folder"))
        entries.extend((str(f), class_dir.name) for f in files)
    return entries


def _folder_entries(folder: Path, skipped: list) -> dict[str, list[tuple[str, str]]]:
    children = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    if "train" in children:
        entries = {}
        for split, names in _SPLIT_DIRS.items():
            sub = next((children[n] for n in names if n in children), None)
            if sub is not None:
                entries[split] = _scan_class_folders(sub, skipped)
        return entries
    entries = _scan_class_folders(folder, skipped)
    if not entries:
        loose = [p for p in folder.iterdir() if p.is_file() and _is_image_file(p)]
        if loose:
            raise UserError(
                f"{folder} holds {len(loose)} images but no class subfolders: "
                f"put each class's images in {folder}/<class name>/"
            )
    return {"train": entries}


def _csv_entries(csv_path: Path, skipped: list, on_bad_image: str) -> dict[str, list[tuple[str, str]]]:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        if "path" not in columns or "label" not in columns:
            raise UserError(
                f"{csv_path} must start with the header 'path,label' (optionally ',split'); "
                f"received columns {reader.fieldnames}"
            )
        entries: dict[str, list[tuple[str, str]]] = {}
        for line, row in enumerate(reader, start=2):
            path, label = (row.get(columns["path"]) or "").strip(), (row.get(columns["label"]) or "").strip()
            split = (row.get(columns["split"]) or "train").strip().lower() if "split" in columns else "train"
            split = next((s for s, names in _SPLIT_DIRS.items() if split in names), None)
            if not path or not label or split is None:
                skipped.append((f"{csv_path}:{line}", "row without a path, a label or a known split"))
                continue
            file = Path(path).expanduser()
            file = file if file.is_absolute() else csv_path.parent / file
            if not file.is_file():
                if on_bad_image == "fail":
                    raise BadImageError(file, f"file not found (listed on line {line} of {csv_path})")
                skipped.append((str(file), "file not found"))
                continue
            entries.setdefault(split, []).append((str(file), label))
    entries.setdefault("train", [])
    return entries


# ---------------------------------------------------------------------------- files: loading


def _sorted_classes(names) -> list[str]:
    """Class names in sorted order; numerically when all are integers ("2" before "10")."""
    names = list(names)
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


def _default_size(sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The most common (H, W) among the first images, shrunk so the long side is at most 256."""
    h, w = Counter(sizes[:_SIZE_SAMPLE]).most_common(1)[0][0]
    if max(h, w) > MAX_DEFAULT_SIDE:
        scale = MAX_DEFAULT_SIDE / max(h, w)
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
    return h, w


def _load_files(
    entries: dict[str, list[tuple[str, str]]],
    source: Path,
    skipped: list,
    *,
    image_size,
    channels,
    val_fraction,
    seed,
    on_bad_image,
    in_memory,
    max_memory_bytes,
) -> tuple[dict[str, Split], list[str], int, tuple[int, int]]:
    all_files = [f for split in entries.values() for f, _ in split]
    if not all_files:
        raise UserError(
            f"no images found in {source}: expected one subfolder per class holding "
            f"{', '.join(IMAGE_EXTENSIONS)} files (or train/, val/, test/ folders of those)"
        )
    probes = probe_images(all_files, on_bad_image, skipped)
    if not probes:
        path, reason = skipped[-1]
        raise UserError(f"none of the {len(all_files)} image files in {source} can be read; e.g. {path}: {reason}")
    classes = _sorted_classes({label for split in entries.values() for _, label in split})
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for name, items in entries.items():
        items = [(f, label) for f, label in items if f in probes]
        if items:
            labels = torch.tensor([index[label] for _, label in items], dtype=torch.int64)
            splits[name] = Split(None, labels, [f for f, _ in items])
    if "train" not in splits:
        raise UserError(f"no training images in {source}: the train split is empty or unreadable")
    if "test" not in splits and len(entries) == 1:
        keep, take = stratified_split(splits["train"].labels.numpy(), DEFAULT_TEST_FRACTION, seed)
        if len(take):
            splits["train"], splits["test"] = _subset(splits["train"], keep), _subset(splits["train"], take)
    if "val" not in splits and val_fraction > 0:
        splits["train"], val = _carve_val(splits["train"], val_fraction, seed)
        if val is not None:
            splits["val"] = val

    ordered = [probes[f] for f in all_files if f in probes]
    size = image_size or _default_size([hw for hw, _ in ordered])
    channels = channels or (3 if any(colour for _, colour in ordered) else 1)
    n = sum(len(s) for s in splits.values())
    if in_memory is None:
        in_memory = n * channels * size[0] * size[1] <= max_memory_bytes
    for name, split in splits.items():
        if in_memory:
            images, ok = decode_images(split.paths, channels, size, on_bad_image, skipped)
            if len(ok) < len(split):
                split = _subset(split, np.asarray(ok, dtype=np.int64))
            split.images = images
        else:
            split.dataset = ImageFileDataset(split.paths, split.labels.tolist(), channels, size, on_bad_image)
        splits[name] = split
    if len(splits["train"]) == 0:
        raise UserError(f"no training image in {source} could be decoded; e.g. {skipped[-1][0]}: {skipped[-1][1]}")
    splits = {name: split for name, split in splits.items() if len(split)}
    return splits, classes, channels, size


def _drop_empty_classes(splits: dict[str, Split], classes: list[str], skipped: list, source: Path | None):
    """Remove classes left with no sample in any split, renumbering labels."""
    present = sorted(set().union(*(set(s.labels.unique().tolist()) for s in splits.values())))
    if len(present) == len(classes):
        return classes
    for i in sorted(set(range(len(classes))) - set(present)):
        where = source / classes[i] if source is not None and (source / classes[i]).is_dir() else classes[i]
        skipped.append((str(where), "class with no usable images"))
    remap = torch.full((len(classes),), -1, dtype=torch.int64)
    remap[torch.tensor(present)] = torch.arange(len(present))
    for s in splits.values():
        s.labels = remap[s.labels]
        if isinstance(s.dataset, ImageFileDataset):
            s.dataset.labels = s.labels.tolist()
    return [classes[i] for i in present]


# ---------------------------------------------------------------------------- entry point


def _resolve(spec: str, root: Path) -> tuple[str, Path | None]:
    """('builtin', None) for a built-in name, ('path', path) for an existing path, else UserError."""
    key = spec.strip().lower().replace("_", "-")
    if key in DATASETS:
        return key, None
    for candidate in (Path(spec).expanduser(), root / spec):
        if candidate.exists():
            return "path", candidate
    close = difflib.get_close_matches(key, DATASETS, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise UserError(
        f"unknown dataset {spec!r}: not a built-in name and no such folder or .csv file; "
        f"{hint}built-in: {', '.join(DATASETS)}"
    )


def _normalize_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
        raise UserError(f"image_size must be a positive int or (height, width); received {image_size!r}")
    return size


def load_data(
    spec: str,
    *,
    root: str | Path | None = None,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    on_bad_image: str = "skip",
    in_memory: bool | None = None,
    max_memory_bytes: int = 2 * 1024**3,
) -> DataBundle:
    """Load a built-in dataset, a class-per-folder tree or a ``path,label`` CSV.

    ``image_size`` (int or (H, W)) and ``channels`` (1 or 3) fix the delivered images;
    by default built-ins keep theirs and files take the most common size among the
    first 200 (long side capped at 256) and 3 channels if any image is colour.
    ``val_fraction`` carves a stratified validation split out of train (seeded); a
    folder's own ``val/`` takes precedence. ``on_bad_image``: ``"skip"`` records
    undecodable files in ``DataBundle.skipped``, ``"fail"`` raises :class:`BadImageError`
    at the first. ``in_memory``: ``None`` decodes files into memory when they fit in
    ``max_memory_bytes``, otherwise streams them; built-ins are always in memory.
    """
    if on_bad_image not in ("skip", "fail"):
        raise UserError(f"on_bad_image must be 'skip' or 'fail'; received {on_bad_image!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction must be in [0, 1); received {val_fraction!r}")
    if channels not in (None, 1, 3):
        raise UserError(f"channels must be 1 or 3 (or None for the data's own); received {channels!r}")
    size = _normalize_size(image_size)
    root = Path(root).expanduser() if root is not None else data_root()
    kind, path = _resolve(str(spec), root)
    skipped: list[tuple[str, str]] = []

    if kind != "path":
        splits, classes = _load_digits() if kind == "digits" else _load_torchvision(kind, root)
        for split in splits.values():
            split.images = _convert_tensor(split.images, channels, size)
        if val_fraction > 0:
            splits["train"], val = _carve_val(splits["train"], val_fraction, seed)
            if val is not None:
                splits["val"] = val
        images = splits["train"].images
        return DataBundle(
            name=kind,
            train=splits["train"],
            val=splits.get("val"),
            test=splits.get("test"),
            classes=classes,
            in_channels=images.shape[1],
            image_size=tuple(images.shape[-2:]),
            skipped=skipped,
        )

    if path.is_dir():
        entries = _folder_entries(path, skipped)
        class_root = path if "train" not in {p.name.lower() for p in path.iterdir() if p.is_dir()} else path / "train"
    elif path.suffix.lower() == ".csv":
        entries = _csv_entries(path, skipped, on_bad_image)
        class_root = None
    else:
        raise UserError(f"{path} is a file but not a .csv; expected a dataset name, a folder or a .csv file")
    splits, classes, in_channels, out_size = _load_files(
        entries,
        path,
        skipped,
        image_size=size,
        channels=channels,
        val_fraction=val_fraction,
        seed=seed,
        on_bad_image=on_bad_image,
        in_memory=in_memory,
        max_memory_bytes=max_memory_bytes,
    )
    classes = _drop_empty_classes(splits, classes, skipped, class_root)
    return DataBundle(
        name=path.stem if path.is_file() else path.resolve().name,
        train=splits["train"],
        val=splits.get("val"),
        test=splits.get("test"),
        classes=classes,
        in_channels=in_channels,
        image_size=tuple(out_size),
        skipped=skipped,
    )
