"""`fovea evaluate` and `fovea predict`: use a trained classifier run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fovea.errors import UserError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def cmd_evaluate(args) -> int:
    from sklearn.metrics import precision_recall_fscore_support

    from fovea.data.sources import load_data
    from fovea.report.plots import plot_confusion
    from fovea.tasks.classify import confusion_matrix, load_classifier, predict_batches
    from fovea.train.data import Batches
    from fovea.train.run import Run

    if args.eps is not None and not args.attack:
        raise UserError("--eps needs --attack fgsm or --attack pgd")
    model, info = load_classifier(args.run)
    run = Run.existing(args.run)
    cfg = run.read_json("config.json")
    spec = args.data or cfg["data"]
    size = tuple(info["image_size"])
    data = load_data(spec, root=cfg.get("data_root"), image_size=size, channels=info["in_channels"],
                     val_fraction=cfg.get("val_fraction", 0.0) if not args.data else 0.0, seed=cfg.get("seed", 0))
    if cfg.get("classes") and list(data.classes) != list(info["classes"]):  # a run on some classes only
        from fovea.data.subset import parse_classes, select_classes

        data = select_classes(data, parse_classes(cfg["classes"], data.classes))
    if list(data.classes) != list(info["classes"]):
        raise UserError(f"data {spec!r} has classes {data.classes[:5]}..., the run was trained on {info['classes'][:5]}...")
    split_name = args.split
    split = getattr(data, split_name)
    if split is None:
        raise UserError(f"data {spec!r} has no {split_name} split; try --split val or --split train")
    batches = Batches(split, args.batch_size, torch.device("cpu"), shuffle=False, image_size=size)
    if args.attack:
        return _evaluate_attack(args, model, run, batches, split_name)
    logits, labels, _ = predict_batches(model, batches)
    pred = logits.argmax(1)
    k = min(5, logits.shape[1])
    acc = (pred == labels).float().mean().item()
    top5 = (logits.topk(k, 1).indices == labels[:, None]).any(1).float().mean().item()
    p, r, f1, support = precision_recall_fscore_support(labels.numpy(), pred.numpy(),
                                                        labels=list(range(len(info["classes"]))), zero_division=0)
    cm = confusion_matrix(pred, labels, len(info["classes"]))
    out_png = Path(args.out) if args.out else run.path / "plots" / f"confusion-{split_name}.png"
    plot_confusion(cm, info["classes"], out_png)
    result = dict(split=split_name, n=len(labels), accuracy=acc, top5=top5,
                  per_class=[dict(cls=c, precision=float(p[i]), recall=float(r[i]), f1=float(f1[i]),
                                  support=int(support[i])) for i, c in enumerate(info["classes"])],
                  confusion=cm.tolist(), confusion_png=str(out_png))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{split_name}: {len(labels)} images  accuracy {acc:.4f}  top-{k} {top5:.4f}")
    w = max(len(c) for c in info["classes"])
    print(f"{'class':{w}s}  precision  recall      f1  support")
    for row in result["per_class"]:
        print(f"{row['cls']:{w}s}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:6.4f}  {row['support']:7d}")
    print("confusion matrix (rows: true, columns: predicted):")
    for i, rowv in enumerate(cm.tolist()):
        print(f"{info['classes'][i]:{w}s} " + " ".join(f"{v:5d}" for v in rowv))
    print(f"wrote {out_png}")
    return 0


DEFAULT_ATTACK_EPS = (0.0, 0.05, 0.1, 0.2)


def eps_list(text: str) -> list[float]:
    """``"0,0.05,0.1"`` -> ``[0.0, 0.05, 0.1]``; every value a number >= 0."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 0,0.05,0.1") from None
    if not values or any(not (v >= 0 and v != float("inf")) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected finite numbers >= 0, e.g. 0,0.05,0.1")
    return sorted(set(values))


def _evaluate_attack(args, model, run, batches, split_name: str) -> int:
    """Accuracy against eps under FGSM or PGD (L-inf, pixels in [0, 1]): a table and a plot."""
    from fovea.apps.adversarial import accuracy_under_attack, plot_attack_curve

    eps = args.eps if args.eps is not None else list(DEFAULT_ATTACK_EPS)
    generator = torch.Generator().manual_seed(0)  # PGD's random start: the same curve every time
    kwargs = dict(generator=generator) if args.attack == "pgd" else {}
    curve = accuracy_under_attack(model, batches, args.attack, eps, **kwargs)
    out_png = Path(args.out) if args.out else run.path / "plots" / f"attack-{args.attack}-{split_name}.png"
    plot_attack_curve({args.attack: curve}, out_png, title=f"{run.path.name}: {args.attack} on {split_name}")
    result = dict(split=split_name, n=len(batches.split), attack=args.attack, norm="linf",
                  steps=10 if args.attack == "pgd" else 1,
                  curve=[dict(eps=e, accuracy=a) for e, a in curve.items()], plot=str(out_png))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{split_name}: {result['n']} images under {args.attack} (L-inf"
          f"{', 10 steps, random start' if args.attack == 'pgd' else ''})")
    print("     eps  accuracy")
    for e, a in curve.items():
        print(f"{e:8.4f}  {a:8.4f}")
    print(f"wrote {out_png}")
    return 0


def _collect(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTS)
        elif p.exists():
            files.append(p)
        else:
            raise UserError(f"image {str(p)!r} not found")
    if not files:
        raise UserError(f"no images found in {', '.join(paths)}")
    return files


BACKENDS = ("auto", "torch", "onnxruntime")


def pick_backend(requested: str) -> str:
    """``auto``: onnxruntime when it is installed, else torch. On CPU onnxruntime ran the zoo's
    classifiers fastest of the paths `fovea predict` can take without a long start-up
    (bench/inference.py: eager NCHW, channels_last, onnxruntime; torch.compile is left out, its
    compile costs more than a folder of images takes)."""
    if requested != "auto":
        return requested
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnxruntime"


class OnnxForward:
    """The classifier exported to ONNX (in a temp folder, removed at once) and run by onnxruntime's CPU
    provider with as many threads as torch uses; called like the model on a float batch."""

    def __init__(self, model, info: dict):
        import tempfile

        from fovea.apps.export import Exportable, export_onnx, onnx_session

        ex = Exportable(model, info, (info["in_channels"], *info["image_size"]), output_name="logits")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            export_onnx(ex, path)
            self.session = onnx_session(path, threads=torch.get_num_threads())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"images": x.numpy()})[0])


def predict_forward(model, info: dict, backend: str):
    """The function `fovea predict` calls on each float batch: the model itself, or its onnxruntime
    export. ``auto`` falls back to torch (with a note on stderr) when the export fails."""
    import sys

    chosen = pick_backend(backend)
    if chosen == "torch":
        return model
    try:
        return OnnxForward(model, info)
    except ImportError:
        raise UserError("--backend onnxruntime: the onnxruntime package is not installed "
                        "(pip install onnxruntime), or use --backend torch") from None
    except Exception as e:  # an architecture the exporter cannot trace
        if backend != "auto":
            raise UserError(f"--backend onnxruntime: the model did not export to ONNX ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); use --backend torch") from None
        print(f"fovea predict: onnxruntime unavailable for this model ({type(e).__name__}); using torch",
              file=sys.stderr)
        return model


def cmd_predict(args) -> int:
    import sys

    from tqdm import tqdm

    from fovea.data.decode import BadImageError, load_image
    from fovea.tasks.classify import load_classifier
    from fovea.train.run import Run

    if Run.existing(args.run).read_json("model.json").get("task") == "video":
        from fovea.cli.video import cmd_predict_video

        return cmd_predict_video(args)
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: expected at least 1")
    model, info = load_classifier(args.run)
    size = tuple(info["image_size"])
    results = []
    files = _collect(args.images)
    forward = predict_forward(model, info, args.backend)
    bar = tqdm(total=len(files), unit="img", desc="predict", file=sys.stderr,
               disable=args.json or not sys.stderr.isatty())
    for start in range(0, len(files), args.batch_size):
        chunk, imgs = [], []
        for f in files[start:start + args.batch_size]:
            try:
                imgs.append(load_image(f, channels=info["in_channels"], size=size))
                chunk.append(f)
            except BadImageError as e:
                if len(files) == 1:
                    raise
                results.append(dict(path=str(f), error=str(e)))
        if imgs:
            with torch.no_grad():
                probs = forward(torch.stack(imgs).float().div_(255)).float().softmax(1)
            for f, row in zip(chunk, probs):
                results.append(dict(path=str(f), top=top_classes(row, info["classes"], args.top_k)))
        bar.update(len(files[start:start + args.batch_size]))
    bar.close()
    return print_predictions(results, args.json)


def top_classes(probs: torch.Tensor, classes: list[str], k: int) -> list[dict]:
    """The ``k`` most probable classes of one probability vector, most probable first."""
    top = probs.topk(min(k, len(probs)))
    return [dict(cls=classes[j], prob=round(float(p), 6)) for p, j in zip(top.values.tolist(), top.indices.tolist())]


def print_predictions(results: list[dict], as_json: bool) -> int:
    """`fovea predict`'s output: JSON, or a line per input (its frames too, for a video)."""
    if as_json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        if "error" in r:
            print(f"{r['path']}: skipped ({r['error']})")
        else:
            where = f"{r['path']} ({r['frames']} frames)" if "frames" in r else r["path"]
            print(f"{where}: " + ", ".join(f"{t['cls']} {t['prob']:.3f}" for t in r["top"]))
    return 0


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy, top-5, per-class precision/recall/F1, confusion matrix")
    p.add_argument("run", help="run directory")
    p.add_argument("--data", help="evaluate on other data (default: the run's own)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", help="confusion-matrix PNG (default RUN/plots/confusion-SPLIT.png); with --attack "
                                 "the accuracy-versus-eps plot (default RUN/plots/attack-METHOD-SPLIT.png)")
    p.add_argument("--attack", choices=["fgsm", "pgd"], help="accuracy under an adversarial attack instead")
    p.add_argument("--eps", type=eps_list, help="with --attack: comma-separated L-inf sizes, pixels in [0, 1] "
                                                "(default 0,0.05,0.1,0.2)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="top-k classes of images (or of videos, with a video run) with a trained run")
    p.add_argument("run", help="run directory")
    p.add_argument("images", nargs="+", help="image files or folders; for a video run, video files or folders "
                                             "of frames")
    p.add_argument("-k", "--top-k", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="image runs: torch (eager PyTorch) or onnxruntime (the model exported to ONNX, run on CPU); "
                        "auto (default) takes onnxruntime when installed, the fastest on CPU in bench/inference.py")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)
