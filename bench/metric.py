"""Metric learning on Fashion-MNIST: retrieval and verification with Siamese (contrastive) and
triplet embeddings against raw pixels and an untrained network, the miners side by side, classes
never seen in training, and sketch -> image retrieval with shared, unshared and half-shared branches.

    python bench/metric.py [--json bench/results/metric.json] [--figures docs/img] [--runs DIR]

Every run: the same backbone (BACKBONE: forward_features, global average pool, a 256-unit
projection MLP to 64 dimensions, L2-normalized), the task defaults (Adam, lr 1e-3, cosine
schedule), EPOCHS epochs (SKETCH_EPOCHS for the cross-domain runs) of P x K batches (10 classes x 12 images: each image has 11 positives
and 108 negatives in its batch), seed 0, the loss's default margin (triplet 0.2 on squared
distances, contrastive 1.0). The data: the 60,000 training images less the trainer's stratified
10% validation split (54,000: the retrieval gallery), the 10,000 test images (the queries and
the verification pairs), the threshold chosen on validation pairs.

A. retrieval of test queries against the training gallery (recall@1, @5, Euclidean) and
   verification ROC-AUC on 4,000 test pairs (half same class), for raw pixels, the untrained
   network, the contrastive loss (miners all, hard) and the triplet loss (miners random, hard,
   semihard, batch-hard, all);
B. a triplet-semihard model trained on classes 0-6 only, measured on test pairs and queries of
   classes 0-6 (seen) and 7-9 (unseen; gallery: the training images of 7-9, never trained on;
   threshold: validation pairs of the same classes);
C. sketch -> image retrieval (queries: Sobel edge maps of the test images, embedded by branch a;
   gallery: the training images, by branch b) with shared, unshared and half-shared branches.

The targets (tests/slow/test_metric_slow.py): triplet-semihard recall@1 above random mining, and
at least WIDE above raw pixels and the untrained network; every number is written to the JSON.
Runs use one thread by default: on a shared 2-core machine two threads ran several times slower.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

os.environ.pop("FOVEA_RUN_DIR", None)  # a stray run directory from the caller's environment must not be reused

# four conv stages, global average pooled: 128 features (the fc10 classifier is not used by the embedding)
BACKBONE = "conv3x3-16,bn,relu,maxpool2,conv3x3-32,bn,relu,maxpool2,conv3x3-64,bn,relu,maxpool2,conv3x3-128,bn,relu,fc10"
EPOCHS = 15
SKETCH_EPOCHS = 8  # the cross-domain runs take two branches a step; table C compares them with each other only
PK = "10x12"
SEEN, UNSEEN = [0, 1, 2, 3, 4, 5, 6], [7, 8, 9]
WIDE = 0.05  # "by a wide margin": recall@1 at least 5 points above raw pixels and the untrained network
LOSS_ROWS = [("contrastive", "all"), ("contrastive", "hard"), ("triplet", "random"), ("triplet", "hard"),
             ("triplet", "semihard"), ("triplet", "batch-hard"), ("triplet", "all")]
BRANCHES = ("shared", "unshared", "half")
SHEET_QUERIES, SHEET_K = 6, 5


def settings(**extra) -> dict:
    from fovea.train.config import TASK_DEFAULTS

    base = dict(TASK_DEFAULTS["metric"], task="metric", data="fashion-mnist", model=BACKBONE, epochs=EPOCHS, pk=PK,
                embed_dim=64, augment="hflip", seed=0, log_every_steps=100)
    return dict(base, **extra)


RUNS = {f"{loss}-{miner}": dict(metric_loss=loss, miner=miner) for loss, miner in LOSS_ROWS}
RUNS["triplet-semihard-classes-0-6"] = dict(metric_loss="triplet", miner="semihard", classes="0-6",
                                           pk="7x17")  # 7 classes: about the same batch size, 119
RUNS.update({f"sketch-{b}": dict(metric_loss="triplet", miner="semihard", domain="sketch", branches=b,
                                 epochs=SKETCH_EPOCHS) for b in BRANCHES})


def train(out: Path, config: dict, threads: int) -> dict:
    """A metric-learning run of ``config`` and its report (metric.json); a run already in ``out`` is reused."""
    from fovea.train.config import TrainConfig
    from fovea.train.loop import Trainer

    torch.set_num_threads(threads)
    train_s = None
    if not (out / "metric.json").exists():
        # a run stopped part way goes on from its last checkpoint (its time is then not the whole run's)
        resume = out if (out / "checkpoints" / "last.ckpt").exists() else None
        t0 = time.perf_counter()
        Trainer(TrainConfig.from_dict(dict(config, out=str(out))), resume=resume).fit()
        train_s = None if resume else time.perf_counter() - t0
    return dict(run=str(out), train_s=train_s, **json.loads((out / "metric.json").read_text()))


def train_all(runs: Path, jobs: int, threads: int) -> dict[str, dict]:
    """Every run of the tables, ``jobs`` at a time (separate processes)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if jobs <= 1:
        return {name: train(runs / name, settings(**extra), threads) for name, extra in RUNS.items()}
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        # the cross-domain runs (two branches a step) first, so the last ones to finish are short
        order = sorted(RUNS, key=lambda name: "domain" not in RUNS[name])
        futures = {name: pool.submit(train, runs / name, settings(**RUNS[name]), threads) for name in order}
        return {name: futures[name].result() for name in RUNS}


@torch.no_grad()
def embed_images(model, images: torch.Tensor, branch: str = "a", domain: str | None = None) -> torch.Tensor:
    """Embeddings of uint8 images (N, C, H, W); the model holds its own preprocessing."""
    from fovea.data.domains import to_domain

    out = []
    for chunk in images.split(1000):
        x = chunk.float().div(255)
        out.append(model.embed(to_domain(x, domain) if domain else x, branch).float())
    return torch.cat(out)


def measure(queries, query_labels, gallery, gallery_labels, val=None, val_labels=None) -> dict:
    """recall@1/5/10 of queries against the gallery; verification ROC-AUC on 4,000 query pairs (the
    pairs the run reports use: same seed), accuracy at the threshold chosen on validation pairs."""
    from fovea.tasks.metric import recall_at_k, verification

    out = recall_at_k(queries, query_labels, gallery, gallery_labels, ks=(1, 5, 10))
    threshold = verification(val, val_labels)["threshold"] if val is not None else None
    ver = verification(queries, query_labels, threshold=threshold)
    out.update(roc_auc=ver["roc_auc"], threshold=ver["threshold"], accuracy=ver["accuracy"])
    return out


def pixels(images: torch.Tensor, l2: bool = False) -> torch.Tensor:
    x = images.flatten(1).float().div(255)
    return torch.nn.functional.normalize(x, dim=1) if l2 else x


def untrained_model(data):
    """The network every run starts from, before training: built as a run builds it, after the
    trainer's seeding, with the preprocessing fitted on the training images."""
    from lightning.fabric.utilities.seed import seed_everything

    from fovea.tasks.metric import MetricLearning
    from fovea.train.config import TrainConfig

    cfg = TrainConfig.from_dict(settings())
    seed_everything(cfg.seed, verbose=False)
    model = MetricLearning().build_model(cfg, data, data.image_size)
    model.preprocess.fit(data.train.images)
    return model.eval()


def features(model, data, kind: str, domain: str | None = None) -> tuple:
    """(queries, gallery, validation) features of a bundle: model embeddings or pixels."""
    if kind in ("pixels", "l2 pixels"):
        q = pixels(data.test.images if not domain else _sketch_uint8(data.test.images), kind == "l2 pixels")
        return q, pixels(data.train.images, kind == "l2 pixels"), pixels(data.val.images, kind == "l2 pixels")
    branch_g = "b" if domain else "a"
    return (embed_images(model, data.test.images, "a", domain), embed_images(model, data.train.images, branch_g),
            embed_images(model, data.val.images, "a", domain))


def _sketch_uint8(images: torch.Tensor) -> torch.Tensor:
    from fovea.data.domains import sobel_sketch

    return sobel_sketch(images.float().div(255)).mul(255).round().to(torch.uint8)


def measure_bundle(model, data, kind: str = "model", domain: str | None = None) -> dict:
    q, g, v = features(model, data, kind, domain)
    return measure(q, data.test.labels, g, data.train.labels, v, data.val.labels)


def table_a(results: dict, data) -> dict:
    rows = {}
    for kind in ("pixels", "l2 pixels"):
        rows[f"raw {kind}" if kind == "pixels" else kind] = dict(dims=784, **measure_bundle(None, data, kind))
    rows["untrained network"] = dict(dims=64, **measure_bundle(untrained_model(data), data))
    for loss, miner in LOSS_ROWS:
        r = results[f"{loss}-{miner}"]
        rows[f"{loss} {miner}"] = dict(dims=64, **r["retrieval_after"], roc_auc=r["verification"]["roc_auc"],
                                       threshold=r["verification"]["threshold"],
                                       accuracy=r["verification"]["accuracy"],
                                       recall1_before=r["retrieval_before"]["recall@1"], run=r["run"])
    return rows


def table_b(results: dict, full) -> dict:
    """Seen and unseen classes, each measured within its own classes (relabelled 0..n-1)."""
    from fovea.data.subset import select_classes
    from fovea.tasks.metric import load_metric_model

    seen, unseen = select_classes(full, SEEN), select_classes(full, UNSEEN)
    r = results["triplet-semihard-classes-0-6"]
    model_06, _ = load_metric_model(r["run"])
    model_all, _ = load_metric_model(results["triplet-semihard"]["run"])
    rows = {}
    for name, model, kind in (("raw pixels", None, "pixels"), ("untrained network", untrained_model(full), "model"),
                              ("triplet semihard, trained on 0-6", model_06, "model"),
                              ("triplet semihard, trained on 0-9 (reference)", model_all, "model")):
        rows[name] = dict(seen=measure_bundle(model, seen, kind), unseen=measure_bundle(model, unseen, kind))
    # the run's own report measures the seen classes the same way: a cross-check
    rows["triplet semihard, trained on 0-6"]["run_report"] = dict(
        recall1=r["retrieval_after"]["recall@1"], roc_auc=r["verification"]["roc_auc"], run=r["run"])
    return dict(seen_classes=[full.classes[i] for i in SEEN], unseen_classes=[full.classes[i] for i in UNSEEN],
                gallery_unseen=len(unseen.train), queries_unseen=len(unseen.test), rows=rows)


def table_c(results: dict, data) -> dict:
    pix = measure_bundle(None, data, "pixels", "sketch")
    rows = {"raw pixels (sketch vs image)": {k: v for k, v in pix.items() if k.startswith("recall")}}
    for branches in BRANCHES:
        r = results[f"sketch-{branches}"]
        rows[branches] = dict(**r["retrieval_after"], before=r["retrieval_before"], run=r["run"])
    return rows


def sketch_sheet(run: Path, data, path: Path, title: str) -> None:
    """A few sketch queries (the first test image of some classes, as an edge map) and the
    training images nearest to them."""
    from fovea.apps.retrieval import contact_sheet
    from fovea.tasks.metric import euclidean_nearest, load_metric_model

    model, _ = load_metric_model(run)
    gallery = embed_images(model, data.train.images, "b")
    labels = data.test.labels
    classes = torch.linspace(0, len(data.classes) - 1, SHEET_QUERIES).round().long().tolist()
    pick = torch.tensor([int((labels == c).nonzero()[0]) for c in classes])
    queries = embed_images(model, data.test.images[pick], "a", "sketch")
    ids = euclidean_nearest(gallery, queries, SHEET_K)
    sketches = _sketch_uint8(data.test.images[pick])
    short = [c.split("/")[0] for c in data.classes]
    images, titles = [], []
    for row, qi in enumerate(pick.tolist()):
        images.append(sketches[row])
        titles.append(f"sketch: {short[labels[qi]]}")
        for gi in ids[row].tolist():
            d = float((queries[row] - gallery[gi]).norm())
            images.append(data.train.images[gi])
            titles.append(f"{d:.2f} {short[data.train.labels[gi]]}{'' if data.train.labels[gi] == labels[qi] else ' (x)'}")
    contact_sheet(torch.stack(images), titles, path, ncols=SHEET_K + 1, title=title)


def copy_figures(a: dict, c: dict, data, figures: Path) -> list[str]:
    figures.mkdir(parents=True, exist_ok=True)
    plots = Path(a["triplet semihard"]["run"]) / "plots"
    written = []
    for name in ("embedding-before", "embedding-after", "distances", "roc"):
        shutil.copyfile(plots / f"{name}.png", figures / f"metric-{name}.png")
        written.append(str(figures / f"metric-{name}.png"))
    best = max(BRANCHES, key=lambda b: c[b]["recall@1"])
    sheet = figures / "metric-sketch-retrieval.png"
    sketch_sheet(Path(c[best]["run"]), data, sheet,
                 f"sketch -> image, {best} branches (recall@1 {c[best]['recall@1']:.3f}): top {SHEET_K} "
                 "training images, distance")
    return written + [str(sheet)]


def print_tables(a: dict, b: dict, c: dict) -> None:
    print(f"\nA. Fashion-MNIST retrieval (10,000 test queries x 54,000 training images) and verification "
          f"(4,000 test pairs)\n  {'embedding':26s} recall@1 recall@5 ROC-AUC")
    for name, r in a.items():
        print(f"  {name:26s} {r['recall@1']:8.4f} {r['recall@5']:8.4f} {r['roc_auc']:7.4f}")
    print(f"\nB. triplet semihard trained on classes 0-6: seen (0-6) and unseen ({', '.join(b['unseen_classes'])})"
          f"\n  {'embedding':46s} seen R@1 seen AUC unseen R@1 unseen AUC")
    for name, r in b["rows"].items():
        s, u = r["seen"], r["unseen"]
        print(f"  {name:46s} {s['recall@1']:8.4f} {s['roc_auc']:8.4f} {u['recall@1']:10.4f} {u['roc_auc']:10.4f}")
    print(f"\nC. sketch -> image retrieval (10,000 test sketches x 54,000 training images)"
          f"\n  {'branches':30s} recall@1 recall@5")
    for name, r in c.items():
        print(f"  {name:30s} {r['recall@1']:8.4f} {r['recall@5']:8.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="bench/results/metric.json")
    ap.add_argument("--figures", default="docs/img", help="folder for the metric-*.png figures ('' for none)")
    ap.add_argument("--runs", help="keep the runs here and reuse those already there (default: a temporary folder)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    ap.add_argument("--jobs", type=int, default=2, help="runs trained at a time, in separate processes (default 2)")
    args = ap.parse_args()
    from fovea.data.sources import load_data

    torch.set_num_threads(args.threads)
    t0, load0 = time.perf_counter(), os.getloadavg()
    data = load_data("fashion-mnist", val_fraction=0.1, seed=0)  # the trainer's split: the gallery every run sees
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(args.runs or tmp)
        results = train_all(runs, args.jobs, args.threads)
        t_runs = time.perf_counter() - t0
        a = table_a(results, data)
        b = table_b(results, data)
        c = table_c(results, data)
        figures = copy_figures(a, c, data, Path(args.figures)) if args.figures else []
    semi, rand = a["triplet semihard"]["recall@1"], a["triplet random"]["recall@1"]
    baseline = max(a["raw pixels"]["recall@1"], a["l2 pixels"]["recall@1"], a["untrained network"]["recall@1"])
    checks = dict(semihard_beats_random=semi > rand, semihard_wide_above_baselines=semi >= baseline + WIDE,
                  unseen_auc_reported="roc_auc" in b["rows"]["triplet semihard, trained on 0-6"]["unseen"],
                  cross_domain_table=all(k in c for k in BRANCHES))
    result = dict(
        settings=dict(settings(), train_images=len(data.train), val_images=len(data.val), test_images=len(data.test)),
        table_a=a, table_b=b, table_c=c, wide_margin=WIDE, checks=checks, figures=figures, jobs=args.jobs,
        train_s={name: r["train_s"] for name, r in results.items()}, runs_s=t_runs,
        wall_s=time.perf_counter() - t0, load_avg_start=load0, load_avg_end=os.getloadavg(), cpus=os.cpu_count(),
        cpu=platform.processor() or platform.machine(), torch_threads=torch.get_num_threads(),
    )
    print_tables(a, b, c)
    print(f"\ntriplet semihard recall@1 {semi:.4f} vs random mining {rand:.4f}; best baseline {baseline:.4f} "
          f"(+{semi - baseline:.4f}, wide = +{WIDE})")
    for name, ok in checks.items():
        print(f"  {name}: {'holds' if ok else 'FAILS'}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json} ({result['wall_s']:.0f} s, load average {load0[0]:.1f} at the start)")


if __name__ == "__main__":
    main()
