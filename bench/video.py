"""Video classification on the built-in `moving-shapes` set, where the class is the motion itself:
a single-frame classifier against the temporal stream, the two-stream fusion, C3D and CNN + LSTM.

Every model is trained by `fovea train video` (a new process each, as a user runs it) on the same
videos (`moving-shapes:n=400`: 9 classes, 400 / 40 / 100 videos per class for train / val / test,
24 frames of 32x32, seed 0; CNN + LSTM overfits 200 training videos per class), with the same
optimizer, schedule, batch and number of epochs (20); clips are 16 frames. The widths (MODELS) keep every run within a few minutes on 2 CPU cores.
The single-frame classifier and the temporal stream are the two streams of the two-stream run,
each with its own classifier and loss, measured on their own; the fusion averages their softmax
scores. Scores are on the test videos: clip accuracy over dense clips (every 8 frames), and
video accuracy from the clip scores averaged per video.

    OMP_NUM_THREADS=2 python bench/video.py [--json bench/results/video.json]

Claims (issue 8): the single-frame classifier stays near chance (video accuracy <= chance +
0.10); C3D, the temporal stream and CNN + LSTM are far above it (>= chance + 0.50); the fusion is
at least as good as its better stream. Writes docs/img/video-clips.png (test clips with the C3D
run's predictions).
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

DATA = "moving-shapes:n=400"
MODELS = {  # --model, --model-kwargs
    "two-stream": ("two-stream", dict(width=0.5)),
    "c3d": ("c3d", dict(width=0.125, fc_width=256, norm="bn")),
    "cnn-lstm": ("cnn-lstm", dict(width=0.25, channels=[32, 64], hidden=128, dropout=0.0)),
}
COMMON = dict(epochs=20, batch_size=16, optimizer="adam", lr=1e-3, schedule="cosine", clip=16, seed=0,
              precision="32-true")
NEAR_CHANCE, FAR_ABOVE = 0.10, 0.50  # within 10 points of chance; at least 50 points above it


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def train(model: str, kwargs: dict, out: Path, settings: dict, threads: int) -> dict:
    """One `fovea train video` process; its test scores (video.json) and times."""
    cmd = [sys.executable, "-m", "fovea.cli.main", "train", "video", "--model", model, "--model-kwargs",
           json.dumps(kwargs), "--out", str(out)]
    for key, value in settings.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    before, t0 = load(), time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - t0
    video = json.loads((out / "video.json").read_text())
    with open(out / "metrics.csv") as f:
        train_s = sum(float(r["time_s"]) for r in csv.DictReader(f) if r["split"] == "train")
    return dict(video=video, train_s=train_s, wall_s=wall, load_before=before, load_after=load(),
                command=" ".join(cmd[3:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="bench/results/video.json")
    ap.add_argument("--figure", default="docs/img/video-clips.png")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)),
                    help="OMP_NUM_THREADS of every training process (default: $OMP_NUM_THREADS, else 2)")
    ap.add_argument("--data", default=DATA, help="smaller runs while developing, e.g. moving-shapes:n=40")
    ap.add_argument("--epochs", type=int, default=COMMON["epochs"])
    ap.add_argument("--keep", help="keep the run directories in this folder")
    args = ap.parse_args()
    settings = dict(COMMON, data=args.data, epochs=args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        runs = {}
        for name, (model, kwargs) in MODELS.items():
            runs[name] = train(model, kwargs, root / name, settings, args.threads)
            v = runs[name]["video"]
            print(f"{name}: clip acc {v['clip_accuracy']:.4f}  video acc {v['video_accuracy']:.4f}  "
                  f"train {runs[name]['train_s']:.0f} s", flush=True)
        figure = Path(args.figure)
        figure.parent.mkdir(parents=True, exist_ok=True)
        clips = root / "c3d" / "plots" / "clips.png"
        figure.write_bytes(clips.read_bytes())
    ts = runs["two-stream"]
    classes = len(ts["video"]["confusion"])
    chance = 1 / classes
    table = {
        "single frame (spatial stream)": dict(clip=ts["video"]["spatial_clip_accuracy"],
                                              video=ts["video"]["spatial_video_accuracy"], run="two-stream"),
        "temporal stream (2L = 20 flow channels)": dict(clip=ts["video"]["temporal_clip_accuracy"],
                                                        video=ts["video"]["temporal_video_accuracy"],
                                                        run="two-stream"),
        "two-stream fusion (softmax average)": dict(clip=ts["video"]["clip_accuracy"],
                                                    video=ts["video"]["video_accuracy"], run="two-stream"),
        "C3D": dict(clip=runs["c3d"]["video"]["clip_accuracy"], video=runs["c3d"]["video"]["video_accuracy"],
                    run="c3d"),
        "CNN + LSTM": dict(clip=runs["cnn-lstm"]["video"]["clip_accuracy"],
                           video=runs["cnn-lstm"]["video"]["video_accuracy"], run="cnn-lstm"),
    }
    single = table["single frame (spatial stream)"]["video"]
    spatial, temporal = single, table["temporal stream (2L = 20 flow channels)"]["video"]
    fusion = table["two-stream fusion (softmax average)"]["video"]
    far = chance + FAR_ABOVE
    claims = dict(single_near_chance=single <= chance + NEAR_CHANCE,
                  temporal_far_above=temporal >= far, c3d_far_above=table["C3D"]["video"] >= far,
                  cnn_lstm_far_above=table["CNN + LSTM"]["video"] >= far,
                  fusion_at_least_best_stream=fusion >= max(spatial, temporal))
    result = dict(date=time.strftime("%Y-%m-%d %H:%M:%S"), settings=settings, models=MODELS, threads=args.threads,
                  cpus=os.cpu_count(), chance=chance, table=table, runs=runs, claims=claims, figure=args.figure)
    print(f"\nchance: {chance:.4f}\n\n| model | clip accuracy | video accuracy | train s |\n|---|---|---|---|")
    for label, r in table.items():
        print(f"| {label} | {r['clip']:.4f} | {r['video']:.4f} | {runs[r['run']]['train_s']:.0f} |")
    print("\nclaims:", ", ".join(f"{k} {'holds' if v else 'FAILS'}" for k, v in claims.items()))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
