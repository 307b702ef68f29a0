"""Semantic segmentation on the built-in `shapes` set: U-Net against FCN-32s, FCN-16s and FCN-8s.

Every model is trained by `fovea train segment` (a new process each, as a user runs it) on the
same data (`shapes`: 2000 train / 200 val / 200 test images of 64x64, seed 0), for the same
number of epochs with the same optimizer, batch, schedule, augmentation and precision; the
table gives each model's test pixel accuracy, mean IoU, mean Dice and boundary F-score (BF,
Csurka et al. 2013) from the run's `segmentation.json`, its training time (the epochs' time_s
in metrics.csv) and the wall time of the whole command (start-up, data, training, evaluation
and report). The FCNs are VGG-16 at 1/8 of its widths (8 ... 64 channels, fc6/fc7 of 256),
with batch norm as the U-Net has, trained from scratch: no ImageNet weights offline.

A second measurement times one U-Net training step (forward, backward, Adam) in fp32 and
with bf16 autocast, each with and without channels_last, in this process on the same number
of threads: the ratios say whether `--precision bf16-mixed --channels-last` pay on this CPU.

    OMP_NUM_THREADS=2 python bench/segmentation.py [--json bench/results/segmentation.json]

Claim (issue 7): U-Net's test mean IoU >= 0.90 with the whole U-Net command taking <= 600 s
wall on 2 CPU cores. Timings depend on the machine being otherwise idle: the JSON records
the load average before and after each run. Writes docs/img/segmentation-overlay.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = "shapes"
UNET = ("unet-same", dict(base=16, depth=3, norm="bn"))
FCN_KWARGS = dict(width=1 / 8, fc_width=256, norm="bn")
FCNS = ("fcn8s", "fcn16s", "fcn32s")
# the same settings for every model
COMMON = dict(epochs=25, batch_size=16, optimizer="adam", lr=2e-3, schedule="cosine", augment="hflip,vflip",
              precision="bf16-mixed", seed=0)
FLAGS = dict(channels_last=True)
CLAIM_MIOU, CLAIM_SECONDS = 0.90, 600.0


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def train(model: str, kwargs: dict, out: Path, settings: dict, threads: int) -> dict:
    """One `fovea train segment` process; its test metrics and times."""
    cmd = [sys.executable, "-m", "fovea.cli.main", "train", "segment", "--data", settings["data"], "--model", model,
           "--model-kwargs", json.dumps(kwargs), "--out", str(out)]
    for key, value in settings.items():
        if key != "data":
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    cmd += [f"--{k.replace('_', '-')}" if v else f"--no-{k.replace('_', '-')}" for k, v in FLAGS.items()]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    before = load()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - t0
    seg = json.loads((out / "segmentation.json").read_text())
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    train_s = sum(float(r["time_s"]) for r in rows if r["split"] == "train")
    return dict(model=model, model_kwargs=kwargs, pixel_accuracy=seg["pixel_accuracy"], miou=seg["miou"],
                dice=seg["dice"], bf=seg["bf"], per_class=seg["per_class"], train_s=train_s, wall_s=wall,
                load_before=before, load_after=load(), command=" ".join(cmd[1:]))


def step_speed(threads: int, steps: int = 6, batch: int = 16, size: int = 64) -> dict:
    """Training images per second of the U-Net, fp32 / bf16 autocast, with and without channels_last."""
    import torch
    import torch.nn.functional as F

    from fovea.tasks.segment import build_net, full_size_scores

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g)
    y = torch.randint(0, 4, (batch, size, size), generator=g)
    out = {}
    for bf16 in (False, True):
        for cl in (False, True):
            torch.manual_seed(0)
            net = build_net(UNET[0], 4, 3, UNET[1])
            xx = x
            if cl:
                net, xx = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
            opt = torch.optim.Adam(net.parameters(), 1e-3)

            def step():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    scores = full_size_scores(net, xx)
                loss = F.cross_entropy(scores.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            for _ in range(2):  # warm-up: oneDNN picks its kernels
                step()
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            out[f"{'bf16' if bf16 else 'fp32'}{' + channels_last' if cl else ''}"] = \
                steps * batch / (time.perf_counter() - t0)
    base = out["fp32"]
    return dict(images_per_s=out, speedup_over_fp32={k: v / base for k, v in out.items()}, load=load())


def figure(runs: dict[str, Path], path: Path, n: int = 6) -> Path:
    """Test images, their true masks and every model's prediction (one row each)."""
    import torch

    from fovea.data.shapes import SHAPE_CLASSES, shapes_splits
    from fovea.report.plots import plot_image_grid
    from fovea.tasks.segment import colour_legend, colour_masks, load_segmenter

    test = shapes_splits(0, 0, 200, seed=COMMON["seed"])["test"]
    images, truths = test.images[:n], test.masks[:n]
    rows, titles = [images, colour_masks(truths)], ["image"] * n + ["truth"] * n
    for name, run in runs.items():
        model, _ = load_segmenter(run)
        with torch.no_grad():
            pred = model(images.float() / 255).argmax(1)
        rows.append(colour_masks(pred))
        titles += [name] * n
    path.parent.mkdir(parents=True, exist_ok=True)
    return plot_image_grid(torch.cat(rows), titles, path, ncols=n,
                           title=f"shapes test images; {colour_legend(SHAPE_CLASSES)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="bench/results/segmentation.json")
    ap.add_argument("--figure", default="docs/img/segmentation-overlay.png")
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every training process")
    ap.add_argument("--data", default=DATA, help="smaller runs while developing, e.g. shapes:200:50:50")
    ap.add_argument("--epochs", type=int, default=COMMON["epochs"])
    ap.add_argument("--models", default="unet," + ",".join(FCNS), help="comma-separated subset of the table")
    ap.add_argument("--keep", help="keep the run directories in this folder")
    args = ap.parse_args()
    settings = dict(COMMON, data=args.data, epochs=args.epochs)
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        speed = step_speed(args.threads)
        table, runs = {}, {}
        for name in wanted:
            model, kwargs = UNET if name == "unet" else (name, FCN_KWARGS)
            label = f"U-Net ({model})" if name == "unet" else f"FCN-{name[3:-1]}s"
            runs[label] = root / name
            table[label] = train(model, kwargs, runs[label], settings, args.threads)
            r = table[label]
            print(f"{label}: mIoU {r['miou']:.4f}  BF {r['bf']:.4f}  train {r['train_s']:.0f} s  "
                  f"wall {r['wall_s']:.0f} s", flush=True)
        figure(runs, Path(args.figure))
    unet = next((r for k, r in table.items() if k.startswith("U-Net")), None)
    result = dict(date=time.strftime("%Y-%m-%d %H:%M:%S"), settings=dict(settings, **FLAGS),
                  unet=dict(model=UNET[0], model_kwargs=UNET[1]), fcn_kwargs=FCN_KWARGS, threads=args.threads,
                  cpus=os.cpu_count(), table=table, precision_speed=speed, figure=args.figure,
                  claim=None if unet is None else dict(miou=unet["miou"], wall_s=unet["wall_s"],
                                                       miou_ok=unet["miou"] >= CLAIM_MIOU,
                                                       time_ok=unet["wall_s"] <= CLAIM_SECONDS))
    print("\n| model | pixel acc | mIoU | Dice | BF | train s | wall s |\n|---|---|---|---|---|---|---|")
    for label, r in table.items():
        print(f"| {label} | {r['pixel_accuracy']:.4f} | {r['miou']:.4f} | {r['dice']:.4f} | {r['bf']:.4f} | "
              f"{r['train_s']:.0f} | {r['wall_s']:.0f} |")
    print("\nU-Net training step, images/s:", ", ".join(f"{k} {v:.1f}" for k, v in speed["images_per_s"].items()))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
