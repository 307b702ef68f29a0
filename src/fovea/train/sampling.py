"""Batch sampling for metric learning: P x K batches (Hermans, Beyer and Leibe 2017).

A batch of P classes with K images each holds P K (K - 1) ordered positive pairs, and every
image in it has K - 1 positives and (P - 1) K negatives, so each can serve as the anchor of
a triplet. A shuffled batch of B images from C >> B classes often holds no positive pair
at all, and the triplet and contrastive losses need one.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor

from fovea.errors import UserError

__all__ = ["pk_order"]


class _Cycle:
    """Hands out items in a shuffled order, reshuffling when they run out. One draw of
    n <= len(items) items never repeats an item, even across a reshuffle."""

    def __init__(self, items: list[int], rng: random.Random) -> None:
        self.items, self.rng = items, rng
        self.queue: list[int] = []
        self.pos = 0

    def draw(self, n: int) -> list[int]:
        out = self.queue[self.pos:self.pos + n]
        self.pos += len(out)
        if len(out) < n:
            taken = set(out)
            fresh = [x for x in self.items if x not in taken]
            self.rng.shuffle(fresh)
            need = n - len(out)
            out += fresh[:need]
            # the items drawn from the old cycle's tail go last, so a cycle covers every item
            tail = out[: len(out) - need]
            self.rng.shuffle(tail)
            self.queue, self.pos = fresh[need:] + tail, 0
        return out


def pk_order(labels: Tensor, p: int, k: int, seed: int, epoch: int) -> Tensor:
    """Indices into a dataset with ``labels`` (N,), arranged so that every consecutive block
    of p * k indices holds p distinct classes with k images each: the order of an epoch for
    a sampler of P x K batches (batch size p * k, no shuffling after it).

    There are max(1, N // (p k)) blocks. Classes take turns in a shuffled cycle, so each
    appears about equally often; a class's images too, so within a class no image repeats
    before all have been used, and a block never holds the same image twice when the class
    has >= k images. A class with fewer than k images gives all of them and fills the rest
    by drawing from them with replacement. Some images may be left out of an epoch or used
    twice. Deterministic in (seed, epoch); different epochs give different orders.
    """
    if p < 1 or k < 2:
        raise UserError(f"Received p={p} and k={k}; expected p >= 1 classes and k >= 2 images "
                        "per class (a positive pair needs two images of one class).")
    labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise UserError(f"Received labels of shape {tuple(labels.shape)}; expected (N,).")
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels.tolist()):
        by_class.setdefault(y, []).append(i)
    if len(by_class) < p:
        raise UserError(f"Received p={p} classes per batch, but the labels hold {len(by_class)} "
                        f"classes; expected p <= {len(by_class)}.")
    rng = random.Random(f"pk-order-{seed}-{epoch}")  # str seeds are hashed with SHA-512: stable
    classes = _Cycle(sorted(by_class), rng)
    images = {c: _Cycle(idx, rng) for c, idx in sorted(by_class.items())}
    order: list[int] = []
    for _ in range(max(1, len(labels) // (p * k))):
        for c in classes.draw(p):
            cycle = images[c]
            n = min(k, len(cycle.items))
            order += cycle.draw(n) + rng.choices(cycle.items, k=k - n)
    return torch.tensor(order, dtype=torch.long)
