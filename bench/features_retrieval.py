"""CNN features against raw pixels, for classification with a linear head and for retrieval.

(a) digits (scikit-learn's 8x8 digits, the fixed 1437/360 split of `load_data("digits")`): a
    linear SVM on the pre-logits features (84-d) of the fovea LeNet-5 demo recipe, against an
    RBF SVM on the 64 raw pixels (scikit-learn's SVC with its standard settings: gamma=0.001 as
    in scikit-learn's digits example, 98.9%, and gamma="scale", the default).
(b) Fashion-MNIST retrieval: every one of the 10,000 test images queries the 60,000 training
    images (cosine similarity, relevant = same class; exact, all 600M similarities, in chunks),
    with the 256-d pre-logits features of a 3-epoch fovea CNN against the 784 raw pixels.

    python bench/features_retrieval.py [--json bench/results/features_retrieval.json] [--figures docs/img]

Both models are trained here with the fovea trainer (about 2 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

os.environ.pop("FOVEA_RUN_DIR", None)  # a stray run directory from the caller's environment must not be reused

FASHION_CNN = dict(data="fashion-mnist", model="conv3x3-32,bn,relu,maxpool2,conv3x3-64,bn,relu,maxpool2,"
                   "conv3x3-128,bn,relu,maxpool2,fc256,relu,dropout0.5,fc10", epochs=3, batch_size=128, lr=0.1,
                   schedule="onecycle", weight_decay=5e-4, val_fraction=0.0,
                   precision="bf16-mixed", channels_last=True)  # as the fashion-mnist-fast recipe: ~2x on AVX-512 BF16
FIGURE_K = 8  # results per query in the docs' contact sheets (queries: the first test image of each class)


def train(settings: dict, out: Path) -> dict:
    from fovea.train.config import TrainConfig
    from fovea.train.loop import Trainer

    t0 = time.perf_counter()
    result = Trainer(TrainConfig.from_dict(dict(settings, out=str(out)))).fit()
    return dict(run=str(out), test_accuracy=result["test"]["acc"], train_s=time.perf_counter() - t0)


def rbf_svm_on_pixels() -> dict:
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    from fovea.data.sources import load_data

    d = load_data("digits")
    # back to the 0..16 grey levels of scikit-learn's digits, the scale gamma=0.001 was chosen for
    x, xt = (s.images.reshape(len(s), -1).double().numpy() * 16 / 255 for s in (d.train, d.test))
    y, yt = d.train.labels.numpy(), d.test.labels.numpy()
    out = {}
    for name, svc in (("gamma=0.001", SVC(kernel="rbf", gamma=0.001)), ("gamma=scale", SVC(kernel="rbf"))):
        out[name] = float((svc.fit(x, y).predict(xt) == yt).mean())
    grid = GridSearchCV(SVC(kernel="rbf"), dict(C=[1, 10, 100], gamma=["scale", 0.001, 0.003]), cv=5).fit(x, y)
    out["tuned by 5-fold CV on train"] = float((grid.predict(xt) == yt).mean())
    out["tuned_params"] = grid.best_params_
    return out


def digits_part(run: Path) -> dict:
    from fovea.apps.features import compute_features, fit_linear_head

    fs, _ = compute_features(str(run), None, device="cpu")  # the run's own data: digits at 32x32
    heads = {}
    for label, kwargs in (("linear SVM", dict(head="svm")), ("logistic regression", dict(head="logistic")),
                          ("linear SVM, PCA 32 + PQ 8 bytes", dict(head="svm", pca=32, pq=8))):
        heads[label] = fit_linear_head(fs, **kwargs).result
    return dict(features=fs.features.shape[1], heads=heads, rbf_svm_pixels=rbf_svm_on_pixels())


def fashion_part(run: Path, figures: Path | None) -> dict:
    from fovea.apps.features import compute_features
    from fovea.apps.retrieval import evaluate_retrieval

    out = {}
    feature_sets = {}
    for name, source in (("CNN pre-logits", str(run)), ("raw pixels", "pixels")):
        t0 = time.perf_counter()
        fs, _ = compute_features(source, "fashion-mnist", device="cpu")
        t1 = time.perf_counter()
        r = evaluate_retrieval(source, features=fs, gallery="train", queries="test", ks=(1, 10, 100))
        out[name] = dict(r, dims=fs.features.shape[1], extract_s=t1 - t0, rank_s=time.perf_counter() - t1)
        feature_sets[name] = fs
    if figures is not None:
        for name, fs in feature_sets.items():
            tag = "cnn" if name.startswith("CNN") else "pixels"
            draw_sheet(fs, figures / f"retrieval-fashion-{tag}.png",
                       f"Fashion-MNIST: nearest training images, {name} (mAP {out[name]['mAP']:.3f})")
    return out


def draw_sheet(fs, path: Path, title: str) -> None:
    from fovea.apps.retrieval import contact_sheet, l2_normalize, nearest
    from fovea.data.sources import load_data

    data = load_data("fashion-mnist")
    g, gl = fs.subset("train")
    q, ql = fs.subset("test")
    pick = torch.tensor([int((ql == c).nonzero()[0]) for c in range(len(data.classes))])
    scores, ids = nearest(l2_normalize(g), l2_normalize(q[pick]), FIGURE_K)
    images, titles = [], []
    short = [c.split("/")[0] for c in data.classes]
    for row, qi in enumerate(pick.tolist()):
        images.append(data.test.images[qi])
        titles.append(f"query: {short[ql[qi]]}")
        for s, gi in zip(scores[row].tolist(), ids[row].tolist()):
            images.append(data.train.images[gi])
            mark = "" if gl[gi] == ql[qi] else " (x)"
            titles.append(f"{s:.2f} {short[gl[gi]]}{mark}")
    contact_sheet(torch.stack(images), titles, path, ncols=FIGURE_K + 1, title=title)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="bench/results/features_retrieval.json")
    ap.add_argument("--figures", default="docs/img", help="folder for the retrieval contact sheets ('' for none)")
    ap.add_argument("--runs", help="keep the trained runs here (default: a temporary folder)")
    args = ap.parse_args()
    from fovea.train.config import apply_recipe

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(args.runs or tmp)
        lenet = train(apply_recipe("digits-lenet"), runs / "digits-lenet")
        cnn = train(FASHION_CNN, runs / "fashion-cnn")
        digits = digits_part(Path(lenet["run"]))
        fashion = fashion_part(Path(cnn["run"]), Path(args.figures) if args.figures else None)
    svm = digits["heads"]["linear SVM"]["test_accuracy"]
    rbf = digits["rbf_svm_pixels"]
    rbf_standard = max(rbf["gamma=0.001"], rbf["gamma=scale"])
    cnn_map, px_map = fashion["CNN pre-logits"]["mAP"], fashion["raw pixels"]["mAP"]
    result = dict(
        digits=dict(lenet_run=lenet, **digits), fashion_mnist=dict(cnn_run=cnn, retrieval=fashion),
        claims=dict(linear_svm_on_cnn_features=svm, rbf_svm_on_pixels=rbf_standard,
                    a_holds=svm >= rbf_standard, cnn_map=cnn_map, pixels_map=px_map, map_margin=cnn_map - px_map,
                    b_holds=cnn_map > px_map + 0.2),
        wall_s=time.perf_counter() - t0, cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
    )
    print()
    print(f"digits, fixed split ({digits['heads']['linear SVM']['n_eval']} test images){'test accuracy':>44s}")
    print(f"  {'LeNet-5 itself (softmax)':64s} {lenet['test_accuracy'] * 100:6.2f}%")
    for label, r in digits["heads"].items():
        print(f"  {label + ' on LeNet-5 pre-logits (84-d)':64s} {r['test_accuracy'] * 100:6.2f}%")
    for label in ("gamma=0.001", "gamma=scale", "tuned by 5-fold CV on train"):
        print(f"  {'RBF SVM on raw pixels (64-d), ' + label:64s} {rbf[label] * 100:6.2f}%")
    print(f"Fashion-MNIST retrieval, {fashion['CNN pre-logits']['queries']} test queries x "
          f"{fashion['CNN pre-logits']['gallery']} training images (cosine; relevant = same class)")
    print(f"  {'features':28s}    mAP    P@1   P@10  P@100")
    for name, r in fashion.items():
        label = f"{name} ({r['dims']}-d)"
        print(f"  {label:28s} {r['mAP']:.4f} {r['precision@1']:.4f} {r['precision@10']:.4f} "
              f"{r['precision@100']:.4f}")
    print(f"  (the CNN: {cnn['test_accuracy'] * 100:.2f}% test accuracy after {FASHION_CNN['epochs']} epochs)")
    print(f"(a) linear SVM on CNN features {svm * 100:.2f}% vs RBF SVM on pixels {rbf_standard * 100:.2f}%: "
          f"{'holds' if result['claims']['a_holds'] else 'FAILS'}")
    print(f"(b) retrieval mAP CNN {cnn_map:.4f} vs pixels {px_map:.4f} (+{cnn_map - px_map:.4f}): "
          f"{'holds' if result['claims']['b_holds'] else 'FAILS'}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
