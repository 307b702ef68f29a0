"""One-class anomaly detection on Fashion-MNIST: each of the 10 classes in turn is the only
normal class, the other nine are anomalies.

    python bench/anomaly.py [--epochs 3] [--classes 0-9] [--threads 1] [--json bench/results/anomaly.json]

For each class c, four detectors see the same 6,000 training images of class c (no validation
split is carved out) and score all 10,000 test images (1,000 normal, 9,000 anomalous); the
score is ranked against the truth by ROC-AUC:

- conv autoencoder: ``fovea train autoencoder --kind conv --normal-classes c`` (the task's
  defaults: Adam, lr 1e-3, cosine schedule, batch 128), trained with the fovea trainer;
  score = mean squared reconstruction error;
- VAE: ``--kind vae``, the same trainer and settings; score = negative ELBO (BCE
  reconstruction + KL, z = mu);
- PCA: squared error of the reconstruction from the principal subspace holding 90% of the
  variance of the raw pixels (``fovea.apps.generative.pca_anomaly_scores``);
- one-class SVM: RBF kernel, nu = 0.1, gamma = "scale", on the raw pixels of 2,000 of the
  training images drawn at random (``ocsvm_anomaly_scores``).

The networks are scored here from their saved weights (``load_autoencoder``), and the number is
checked against the one the trainer's own report computed. One intra-op thread by default: on a
small shared machine it trains these small networks faster than two (see bench/contractive.py).
Took 28 minutes on 2 CPU cores shared with other jobs (docs/autoencoders.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

os.environ.pop("FOVEA_RUN_DIR", None)  # a stray run directory from the caller's environment must not be reused

METHODS = ("conv autoencoder", "VAE", "PCA", "one-class SVM")
KIND_OF = {"conv autoencoder": "conv", "VAE": "vae"}
SCORE_BATCH = 1000


def train_and_score(kind: str, normal: int, epochs: int, out: Path, test_x: torch.Tensor,
                    is_anomaly) -> dict:
    """Train a ``kind`` autoencoder on class ``normal`` with the fovea trainer, then score the
    test images from the saved run."""
    from fovea.apps.generative import anomaly_metrics
    from fovea.tasks.autoencode import anomaly_scores, load_autoencoder
    from fovea.train.config import TASK_DEFAULTS, TrainConfig
    from fovea.train.loop import Trainer

    settings = dict(TASK_DEFAULTS["autoencoder"], task="autoencoder", kind=kind, data="fashion-mnist",
                    normal_classes=str(normal), epochs=epochs, val_fraction=0.0, out=str(out))
    t0 = time.perf_counter()
    result = Trainer(TrainConfig.from_dict(settings)).fit()
    train_s = time.perf_counter() - t0
    model, _ = load_autoencoder(out)
    with torch.no_grad():
        scores = torch.cat([anomaly_scores(model, xb) for xb in test_x.split(SCORE_BATCH)]).numpy()
    metrics = anomaly_metrics(scores, is_anomaly)
    reported = result["anomaly"]["roc_auc"]
    assert abs(metrics["roc_auc"] - reported) < 1e-4, (metrics["roc_auc"], reported)  # the same model, the same split
    return dict(metrics, train_s=train_s, test_mse=result["test_mse"])


def pixel_baselines(train_x: torch.Tensor, test_x: torch.Tensor, is_anomaly) -> dict:
    from fovea.apps.generative import anomaly_metrics, ocsvm_anomaly_scores, pca_anomaly_scores

    flat_train, flat_test = train_x.flatten(1).numpy(), test_x.flatten(1).numpy()
    out = {}
    for name, fn in (("PCA", pca_anomaly_scores), ("one-class SVM", ocsvm_anomaly_scores)):
        t0 = time.perf_counter()
        out[name] = dict(anomaly_metrics(fn(flat_train, flat_test), is_anomaly), fit_s=time.perf_counter() - t0)
    return out


def print_table(classes: list[str], per_class: dict) -> None:
    """The per-class ROC-AUC table with the mean row."""
    width = max(len(c) for c in classes) + 4
    print(f"{'normal class':{width}s}" + "".join(f"{m:>18s}" for m in METHODS))
    for c, rows in per_class.items():
        print(f"{c + ' ' + classes[int(c)]:{width}s}" + "".join(f"{rows[m]['roc_auc']:18.4f}" for m in METHODS))
    means = {m: statistics.fmean(rows[m]["roc_auc"] for rows in per_class.values()) for m in METHODS}
    print(f"{'mean':{width}s}" + "".join(f"{means[m]:18.4f}" for m in METHODS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3, help="epochs for each autoencoder")
    ap.add_argument("--classes", default="0-9", help="normal classes to run, one at a time (e.g. 0-9, 0,3)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (0: one per CPU)")
    ap.add_argument("--json", default="bench/results/anomaly.json")
    ap.add_argument("--runs", help="keep the trained runs here (default: a temporary folder)")
    args = ap.parse_args()
    from fovea.data.sources import load_data
    from fovea.data.subset import parse_classes

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    t0 = time.perf_counter()
    data = load_data("fashion-mnist")
    classes = list(data.classes)
    test_x, test_y = data.test.images.float().div(255), data.test.labels
    per_class: dict[str, dict] = {}
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(args.runs or tmp)
        for c in parse_classes(args.classes, classes):
            is_anomaly = (test_y != c).numpy()
            rows = {}
            for method, kind in KIND_OF.items():
                rows[method] = train_and_score(kind, c, args.epochs, runs / f"{kind}-{c}", test_x, is_anomaly)
            train_x = data.train.images[data.train.labels == c].float().div(255)
            rows.update(pixel_baselines(train_x, test_x, is_anomaly))
            per_class[str(c)] = dict(rows, n_train=len(train_x))
            print(f"normal class {c} ({classes[c]}): " + ", ".join(f"{m} {rows[m]['roc_auc']:.4f}" for m in METHODS)
                  + f"  [{time.perf_counter() - t0:.0f} s so far]", flush=True)
            result = dict(
                task="one-class anomaly detection on Fashion-MNIST, ROC-AUC on the 10,000 test images",
                classes=classes, epochs=args.epochs, per_class=per_class,
                mean_roc_auc={m: statistics.fmean(r[m]["roc_auc"] for r in per_class.values()) for m in METHODS},
                n_test=len(test_y), wall_s=time.perf_counter() - t0, cpus=os.cpu_count(),
                torch_threads=torch.get_num_threads(), torch=torch.__version__,
            )
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)  # after every class: a partial result survives
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(f"ROC-AUC, one normal class at a time ({len(test_y)} test images; autoencoders: {args.epochs} epochs)")
    print_table(classes, per_class)
    print(f"wrote {args.json} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
