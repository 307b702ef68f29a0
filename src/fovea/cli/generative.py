"""`fovea reconstruct`, `fovea generate` and `fovea anomaly fit|score|evaluate`: use trained
autoencoder and GAN runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fovea.errors import UserError


def _run_task(run_dir: str) -> str:
    from fovea.train.run import Run

    return Run.existing(run_dir).read_json("model.json").get("task", "?")


def _load_images(paths: list[str], channels: int, size: tuple[int, int]) -> tuple[torch.Tensor, list[str], list[str]]:
    """Images as floats in [0, 1] at the model's size and channels; an image of another size
    (H x W) is resized and one of other channels converted, and a note says so. A file that is
    not an image ends the command with one line."""
    from fovea.cli.infer import _collect
    from fovea.data.decode import load_image, probe_image

    files = _collect(paths)
    images, notes = [], []
    for f in files:
        (h, w), colour = probe_image(f)
        changes = []
        if (h, w) != tuple(size):
            changes.append(f"{h}x{w} resized to the model's {size[0]}x{size[1]}")
        if colour != (channels == 3):
            changes.append("colour converted to grayscale" if colour else f"grayscale repeated to {channels} channels")
        if changes:
            notes.append(f"{f}: {', '.join(changes)}")
        images.append(load_image(f, channels=channels, size=tuple(size)))
    return torch.stack(images).float().div(255), [str(f) for f in files], notes


def cmd_reconstruct(args) -> int:
    from fovea.report.plots import plot_image_grid
    from fovea.tasks.autoencode import anomaly_scores, load_autoencoder

    model, info = load_autoencoder(args.run)
    x, files, notes = _load_images(args.images, info["in_channels"], tuple(info["image_size"]))
    for note in notes:
        print(note)
    with torch.no_grad():
        recon = model(x).recon.float()
        mse = (recon - x).pow(2).flatten(1).mean(1)
        scores = anomaly_scores(model, x)
    out = Path(args.out)
    n = len(x)
    plot_image_grid(torch.cat([x, recon]), ["input"] * n + [f"mse {m:.4f}" for m in mse.tolist()], out,
                    ncols=min(n, 8) if n > 8 else n, title=f"reconstructions ({info['kind']} autoencoder)")
    results = [dict(path=f, mse=float(m), score=float(s)) for f, m, s in zip(files, mse, scores)]
    if args.json:
        print(json.dumps(dict(images=results, grid=str(out)), indent=2))
    else:
        for r in results:
            print(f"{r['path']}: reconstruction mse {r['mse']:.5f}")
        print(f"grid: {out}")
    return 0


def _samples(args) -> tuple[torch.Tensor, dict]:
    g = torch.Generator().manual_seed(args.seed)
    task = _run_task(args.run)
    if task == "gan":
        from fovea.tasks.gan import load_gan

        model, info = load_gan(args.run)
        return model.sample(args.n, generator=g).float(), info
    if task == "autoencoder":
        from fovea.tasks.autoencode import dae_chain, load_autoencoder, parse_noise

        model, info = load_autoencoder(args.run)
        if info.get("variational"):
            with torch.no_grad():
                return model.sample(args.n, generator=g).float(), info
        if info["kind"] == "denoising":
            start = torch.rand(args.n, info["in_channels"], *info["image_size"], generator=g)
            return dae_chain(model, start, args.steps, parse_noise(info["noise"]), generator=g)[-1].float(), info
        raise UserError(f"run {args.run!r} is a {info['kind']!r} autoencoder, which has no sampler; "
                        "generate from a vae or denoising autoencoder, or a gan")
    raise UserError(f"run {args.run!r} is a {task!r} run; generate needs a gan or an autoencoder run")


def cmd_generate(args) -> int:
    from fovea.report.plots import plot_image_grid

    if args.n < 1:
        raise UserError(f"-n {args.n}: expected at least 1 image")
    classifier = None
    if args.classifier:  # check it before spending time on samples
        from fovea.tasks.classify import load_classifier

        classifier, cls_info = load_classifier(args.classifier)
    images, info = _samples(args)
    out = Path(args.out)
    plot_image_grid(images, None, out, ncols=min(8, args.n), title=f"{args.n} samples")
    result: dict = dict(grid=str(out), n=args.n)
    if classifier is not None:
        result["quality"] = _quality(classifier, cls_info, images, info, args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.n} samples: {out}")
    q = result.get("quality")
    if q:
        print(f"Frechet distance in {Path(args.classifier).name}'s feature space (lower is better; "
              f"{q['n']} images each):")
        for k, v in q["fid"].items():
            print(f"  {k:8s} {v:10.3f}   class coverage {q['coverage'][k]:.2f}")
    return 0


def _quality(classifier, cls_info: dict, images: torch.Tensor, info: dict, args) -> dict:
    from fovea.apps.generative import generation_report
    from fovea.data.sources import load_data

    if cls_info["in_channels"] != info["in_channels"]:
        raise UserError(f"classifier {args.classifier!r} takes {cls_info['in_channels']}-channel images, "
                        f"the samples have {info['in_channels']}")
    data = load_data(info.get("data") or cls_info["data"], image_size=tuple(info["image_size"]), val_fraction=0.0)
    split = data.test if data.test is not None else data.train
    real = split.images[torch.randperm(len(split.images), generator=torch.Generator().manual_seed(0))[:2 * len(images)]]
    real = real.float().div(255)
    size = tuple(cls_info["image_size"])
    if real.shape[-2:] != size:
        import torch.nn.functional as F

        real = F.interpolate(real, size=size, mode="bilinear", antialias=True, align_corners=False)
        images = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
    return generation_report(classifier, real, images, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------------------- anomaly


def cmd_anomaly_fit(args) -> int:
    from fovea.cli.train import _print_result, config_from_args
    from fovea.train.loop import Trainer

    if not getattr(args, "normal_classes", None):
        raise UserError("anomaly fit needs --normal-classes, e.g. --normal-classes 0 or --normal-classes 0,1")
    args.task = "autoencoder"
    if not hasattr(args, "kind"):  # anomaly detection defaults to the convolutional autoencoder
        args.kind = "conv"
    cfg = config_from_args(args)
    result = Trainer(cfg).fit()
    _print_result(result)
    a = result.get("anomaly")
    if a:
        print(f"test: ROC-AUC {a['roc_auc']:.4f}  average precision {a['average_precision']:.4f}  "
              f"threshold {a['threshold']:.5g} ({a['threshold_rule']})")
    return 0


def cmd_anomaly_score(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import cm

    from fovea.report.plots import save_image
    from fovea.tasks.autoencode import anomaly_scores, image_errors, load_autoencoder
    from fovea.train.run import Run

    model, info = load_autoencoder(args.run)
    run = Run.existing(args.run)
    threshold = args.threshold
    if threshold is None and (run.path / "anomaly.json").is_file():
        threshold = run.read_json("anomaly.json").get("threshold")
    x, files, notes = _load_images(args.images, info["in_channels"], tuple(info["image_size"]))
    for note in notes:
        print(note)
    with torch.no_grad():
        scores = anomaly_scores(model, x)
        maps = image_errors(model, x)
    results = []
    for f, s, m in zip(files, scores.tolist(), maps):
        r = dict(path=f, score=s)
        if threshold is not None:
            r["anomalous"] = bool(s > threshold)
        if args.maps:
            heat = cm.inferno((m / max(float(maps.max()), 1e-12)).numpy())[..., :3]
            out = Path(args.maps) / (Path(f).stem + "-error.png")
            save_image(torch.from_numpy(heat).permute(2, 0, 1).float(), out)
            r["map"] = str(out)
        results.append(r)
    if args.json:
        print(json.dumps(dict(threshold=threshold, images=results), indent=2))
        return 0
    if threshold is None:
        print("no threshold: the run has no anomaly.json (train it with `fovea anomaly fit`) and --threshold "
              "was not given; scores only")
    for r in results:
        flag = "" if "anomalous" not in r else ("  ANOMALOUS" if r["anomalous"] else "  normal")
        print(f"{r['path']}: score {r['score']:.5g}{flag}" + (f"  map {r['map']}" if "map" in r else ""))
    return 0


def cmd_anomaly_evaluate(args) -> int:
    from fovea.apps.generative import anomaly_metrics, ocsvm_anomaly_scores, pca_anomaly_scores
    from fovea.data.sources import load_data
    from fovea.data.subset import parse_classes
    from fovea.tasks.autoencode import anomaly_scores, load_autoencoder
    from fovea.train.run import Run

    model, info = load_autoencoder(args.run)
    run = Run.existing(args.run)
    cfg = run.read_json("config.json")
    data = load_data(args.data or cfg["data"], image_size=tuple(info["image_size"]), channels=info["in_channels"],
                     val_fraction=0.0, seed=cfg.get("seed", 0))
    normal_text = args.normal_classes or cfg.get("normal_classes")
    if not normal_text:
        raise UserError(f"run {args.run!r} was not trained for anomaly detection; give --normal-classes")
    normal = parse_classes(normal_text, data.classes)
    split = data.test if data.test is not None else data.train
    x = split.images.float().div(255)
    is_anomaly = (~torch.isin(split.labels, torch.tensor(normal))).numpy()
    with torch.no_grad():
        scores = torch.cat([anomaly_scores(model, x[i:i + 512]) for i in range(0, len(x), 512)]).numpy()
    threshold = run.read_json("anomaly.json").get("threshold") if (run.path / "anomaly.json").is_file() else None
    rows = {f"{info['kind']} autoencoder": anomaly_metrics(scores, is_anomaly, threshold)}
    if args.baselines:
        train = data.train.images[torch.isin(data.train.labels, torch.tensor(normal))].float().div(255)
        flat_train, flat_test = train.flatten(1).numpy(), x.flatten(1).numpy()
        rows["PCA reconstruction error"] = anomaly_metrics(pca_anomaly_scores(flat_train, flat_test), is_anomaly)
        rows["one-class SVM on pixels"] = anomaly_metrics(ocsvm_anomaly_scores(flat_train, flat_test), is_anomaly)
    result = dict(normal_classes=[data.classes[c] for c in normal], n=len(x), anomalies=int(is_anomaly.sum()),
                  methods=rows)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"normal: {', '.join(result['normal_classes'])}; {len(x)} test images, {result['anomalies']} anomalous")
    print(f"  {'method':34s} ROC-AUC  avg precision")
    for name, m in rows.items():
        print(f"  {name:34s} {m['roc_auc']:.4f}   {m['average_precision']:.4f}")
    return 0


def register(sub) -> None:
    from fovea.cli.train import add_config_flags

    p = sub.add_parser("reconstruct", help="reconstruct images with a trained autoencoder run")
    p.add_argument("run", help="autoencoder run directory")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--out", default="reconstructions.png", help="grid PNG of inputs and reconstructions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("generate", help="sample images from a GAN, VAE or denoising-autoencoder run")
    p.add_argument("run", help="gan or autoencoder run directory")
    p.add_argument("-n", type=int, default=64, help="number of images")
    p.add_argument("--out", default="samples.png", help="grid PNG")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20, help="denoising autoencoder: steps of the sampling chain")
    p.add_argument("--classifier", metavar="RUN", help="a classifier run on the same data: report Frechet "
                                                       "distance and class coverage in its feature space")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("anomaly", help="anomaly detection with autoencoders: fit, score, evaluate")
    asub = p.add_subparsers(dest="anomaly_command", metavar="{fit,score,evaluate}", required=True,
                            parser_class=type(p))
    q = asub.add_parser("fit", help="train an autoencoder on the normal classes only")
    add_config_flags(q)
    q.set_defaults(func=cmd_anomaly_fit, resume=None, config=None)
    q = asub.add_parser("score", help="anomaly score per image, the run's threshold and per-pixel error maps")
    q.add_argument("run", help="autoencoder run directory")
    q.add_argument("images", nargs="+", help="image files or folders")
    q.add_argument("--threshold", type=float, help="default: the one chosen on validation data at training")
    q.add_argument("--maps", metavar="DIR", help="write per-pixel error maps here")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_anomaly_score)
    q = asub.add_parser("evaluate", help="ROC-AUC and average precision on the test split, with baselines")
    q.add_argument("run", help="autoencoder run directory")
    q.add_argument("--data", help="default: the run's own")
    q.add_argument("--normal-classes", help="default: the run's own")
    q.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                   help="also PCA reconstruction error and a one-class SVM on raw pixels")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_anomaly_evaluate)


__all__ = ["register"]
