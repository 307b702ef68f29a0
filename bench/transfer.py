"""Transfer learning on Fashion-MNIST: a network trained by fovea on classes 0-4, fine-tuned
with a frozen backbone on 5% of the training labels of classes 5-9, against the same
architecture trained from scratch on those labels. Both are tested on all test images of
classes 5-9.

    python bench/transfer.py [--json bench/results/transfer.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from fovea.train.config import RECIPES

MODEL = RECIPES["fashion-mnist-fast"]["model"]
COMMON = ["--data", "fashion-mnist", "--batch-size", "128", "--val-fraction", "0", "--precision", "bf16-mixed",
          "--channels-last", "--augment", "hflip"]


def train(*args: str) -> float:
    out = Path(args[args.index("--out") + 1])
    subprocess.run([sys.executable, "-m", "fovea.cli.main", "train", "classify", *COMMON, *args], check=True,
                   stdout=subprocess.DEVNULL)
    return float([r for r in csv.DictReader(open(out / "metrics.csv")) if r["split"] == "test"][-1]["acc"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="bench/results/transfer.json")
    ap.add_argument("--fraction", type=float, default=0.05)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = f"{tmp}/source"
        source_acc = train("--model", MODEL, "--classes", "0-4", "--epochs", "4", "--lr", "0.1",
                           "--schedule", "onecycle", "--out", src)
        few = ["--classes", "5-9", "--train-fraction", str(args.fraction), "--epochs", "30", "--lr", "0.05",
               "--schedule", "cosine"]
        fine = train(*few, "--init", src, "--freeze", "backbone", "--out", f"{tmp}/finetuned")
        scratch = train(*few, "--model", MODEL, "--out", f"{tmp}/scratch")
    result = dict(source_classes_0_4_test_acc=source_acc, label_fraction=args.fraction,
                  finetuned_frozen_backbone_test_acc=fine, scratch_test_acc=scratch)
    print(f"source network, classes 0-4: {source_acc * 100:.2f}%")
    print(f"classes 5-9 with {args.fraction:.0%} of the labels: fine-tuned (frozen backbone) {fine * 100:.2f}%  "
          f"vs from scratch {scratch * 100:.2f}%")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
