"""Subsets of a data set: some of its classes (relabelled in the order given), a stratified
fraction of its training labels, and the normal classes of an anomaly-detection problem. Used for
transfer-learning experiments such as "pre-train on Fashion-MNIST classes 0-4, fine-tune on 5% of
the labels of classes 5-9"."""

from __future__ import annotations

import dataclasses

import torch

from fovea.data.sources import DataBundle, Split, stratified_split
from fovea.errors import UserError


def _take(split: Split | None, idx: torch.Tensor, labels: torch.Tensor | None = None) -> Split | None:
    if split is None:
        return None
    if split.images is None:
        raise UserError("class and label subsets work on data held in memory; drop --no-in-memory")
    return Split(images=split.images[idx], labels=(split.labels if labels is None else labels)[idx],
                 paths=[split.paths[i] for i in idx.tolist()] if split.paths else None)


def parse_classes(text: str, classes: list[str]) -> list[int]:
    """'0,1,2' or '0-4' or 'shirt,coat' -> class indices."""
    out: list[int] = []
    for tok in (t.strip() for t in text.split(",") if t.strip()):
        if "-" in tok and all(p.isdigit() for p in tok.split("-", 1)):
            lo, hi = map(int, tok.split("-", 1))
            out += list(range(lo, hi + 1))
        elif tok.isdigit() and tok not in classes:
            out.append(int(tok))
        elif tok in classes:
            out.append(classes.index(tok))
        else:
            raise UserError(f"--classes: {tok!r} is neither a class name nor an index; classes: {', '.join(classes)}")
    bad = [i for i in out if not 0 <= i < len(classes)]
    if bad or not out:
        raise UserError(f"--classes {text!r}: indices must be in 0..{len(classes) - 1}")
    return out


def select_classes(data: DataBundle, keep: list[int]) -> DataBundle:
    """Only the samples of classes ``keep``, relabelled 0..len(keep)-1 in that order."""
    mapping = torch.full((len(data.classes),), -1, dtype=torch.long)
    mapping[torch.tensor(keep)] = torch.arange(len(keep))

    def sub(split: Split | None) -> Split | None:
        if split is None:
            return None
        new = mapping[split.labels]
        return _take(split, (new >= 0).nonzero().flatten(), new)

    return dataclasses.replace(data, train=sub(data.train), val=sub(data.val), test=sub(data.test),
                               classes=[data.classes[i] for i in keep])


def keep_normal(data: DataBundle, normal: list[int]) -> DataBundle:
    """Anomaly detection: the training and validation splits keep only the ``normal`` classes;
    the test split keeps every class (labels unchanged), so anomalies can be scored on it."""
    keep = torch.tensor(normal)

    def sub(split: Split | None) -> Split | None:
        if split is None:
            return None
        return _take(split, torch.isin(split.labels, keep).nonzero().flatten())

    train = sub(data.train)
    if len(train.labels) == 0:
        raise UserError(f"--normal-classes {normal}: no training images of these classes")
    return dataclasses.replace(data, train=train, val=sub(data.val), normal_classes=list(normal))


def subsample_train(data: DataBundle, fraction: float, seed: int = 0) -> DataBundle:
    """A stratified ``fraction`` of the training split (validation and test untouched)."""
    if not 0 < fraction <= 1:
        raise UserError(f"--train-fraction {fraction} must be in (0, 1]")
    if fraction == 1:
        return data
    _, take = stratified_split(data.train.labels.numpy(), fraction, seed)
    return dataclasses.replace(data, train=_take(data.train, torch.from_numpy(take)))
