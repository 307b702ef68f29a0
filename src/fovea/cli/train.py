"""`fovea train`, `fovea evaluate`, `fovea predict` and `fovea demo`."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from fovea.errors import UserError
from fovea.losses.metric import METRIC_LOSSES
from fovea.train.config import RECIPES, TASK_DEFAULTS, TrainConfig, apply_recipe, read_config_file

_HELP = {
    "data": "digits, fashion-mnist, mnist, cifar10, cifar100, svhn, stl10, an image folder or a CSV of path,label; "
            "the pixels-to-pixels and video tasks take their own (shapes, chairs, motorcycle, moving-shapes, ...)",
    "model": "registered model name or spec string",
    "model_kwargs": "JSON object of model options, e.g. '{\"norm\": \"bn\"}'",
    "init": "start from weights: a file, or 'torchvision' for ImageNet weights",
    "augment": "comma-separated augmentations, e.g. crop:4,hflip,rotate:15 (docs/training.md)",
    "preprocess": "none, mean-image, zscore, pca-whiten or zca-whiten (fitted on the training split)",
    "optimizer": "sgd, momentum, tutorial-momentum, nesterov, adagrad, rmsprop, adam, adamw",
    "schedule": "constant, step, exponential, cosine, onecycle, plateau",
    "loss": "ce, label-smoothing, hinge, squared-hinge; metric: contrastive or triplet (as --metric-loss); "
            "segment: ce or unet-weighted; depth: PHOTOMETRIC:SMOOTHNESS, e.g. ssim:edge (docs/depth.md)",
    "precision": "auto, 32-true, bf16-mixed, 16-mixed",
    "scale_lr": "linear scaling rule: lr x batch / 256",
    "out": "run directory (default runs/<model>-<data>-<time>)",
    "recipe": f"named settings: {', '.join(RECIPES)}",
    "kind": "autoencoder: fc, conv, linear, sparse, denoising, contractive, vae",
    "arch": "autoencoder: fc, conv, linear (default: the kind's); gan: fc, dcgan",
    "noise": "denoising autoencoder corruption: gaussian:SIGMA or mask:P",
    "gan_loss": "minimax or non-saturating",
    "normal_classes": "anomaly detection: train and validate on these classes only",
    "metric_loss": "contrastive or triplet",
    "miner": "all, random, hard, semihard, batch-hard (default: semihard for triplet, all for contrastive)",
    "branches": "shared, unshared or half (shared upper layers); unshared and half need --domain",
    "domain": "cross-domain: anchors are the images mapped to this domain (sketch)",
    "pk": "batches of P classes x K images, e.g. 10x12 (sets the batch size)",
    "num_classes": "segment: classes of a mask folder (ids 0 .. N-1; 255 is ignored)",
    "patch": "segment, superres, denoise, depth: side of the training crops (default: the task's)",
    "scale": "superres: the upscaling factor; depth: the factor the stereo pair is shrunk by",
    "sigma": "denoise: standard deviation of the Gaussian noise, in 0-255 units",
    "smoothness": "depth: weight of the disparity smoothness term",
    "clip": "video: frames per clip",
    "frames": "video: frames kept per video (default: the source's)",
    "flow_stack": "video, two-stream: L flow fields stacked into the temporal stream's 2L channels",
    "flow_method": "video, two-stream: farneback, dis or a fovea flow run directory",
}


def _field_type(f: dataclasses.Field):
    t = str(f.type)
    if t.startswith("list"):
        return "list"
    if t.startswith("dict"):
        return "dict"
    if t.startswith("bool"):
        return "bool"
    for name, typ in (("int", int), ("float", float)):
        if t.startswith(name):
            return typ
    return str


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; defaults are suppressed so only what the user typed
    overrides the recipe and the config file."""
    for f in dataclasses.fields(TrainConfig):
        if f.name == "task":
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _field_type(f)
        h = _HELP.get(f.name)
        if kind == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=h)
        elif kind == "list":
            p.add_argument(flag, type=int, nargs="+", default=argparse.SUPPRESS, help=h)
        elif kind == "dict":
            p.add_argument(flag, type=_json_object, default=argparse.SUPPRESS, help=h)
        else:
            p.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=h)


def _json_object(text: str) -> dict:
    try:
        v = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON ({e})") from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object")
    return v


def config_from_args(args) -> TrainConfig:
    settings: dict = {}
    if getattr(args, "config", None):
        settings.update(read_config_file(args.config))
    explicit = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)
                and f.name != "task"}
    recipe = explicit.get("recipe") or settings.get("recipe")
    base = apply_recipe(recipe) if recipe else {}
    task = getattr(args, "task", None) or settings.get("task") or base.get("task") or "classify"
    if task == "metric":  # `fovea train metric --loss triplet`: the metric loss, not a classifier's
        for source in (settings, explicit):
            if source.get("loss") in METRIC_LOSSES:
                source["metric_loss"] = source.pop("loss")
    merged = {**TASK_DEFAULTS.get(task, {}), **base, **settings, **explicit, "task": task}
    cfg = TrainConfig.from_dict(merged, source=f"config {args.config!r}" if getattr(args, "config", None) else "flags")
    _validate(cfg)
    return cfg


def _validate(cfg: TrainConfig) -> None:
    for name, low in (("epochs", 1), ("batch_size", 1), ("accumulate", 1), ("devices", 1), ("num_nodes", 1),
                      ("log_every_steps", 1)):
        if getattr(cfg, name) < low:
            raise UserError(f"--{name.replace('_', '-')} {getattr(cfg, name)} must be at least {low}")
    if cfg.lr <= 0:
        raise UserError(f"--lr {cfg.lr} must be positive")
    if not 0 <= cfg.val_fraction < 1:
        raise UserError(f"--val-fraction {cfg.val_fraction} must be in [0, 1)")
    if cfg.task == "autoencoder":
        from fovea.tasks.autoencode import check_kind

        check_kind(cfg.kind)
    if cfg.task == "video":
        from fovea.tasks.video import check_config

        check_config(cfg)
    if cfg.on_bad_image not in ("skip", "fail"):
        raise UserError(f"--on-bad-image {cfg.on_bad_image!r}: expected skip or fail")


def cmd_train(args) -> int:
    from fovea.train.loop import Trainer

    if args.task == "linear":  # a linear head on saved features: no training loop
        from fovea.cli.features import cmd_train_linear

        return cmd_train_linear(args)
    if args.resume:
        from fovea.train.run import Run

        run = Run.existing(args.resume)
        cfg = TrainConfig.from_dict(run.read_json("config.json"), source=str(run.config_path))
        if not run.last_ckpt.exists():
            raise UserError(f"run {args.resume!r} has no checkpoint to resume from ({run.last_ckpt})")
        result = Trainer(cfg, resume=run.path).fit()
    else:
        if not args.task and not args.config:
            raise UserError("say what to train: `fovea train classify ...`, `fovea train --config FILE` "
                            "or `fovea train --resume RUN`")
        cfg = config_from_args(args)
        result = Trainer(cfg).fit()
    _print_result(result)
    return 0


def _print_result(result: dict) -> None:
    test = result.get("test")
    if test:
        print("test: " + "  ".join(f"{k} {v:.4f}" for k, v in test.items()))
    print(f"run directory: {result['run']} (report: {Path(result['run']) / 'report.html'})")


def cmd_demo(args) -> int:
    """LeNet-5 on scikit-learn's digits with the default recipe."""
    import time

    from fovea.train.loop import Trainer

    t0 = time.perf_counter()
    cfg = TrainConfig.from_dict(dict(apply_recipe("digits-lenet"), out=args.out))
    result = Trainer(cfg).fit()
    acc = result["test"]["acc"]
    print(f"demo: LeNet-5 on digits, test accuracy {acc * 100:.2f}% ({time.perf_counter() - t0:.1f} s)")
    print(f"report: {Path(result['run']) / 'report.html'}")
    return 0


def register(sub) -> None:
    from fovea.tasks.base import TASK_MODULES

    tasks = [*TASK_MODULES, "linear"]
    p = sub.add_parser("train", help=f"train a model (a task: {', '.join(tasks)})")
    p.add_argument("task", nargs="?", choices=tasks,
                   help="what to train (linear: an SVM or logistic regression on saved features)")
    p.add_argument("--config", help="JSON or YAML file of settings (a run's config.json reruns it)")
    p.add_argument("--resume", metavar="RUN", help="continue a run from its last checkpoint")
    p.add_argument("--features", dest="features_file", metavar="FILE", help="linear: features from `fovea features`")
    p.add_argument("--head", dest="linear_head", default="svm", choices=["svm", "logistic"],
                   help="linear: LinearSVC or LogisticRegression")
    p.add_argument("--pca", dest="pca_dims", type=int, metavar="D", help="linear: project on D principal components")
    p.add_argument("--pq", "--pq-subvectors", dest="pq_subvectors", type=int, metavar="M",
                   help="linear: product-quantize into M one-byte codes (256 centroids each)")
    p.add_argument("--svm-c", dest="svm_c", type=float, default=1.0, help="linear: inverse regularization C")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="train LeNet-5 on the built-in digits and report the test accuracy")
    p.add_argument("--out", default="runs/demo", help="run directory")
    p.set_defaults(func=cmd_demo)


__all__ = ["register", "config_from_args"]
