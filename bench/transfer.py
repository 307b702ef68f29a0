"""Transfer learning on Fashion-MNIST: a network trained by fovea on classes 0-4, fine-tuned
with a frozen backbone on 5% of the training labels of classes 5-9, against the same
architecture trained from scratch on those labels. Both are tested on all 5,000 test images of
classes 5-9.

    python bench/transfer.py [--json bench/results/transfer.json] [--seeds 0 1 2]

The architecture (MODEL) is the classic transfer set-up: convolutional features, then a
classifier of fully connected layers (fc512, fc256, fc10), as the fc6-fc8 of AlexNet and VGG.
`--freeze backbone` trains only that classifier; training from scratch trains everything.

- source: classes 0-4, all their 30,000 training images, 8 epochs of one-cycle SGD (lr 0.1),
  random 2-pixel crops and flips;
- fine-tuned: `--init SOURCE --freeze backbone`, 30 epochs, cosine schedule, lr FINETUNE_LR;
- from scratch: the same 30 epochs and schedule at each of SCRATCH_LRS; the baseline is the
  better of the two learning rates (by the mean over seeds).

Each seed draws its own 5% of the labels (stratified) and its own initialization; a fine-tuned
and a scratch run with the same seed see the same labelled images. The claim (asserted by
tests/slow/test_transfer.py): the fine-tuned network's mean test accuracy over the seeds is
above the best scratch mean.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean

MODEL = ("conv3x3-32,bn,relu,maxpool2,conv3x3-64,bn,relu,maxpool2,conv3x3-128,bn,relu,"
         "fc512,relu,dropout0.5,fc256,relu,dropout0.5,fc10")
COMMON = ["--data", "fashion-mnist", "--batch-size", "128", "--val-fraction", "0", "--precision", "bf16-mixed",
          "--channels-last"]
FINETUNE_LR = 0.2
SCRATCH_LRS = (0.05, 0.02)
EPOCHS = 30


def train(*args: str) -> float:
    """A `fovea train classify` run; its final test accuracy."""
    out = Path(args[args.index("--out") + 1])
    subprocess.run([sys.executable, "-m", "fovea.cli.main", "train", "classify", *COMMON, *args], check=True,
                   stdout=subprocess.DEVNULL)
    return float([r for r in csv.DictReader(open(out / "metrics.csv")) if r["split"] == "test"][-1]["acc"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="bench/results/transfer.json")
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        src = f"{tmp}/source"
        source_acc = train("--model", MODEL, "--classes", "0-4", "--epochs", "8", "--lr", "0.1",
                           "--schedule", "onecycle", "--augment", "crop:2,hflip", "--out", src)
        few = ["--classes", "5-9", "--train-fraction", str(args.fraction), "--epochs", str(EPOCHS),
               "--schedule", "cosine", "--augment", "hflip"]
        fine, scratch = [], {lr: [] for lr in SCRATCH_LRS}
        for seed in args.seeds:
            s = ["--seed", str(seed)]
            fine.append(train(*few, *s, "--lr", str(FINETUNE_LR), "--init", src, "--freeze", "backbone",
                              "--out", f"{tmp}/finetuned-{seed}"))
            for lr in SCRATCH_LRS:
                scratch[lr].append(train(*few, *s, "--lr", str(lr), "--model", MODEL, "--out", f"{tmp}/scratch-{lr}-{seed}"))
            print(f"seed {seed}: fine-tuned {fine[-1] * 100:.2f}%, from scratch "
                  + ", ".join(f"lr {lr} {scratch[lr][-1] * 100:.2f}%" for lr in SCRATCH_LRS), flush=True)
    best_lr = max(SCRATCH_LRS, key=lambda lr: mean(scratch[lr]))
    result = dict(model=MODEL, source_classes_0_4_test_acc=source_acc, label_fraction=args.fraction,
                  seeds=args.seeds, epochs=EPOCHS, finetune_lr=FINETUNE_LR,
                  finetuned_frozen_backbone=fine, scratch={str(lr): v for lr, v in scratch.items()},
                  finetuned_frozen_backbone_test_acc=mean(fine), scratch_best_lr=best_lr,
                  scratch_test_acc=mean(scratch[best_lr]), wall_s=time.perf_counter() - t0)
    print(f"source network, classes 0-4: {source_acc * 100:.2f}%")
    print(f"classes 5-9 with {args.fraction:.0%} of the labels, mean over seeds {args.seeds}: fine-tuned "
          f"(frozen backbone) {mean(fine) * 100:.2f}% vs from scratch {mean(scratch[best_lr]) * 100:.2f}% "
          f"(lr {best_lr}, the better of {', '.join(map(str, SCRATCH_LRS))})")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
