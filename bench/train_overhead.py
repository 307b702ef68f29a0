"""How much the fovea training loop costs over a minimal hand-written PyTorch loop, and how much
the in-memory batched data pipeline gains over the canonical torchvision DataLoader.

    python bench/train_overhead.py [--repeats 3] [--json bench/results/train_overhead.json]

1. images/s of `fovea train` (the Trainer, Lightning Fabric underneath) against a minimal loop
   written by hand: the same model and initial weights, data (in memory), batch size,
   augmentations, optimizer and number of steps; for LeNet-5 on digits (32x32) and ResNet-18 on
   32x32 inputs. Each side runs `--repeats` times, alternating; the speed of a side is its
   fastest epoch over all runs (the first epoch of each run is warm-up and left out). On a
   shared machine the fastest epoch is the one least disturbed by other load, so this
   estimates what each loop costs rather than what the neighbours did.
   Target: ratio >= 0.97.
2. images/s delivered (uint8 batch -> augmented float batch) by the in-memory pipeline against
   torchvision's Dataset + per-sample transforms + DataLoader, on Fashion-MNIST (28x28), random
   crop with padding 2 and horizontal flip. Target: ratio >= 5.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fovea.data.sources import load_data
from fovea.data.transforms import BatchAugment, Preprocess, torchvision_pipeline
from fovea.tasks.classify import ImageClassifier, build_net
from fovea.train.config import TrainConfig
from fovea.train.data import Batches
from fovea.train.loop import Trainer


def fovea_images_per_s(cfg: TrainConfig, out: Path) -> float:
    cfg.out = str(out)
    trainer = Trainer(cfg)
    trainer.fit()
    import csv

    rows = [r for r in csv.DictReader(open(out / "metrics.csv")) if r["split"] == "train"][1:]  # epoch 1: warm-up
    return max(float(r["images_per_s"]) for r in rows)


def hand_loop_images_per_s(cfg: TrainConfig) -> float:
    """The loop as one would write it by hand, on the same data and model."""
    torch.manual_seed(cfg.seed)
    size = (cfg.image_size, cfg.image_size)
    data = load_data(cfg.data, image_size=size, val_fraction=cfg.val_fraction, seed=cfg.seed)
    images = Batches(data.train, cfg.batch_size, torch.device("cpu"), shuffle=True, image_size=size).images
    labels = data.train.labels
    model = ImageClassifier(build_net(cfg.model, len(data.classes), data.in_channels, size), Preprocess(cfg.preprocess))
    model.preprocess.fit(images)
    augment = BatchAugment(cfg.augment)
    augment.fit(images)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    n, b = len(labels), cfg.batch_size
    best = 0.0
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(n)
        t0, seen = time.perf_counter(), 0
        for i in range(n // b):
            idx = perm[i * b:(i + 1) * b]
            x = augment(images[idx].float().div_(255))
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
        if epoch > 0:  # epoch 1 is warm-up, as for fovea
            best = max(best, seen / (time.perf_counter() - t0))
    return best


def loop_overhead(name: str, cfg: TrainConfig, repeats: int, tmp: Path) -> dict:
    ours, base = [], []
    for r in range(repeats):
        base.append(hand_loop_images_per_s(TrainConfig(**cfg.to_dict())))
        ours.append(fovea_images_per_s(TrainConfig(**cfg.to_dict()), tmp / f"{name}-{r}"))
    ratio = max(ours) / max(base)
    print(f"{name:28s} fovea {max(ours):9.0f} img/s   hand-written {max(base):9.0f} img/s   ratio {ratio:.3f}")
    return dict(fovea_images_per_s=max(ours), hand_images_per_s=max(base), ratio=ratio, runs_fovea=ours, runs_hand=base)


def pipeline_speedup(batch_size: int, steps: int, workers: int) -> dict:
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    data = load_data("fashion-mnist")
    images, labels = data.train.images, data.train.labels
    aug = "crop:2,hflip"

    class PerSample(Dataset):  # the canonical torchvision recipe: PIL image -> transforms -> tensor
        def __init__(self):
            self.tf = torchvision_pipeline(aug, (28, 28))

        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return self.tf(Image.fromarray(images[i, 0].numpy(), mode="L")), int(labels[i])

    loader = DataLoader(PerSample(), batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True)
    it = iter(loader)
    next(it)  # workers started
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = next(it)
    base = steps * batch_size / (time.perf_counter() - t0)

    batches = Batches(data.train, batch_size, torch.device("cpu"), shuffle=True, drop_last=True)
    augment = BatchAugment(aug)
    t0, done = time.perf_counter(), 0
    while done < steps:
        for xb, yb, _ in batches.epoch(done):
            x = augment(xb.float().div_(255))
            done += 1
            if done == steps:
                break
    ours = steps * batch_size / (time.perf_counter() - t0)
    ratio = ours / base
    print(f"{'data pipeline fashion-mnist':28s} fovea {ours:9.0f} img/s   torchvision DataLoader({workers} workers) "
          f"{base:9.0f} img/s   ratio {ratio:.1f}")
    return dict(fovea_images_per_s=ours, torchvision_images_per_s=base, ratio=ratio, workers=workers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--json", default="bench/results/train_overhead.json")
    ap.add_argument("--tmp", default="/tmp/fovea-bench")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    tmp = Path(args.tmp)
    common = dict(data="digits", image_size=32, val_fraction=0.0, optimizer="momentum", lr=0.01, momentum=0.9,
                  schedule="constant", loss="ce", preprocess="zscore", epochs=args.epochs, log_every_steps=10**9,
                  accelerator="cpu", precision="32-true")
    results = dict(
        lenet5_digits=loop_overhead("lenet5 digits 32x32 b64", TrainConfig(model="lenet5", batch_size=64,
                                                                         augment="translate:0.08", **common),
                                    args.repeats, tmp),
        resnet18_32x32=loop_overhead("resnet18 32x32 b64", TrainConfig(model="resnet18", batch_size=64, augment="crop:4",
                                                                     **dict(common, epochs=3)), args.repeats, tmp),
        pipeline_fashion_mnist=pipeline_speedup(128, 200, workers=min(2, os.cpu_count() or 1)),
    )
    results["machine"] = dict(cpus=os.cpu_count(), torch=torch.__version__, threads=torch.get_num_threads())
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
