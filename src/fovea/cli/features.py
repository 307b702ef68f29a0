"""`fovea features`, `fovea index`, `fovea search`, `fovea evaluate-retrieval`, and the body of
`fovea train linear`: a CNN as a feature extractor, linear heads on its features, and
content-based image retrieval (docs/transfer.md)."""

from __future__ import annotations

import json
from pathlib import Path

from fovea.errors import UserError

_MODEL_HELP = ("a fovea run directory, a registered model name or spec string (with --weights), "
               "or 'pixels' for the raw pixels")


def _splits(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in ("train", "val", "test")]
    if bad:
        raise UserError(f"--splits {text!r}: expected a comma-separated subset of train, val, test")
    return names


def _ks(text: str) -> list[int]:
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise UserError(f"-k {text!r}: expected comma-separated positive integers, e.g. 1,5,10") from None
    if not ks or min(ks) < 1:
        raise UserError(f"-k {text!r}: expected comma-separated positive integers, e.g. 1,5,10")
    return ks


def _print_layers(model) -> None:
    """Every layer name with its output shape for one input of the model's size."""
    import torch

    from fovea.apps.features import LOGITS, PRE_LOGITS, pool_activation

    shapes: dict[str, tuple] = {}
    handles = []
    for name, module in model.net.named_modules():
        if name:
            handles.append(module.register_forward_hook(
                lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:]))
                if isinstance(o, torch.Tensor) else None))
    x = torch.zeros(1, model.in_channels, *model.image_size, device=next(iter(model.state_dict().values()),
                                                                          torch.empty(0)).device)
    with torch.inference_mode():
        try:
            x = model.preprocess(x)
            if hasattr(model.net, "forward_head"):
                pre = model.net.forward_head(model.net.forward_features(x), pre_logits=True)
                shapes[PRE_LOGITS] = tuple(pre.shape[1:])
            out = model.net(x)
            out = getattr(out, "logits", out)
            if isinstance(out, torch.Tensor) and model.name != "pixels":
                shapes[LOGITS] = tuple(out.shape[1:])
        finally:
            for h in handles:
                h.remove()
    print(f"layers of {model.name} for a {model.in_channels}x{model.image_size[0]}x{model.image_size[1]} input "
          "(name, output shape, vector length with --pool avg):")
    width = max(len(n) for n in model.layer_names())
    for name in model.layer_names():
        shape = shapes.get(name)
        if shape is None:
            print(f"  {name:{width}s}  (not run)")
            continue
        dims = pool_activation(torch.zeros(1, *shape), "avg").shape[1]
        print(f"  {name:{width}s}  {'x'.join(map(str, shape)):>14s}  {dims}")


def cmd_features(args) -> int:
    from fovea.apps.features import compute_features, load_feature_model

    if args.list_layers:
        model = load_feature_model(args.model, weights=args.weights, image_size=args.image_size,
                                   in_channels=args.in_channels)
        _print_layers(model)
        return 0
    if not args.out:
        raise UserError("say where to write the features: --out FILE.safetensors")
    fs, cached = compute_features(args.model, args.data, layer=args.layer, pool=args.pool, out=args.out,
                                  splits=_splits(args.splits), force=args.force, weights=args.weights,
                                  image_size=args.image_size, in_channels=args.in_channels, data_root=args.data_root,
                                  batch_size=args.batch_size, device=args.device)
    counts = ", ".join(f"{name} {int((fs.split == i).sum())}" for i, name in enumerate(fs.split_names))
    verb = "up to date (same model, data, layer and pool; --force recomputes):" if cached else "wrote"
    print(f"{verb} {args.out}: {fs.features.shape[0]} x {fs.features.shape[1]} features of layer {fs.meta['layer']} "
          f"(pool {fs.meta['pool']}) of {fs.meta['model']} on {fs.meta['data']} ({counts}); "
          f"fingerprint {fs.meta['fingerprint']}")
    return 0


def cmd_train_linear(args) -> int:
    """`fovea train linear --features FILE --head svm|logistic [--pca D] [--pq M]`."""
    from fovea.apps.features import FeatureSet, fit_linear_head

    path = getattr(args, "features_file", None)
    if not path:
        raise UserError("`fovea train linear` needs --features FILE (from `fovea features`)")
    fs = FeatureSet.load(path)
    head = fit_linear_head(fs, args.linear_head, pca=args.pca_dims, pq=args.pq_subvectors, C=args.svm_c)
    r = head.result
    print(f"linear {r['head']} on {path} ({r['model']}, layer {r['layer']}, {r['features']} dims): "
          f"{r['n_train']} train" + (f", {r['n_eval']} {r['eval_split']}" if "eval_split" in r else ""))
    if "pca" in r:
        print(f"PCA to {r['pca']} dims keeps {r['pca_explained_variance'] * 100:.1f}% of the variance")
    if "pq_subvectors" in r:
        ev = r.get("eval_split")
        extra = f", {ev} {r['pq_relative_error_' + ev]:.4f}" if ev else ""
        print(f"product quantization: {r['pq_subvectors']} sub-vectors x 256 centroids = {r['code_bytes']} bytes "
              f"per vector (float32: {r['float_bytes']}); relative reconstruction error train "
              f"{r['pq_relative_error_train']:.4f}{extra}")
    line = f"train accuracy {r['train_accuracy']:.4f}"
    if "eval_split" in r:
        line += f"  {r['eval_split']} accuracy {r[r['eval_split'] + '_accuracy']:.4f}"
    print(line)
    out = getattr(args, "out", None)
    if out:
        head.save(Path(out) / "linear.safetensors")
        (Path(out) / "linear.json").write_text(json.dumps(dict(r, features_file=str(path)), indent=2) + "\n")
        print(f"wrote {Path(out) / 'linear.safetensors'} and linear.json")
    return 0


def cmd_index(args) -> int:
    from fovea.apps.features import load_feature_model
    from fovea.apps.retrieval import build_index

    model = load_feature_model(args.model, weights=args.weights, image_size=args.image_size,
                               in_channels=args.in_channels, device=args.device)
    index = build_index(model, args.folder, layer=args.layer, pool=args.pool, batch_size=args.batch_size)
    index.save(args.out)
    print(f"wrote {args.out}: {len(index)} images x {index.embeddings.shape[1]} dims "
          f"({model.name}, layer {args.layer}, fingerprint {model.fingerprint})")
    return 0


def cmd_search(args) -> int:
    import torch

    from fovea.apps.features import LayerExtractor, load_feature_model
    from fovea.apps.retrieval import Index, check_model, contact_sheet, l2_normalize, load_thumbnails, nearest
    from fovea.data.decode import load_image

    if args.top_k < 1:
        raise UserError(f"-k {args.top_k}: expected at least 1")
    index = Index.load(args.index)
    meta = index.meta
    if args.model:
        own = Path(args.model).is_dir()  # a run has its own input size; a mismatch shows as another fingerprint
        model = load_feature_model(args.model, weights=args.weights, image_size=None if own else meta["image_size"],
                                   in_channels=None if own else meta["in_channels"], device=args.device)
    else:
        try:
            model = load_feature_model(meta["source"], weights=meta.get("weights"), image_size=meta["image_size"],
                                       in_channels=meta["in_channels"], device=args.device)
        except UserError as e:
            raise UserError(f"cannot rebuild the model of index {args.index!r} ({e}); "
                            "pass it with --model MODEL_OR_RUN") from None
    check_model(index, model, args.index)
    if not Path(args.image).is_file():
        raise UserError(f"query image {args.image!r} not found")
    query = load_image(args.image, channels=model.in_channels, size=model.image_size)
    emb = l2_normalize(LayerExtractor(model, meta["layer"], meta["pool"])(query[None].to(
        next(iter(model.state_dict().values()), torch.empty(0)).device)).cpu())
    scores, ids = nearest(index.embeddings, emb, args.top_k, backend=args.backend)
    results = [dict(rank=r + 1, path=index.paths[i], score=round(float(s), 6))
               for r, (s, i) in enumerate(zip(scores[0].tolist(), ids[0].tolist()))]
    sheet = None
    if args.sheet:
        thumbs, ok = load_thumbnails([r["path"] for r in results], model.in_channels, model.image_size)
        titles = ["query: " + _short(args.image)] + [
            f"{r['score']:.3f} {_short(r['path'])}" + ("" if good else " (missing)") for r, good in zip(results, ok)]
        sheet = str(contact_sheet(torch.cat([query[None], thumbs]), titles, args.sheet,
                                  ncols=min(len(titles), 6), title=f"nearest to {_short(args.image)} ({model.name})"))
    if args.json:
        print(json.dumps(dict(query=args.image, index=args.index, model=model.name, results=results, sheet=sheet),
                         indent=2))
        return 0
    print(f"nearest to {args.image} among {len(index)} images ({model.name}, layer {meta['layer']}, cosine):")
    for r in results:
        print(f"{r['rank']:3d}  {r['score']:.4f}  {r['path']}")
    if sheet:
        print(f"wrote {sheet}")
    return 0


def _short(path: str, width: int = 22) -> str:
    name = Path(path).name
    return name if len(name) <= width else "..." + name[-(width - 3):]


def cmd_evaluate_retrieval(args) -> int:
    from fovea.apps.features import FeatureSet
    from fovea.apps.retrieval import evaluate_retrieval

    if not args.model and not args.features_file:
        raise UserError("say what to evaluate: MODEL_OR_RUN, or --features FILE from `fovea features`")
    fs = FeatureSet.load(args.features_file) if args.features_file else None
    r = evaluate_retrieval(args.model, args.data, gallery=args.gallery, queries=args.queries, ks=_ks(args.ks),
                           layer=args.layer, pool=args.pool, max_queries=args.max_queries, weights=args.weights,
                           image_size=args.image_size, in_channels=args.in_channels, data_root=args.data_root,
                           batch_size=args.batch_size, device=args.device, features=fs)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"retrieval on {r['data']}: {r['queries']} {r['query_split']} queries against {r['gallery']} "
          f"{r['gallery_split']} images, {r['model']} layer {r['layer']} (cosine; relevant = same label)")
    line = f"mAP {r['mAP']:.4f}"
    for key in (k for k in r if k.startswith("precision@")):
        line += f"  {key} {r[key]:.4f}"
    print(line)
    if r["no_relevant"]:
        print(f"({r['no_relevant']} queries had no relevant gallery image and are left out)")
    return 0


def _model_flags(p, layer: bool = True) -> None:
    p.add_argument("--weights", help="for a registered model: 'torchvision' (ImageNet) or a weights file")
    p.add_argument("--image-size", type=int, help="input side for a registered model (default: its published size)")
    p.add_argument("--in-channels", type=int, choices=[1, 3], help="input channels for a registered model")
    if layer:
        p.add_argument("--layer", default="pre_logits",
                       help="pre_logits (default), logits, or a module name such as layer3 (--list-layers)")
        p.add_argument("--pool", default="avg", choices=["avg", "max", "none"],
                       help="reduce a feature map to a vector: global avg / max pooling, or none (flatten)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")


def register(sub) -> None:
    p = sub.add_parser("features", help="activations of any layer of a run or model, saved with labels and paths")
    p.add_argument("model", metavar="MODEL_OR_RUN", help=_MODEL_HELP)
    p.add_argument("--data", help="images: a data set name, folder or CSV (default: a run's own data)")
    p.add_argument("--data-root", help="where built-in data sets are read from")
    p.add_argument("--out", help="features file (.safetensors)")
    p.add_argument("--splits", help="comma-separated splits to extract (default: every split the data has)")
    p.add_argument("--force", action="store_true", help="recompute even when --out holds the same features")
    p.add_argument("--list-layers", action="store_true", help="print the layer names and their output shapes")
    _model_flags(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("index", help="embed a folder of images for `fovea search`")
    p.add_argument("model", metavar="MODEL_OR_RUN", help=_MODEL_HELP)
    p.add_argument("folder", help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="index file (.safetensors)")
    _model_flags(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="the images of an index nearest to a query image")
    p.add_argument("index", help="index file from `fovea index`")
    p.add_argument("image", help="query image")
    p.add_argument("-k", "--top-k", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.add_argument("--sheet", metavar="FILE", help="write a contact sheet PNG: the query and its results")
    p.add_argument("--model", metavar="MODEL_OR_RUN", help="query model (default: the index's own)")
    p.add_argument("--weights", help="weights for --model")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "faiss"],
                   help="exact search in torch, or FAISS (auto: FAISS when installed and the gallery is large)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("evaluate-retrieval", help="mAP and precision@k of retrieval on labelled data")
    p.add_argument("model", metavar="MODEL_OR_RUN", nargs="?", help=_MODEL_HELP)
    p.add_argument("--data", help="labelled images (default: a run's own data)")
    p.add_argument("--data-root", help="where built-in data sets are read from")
    p.add_argument("--features", dest="features_file", help="use a features file instead of a model")
    p.add_argument("--gallery", default="train", choices=["train", "val", "test"])
    p.add_argument("--queries", default="test", choices=["train", "val", "test"])
    p.add_argument("-k", "--ks", default="1,5,10,100", help="precision@k cut-offs, comma-separated")
    p.add_argument("--max-queries", type=int, help="an evenly spaced subset of the queries (default: all)")
    p.add_argument("--json", action="store_true")
    _model_flags(p)
    p.set_defaults(func=cmd_evaluate_retrieval)


__all__ = ["cmd_train_linear", "register"]
