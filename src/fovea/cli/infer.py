"""`fovea evaluate` and `fovea predict`: use a trained classifier run."""

from __future__ import annotations

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

    model, info = load_classifier(args.run)
    run = Run.existing(args.run)
    cfg = run.read_json("config.json")
    spec = args.data or cfg["data"]
    size = tuple(info["image_size"])
    data = load_data(spec, root=cfg.get("data_root"), image_size=size, channels=info["in_channels"],
                     val_fraction=cfg.get("val_fraction", 0.0) if not args.data else 0.0, seed=cfg.get("seed", 0))
    if list(data.classes) != list(info["classes"]):
        raise UserError(f"data {spec!r} has classes {data.classes[:5]}..., the run was trained on {info['classes'][:5]}...")
    split_name = args.split
    split = getattr(data, split_name)
    if split is None:
        raise UserError(f"data {spec!r} has no {split_name} split; try --split val or --split train")
    logits, labels, _ = predict_batches(model, Batches(split, args.batch_size, torch.device("cpu"), shuffle=False,
                                                       image_size=size))
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


def cmd_predict(args) -> int:
    from fovea.data.decode import BadImageError, load_image
    from fovea.tasks.classify import load_classifier

    model, info = load_classifier(args.run)
    size = tuple(info["image_size"])
    results = []
    files = _collect(args.images)
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
        if not imgs:
            continue
        with torch.no_grad():
            probs = model(torch.stack(imgs).float().div_(255)).float().softmax(1)
        top = probs.topk(min(args.top_k, probs.shape[1]), 1)
        for f, v, i in zip(chunk, top.values, top.indices):
            results.append(dict(path=str(f), top=[dict(cls=info["classes"][j], prob=round(float(p), 6))
                                                  for p, j in zip(v.tolist(), i.tolist())]))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        if "error" in r:
            print(f"{r['path']}: skipped ({r['error']})")
        else:
            print(f"{r['path']}: " + ", ".join(f"{t['cls']} {t['prob']:.3f}" for t in r["top"]))
    return 0


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy, top-5, per-class precision/recall/F1, confusion matrix")
    p.add_argument("run", help="run directory")
    p.add_argument("--data", help="evaluate on other data (default: the run's own)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", help="confusion-matrix PNG (default RUN/plots/confusion-SPLIT.png)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="top-k classes of images with a trained run")
    p.add_argument("run", help="run directory")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("-k", "--top-k", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)
