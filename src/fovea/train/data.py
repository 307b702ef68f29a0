"""Batches for the loop: one code path for data held in memory on the training device
(shuffled with a seeded permutation per epoch, sliced a batch at a time) and data streamed by
DataLoader workers (uint8 batches moved to the device). Either way the loop receives uint8
batches and augments them on the device a batch at a time."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fovea.data.sources import Split
from fovea.errors import UserError


def resize_uint8(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a uint8 (N, C, H, W) tensor once (bilinear, antialiased when shrinking)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    out = []
    for chunk in images.split(4096):
        f = F.interpolate(chunk.float(), size=size, mode="bilinear", align_corners=False,
                          antialias=size[0] < chunk.shape[-2])
        out.append(f.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


class Batches:
    """Mini-batches of one split for this process. With several processes the global batch is
    ``batch_size`` and each rank takes its own contiguous slice of it, so the data seen per
    optimizer step equal those of a one-process run."""

    def __init__(self, split: Split, batch_size: int, device: torch.device, *, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world: int = 1, num_workers: int = 0,
                 image_size: tuple[int, int] | None = None, order_fn=None):
        self.split, self.batch_size, self.device = split, batch_size, device
        self.order_fn = order_fn  # f(labels, epoch) -> the epoch's sample order (P x K batches)
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world, self.num_workers = rank, world, num_workers
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} must be divisible by the number of processes {world}")
        self.local = batch_size // world
        self.in_memory = split.images is not None
        if self.in_memory:
            imgs = split.images if image_size is None else resize_uint8(split.images, image_size)
            self.images = imgs.to(device)
            self.labels = split.labels.to(device)
        elif order_fn is not None:
            raise UserError("P x K batches need the data in memory; drop --no-in-memory")
        self._order_len = len(order_fn(split.labels, 0)) if order_fn is not None else None

    def sample(self, k: int) -> torch.Tensor:
        """Up to ``k`` evenly spaced images of a streamed split (uint8), to fit statistics on."""
        n = len(self.split)
        idx = torch.linspace(0, n - 1, min(k, n)).long().tolist()
        return torch.stack([self.split.dataset[i][0] for i in idx]).to(self.device)

    def __len__(self) -> int:
        n = len(self.split) if self._order_len is None else self._order_len
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch(self, epoch: int, start_batch: int = 0):
        """Yield (uint8 images, labels, indices) on the device, from batch ``start_batch`` on."""
        if self.order_fn is not None:
            order = self.order_fn(self.split.labels, epoch)
        else:
            order = epoch_permutation(len(self.split), self.seed, epoch) if self.shuffle else torch.arange(len(self.split))
        n = len(order)
        if self.in_memory:
            order = order.to(self.device)
            for b in range(start_batch, len(self)):
                lo = b * self.batch_size + self.rank * self.local
                idx = order[lo: min(lo + self.local, (b + 1) * self.batch_size, n)]
                yield self.images[idx], self.labels[idx], idx
            return
        # streaming: a DataLoader over this rank's slices of the same global order
        sel = torch.cat([order[b * self.batch_size + self.rank * self.local:
                               min(b * self.batch_size + (self.rank + 1) * self.local, n)]
                         for b in range(start_batch, len(self))]) if len(self) > start_batch else order[:0]
        loader = DataLoader(torch.utils.data.Subset(self.split.dataset, sel.tolist()), batch_size=self.local,
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        pos = 0
        for x, y in loader:
            yield (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True),
                   sel[pos: pos + len(y)].to(self.device))
            pos += len(y)
