"""Adversarial examples on Fashion-MNIST: how far FGSM and PGD lower a fovea CNN's accuracy, how
much adversarial training buys back, and whether noise can be grown into a >= 99%-confident
"fooling" image of every class.

    python bench/adversarial.py [--json bench/results/adversarial.json] [--plots docs/img]

Models (the 3-block CNN of the fashion-mnist-fast recipe, fp32, no augmentation):

- plain: 3 epochs of one-cycle SGD with the fovea trainer;
- adversarial: the same settings with ``adv_train="fgsm", adv_eps=0.1`` (``--adv-train fgsm``):
  each step's loss is the mean over the clean batch and its FGSM copy, 0.5 * CE(x) + 0.5 *
  CE(x_fgsm) (Goodfellow et al. 2015), the copy made by ``adversarial_batch``.

Evaluation on the first 2000 test images; L-inf eps on pixels in [0, 1]; PGD: 10 steps of
2.5 * eps / 10 from a random start. Targets (asserted by tests/slow/test_adversarial_slow.py):
FGSM at eps 0.1 costs the plain model >= 50 points, PGD at least as much as FGSM, adversarial
training adds >= 20 points under FGSM eps 0.1, and every fooling image reaches >= 99%.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from fovea.apps.adversarial import accuracy_under_attack, fgsm, fooling_image, pgd, plot_attack_curve, quantize
from fovea.data.sources import load_data
from fovea.report.plots import plot_image_grid
from fovea.tasks.classify import load_classifier
from fovea.train.config import TrainConfig
from fovea.train.loop import Trainer

MODEL = ("conv3x3-32,bn,relu,maxpool2,conv3x3-64,bn,relu,maxpool2,conv3x3-128,bn,relu,maxpool2,"
         "fc256,relu,dropout0.5,fc10")
EPS = 0.1
CURVE_EPS = [0.0, 0.01, 0.025, 0.05, 0.1, 0.2]


def train(out: Path, epochs: int, **extra) -> tuple[Path, float | None]:
    """A run of the trainer and its wall time (``None``: reused, ``out`` already held one)."""
    if (out / "model.safetensors").exists():
        return out, None
    t0 = time.perf_counter()
    os.environ.pop("FOVEA_RUN_DIR", None)
    Trainer(TrainConfig(data="fashion-mnist", model=MODEL, epochs=epochs, batch_size=128, lr=0.1,
                        schedule="onecycle", val_fraction=0.0, out=str(out), **extra)).fit()
    return out, time.perf_counter() - t0


def curves(model, x, y, eps_list, seed: int = 0) -> dict[str, dict[float, float]]:
    torch.manual_seed(seed)
    return dict(fgsm=accuracy_under_attack(model, (x, y), "fgsm", eps_list),
                pgd=accuracy_under_attack(model, (x, y), "pgd", eps_list,
                                          generator=torch.Generator().manual_seed(seed)))


def _short(name: str) -> str:
    return name.split("/")[0]


def example_plots(model, x, y, classes, plots: Path) -> dict:
    """FGSM examples, one targeted attack (the owl-to-cheetah case) and their pictures."""
    with torch.no_grad():
        idx = torch.cat([(y == c).nonzero()[0] for c in range(10)])[:8]  # one image of each of 8 classes
    xs, ys = x[idx], y[idx]
    x_adv = quantize(fgsm(model, xs, ys, EPS), reference=xs)
    with torch.no_grad():
        p0, p1 = model(xs).softmax(1), model(x_adv).softmax(1)
    titles = [f"{_short(classes[int(p.argmax())])} {float(p.max()):.2f}" for p in torch.cat([p0, p1])]
    delta = 0.5 + (x_adv - xs) / (2 * EPS)
    plot_image_grid(torch.cat([xs, delta, x_adv]), titles[:8] + [""] * 8 + titles[8:], plots / "adv-fgsm.png",
                    ncols=8, title=f"FGSM, eps = {EPS}: clean (top), sign of the perturbation, adversarial (bottom)")
    # targeted: a sneaker that the model should take for a bag
    src, tgt = classes.index("Sneaker"), classes.index("Bag")
    with torch.no_grad():
        i = int(((y == src) & (model(x).argmax(1) == src)).nonzero()[0])
    xt = x[i:i + 1]
    xt_adv = quantize(pgd(model, xt, y[i:i + 1], EPS, steps=20, target=tgt, generator=torch.Generator().manual_seed(0)),
                      reference=xt)
    with torch.no_grad():
        q0, q1 = model(xt).softmax(1)[0], model(xt_adv).softmax(1)[0]
    linf = float((xt_adv - xt).abs().max())
    plot_image_grid(torch.cat([xt, 0.5 + (xt_adv - xt) / (2 * linf + 1e-12), xt_adv]),
                    [f"{classes[int(q0.argmax())]} {float(q0.max()):.2f}", f"+ perturbation (L-inf {linf:.3f})",
                     f"{classes[int(q1.argmax())]} {float(q1.max()):.2f}"],
                    plots / "adv-targeted.png", ncols=3, title="targeted PGD: Sneaker -> Bag")
    return dict(source=classes[src], target=classes[tgt], eps=EPS, steps=20, linf=linf,
                before=dict(cls=classes[int(q0.argmax())], prob=float(q0.max()), target_prob=float(q0[tgt])),
                after=dict(cls=classes[int(q1.argmax())], prob=float(q1.max()), target_prob=float(q1[tgt])))


def fooling(model, classes, plots: Path | None) -> list[dict]:
    rows, images = [], []
    for c in range(len(classes)):
        img, conf, steps = fooling_image(model, c, (1, 28, 28), generator=torch.Generator().manual_seed(c))
        rows.append(dict(cls=classes[c], confidence=conf, steps=steps))
        images.append(img)
    if plots is not None:
        plot_image_grid(torch.stack(images), [f"{_short(r['cls'])} {r['confidence']:.3f}" for r in rows],
                        plots / "adv-fooling.png", ncols=5, title="fooling images grown from noise")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="bench/results/adversarial.json")
    ap.add_argument("--plots", help="folder for adv-*.png (docs/img for the docs)")
    ap.add_argument("--workdir", help="keep the runs here and reuse them on the next call (default: a temp dir)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-eval", type=int, default=2000)
    args = ap.parse_args()
    torch.manual_seed(0)
    tmp = tempfile.TemporaryDirectory()
    work = Path(args.workdir or tmp.name)
    plots = Path(args.plots) if args.plots else None
    timings = {}

    plain_dir, timings["train_plain_s"] = train(work / "plain", args.epochs)
    plain, info = load_classifier(plain_dir)
    classes = info["classes"]
    data = load_data("fashion-mnist", val_fraction=0.0)
    x, y = data.test.images[:args.n_eval].float() / 255, data.test.labels[:args.n_eval]

    adv_dir, timings["train_adversarial_s"] = train(work / "adv", args.epochs, adv_train="fgsm", adv_eps=EPS)
    adv_model, _ = load_classifier(adv_dir)

    t0 = time.perf_counter()
    plain_curves = curves(plain, x, y, CURVE_EPS)
    adv_curves = curves(adv_model, x, y, CURVE_EPS)
    timings["evaluate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fool = fooling(plain, classes, plots)
    timings["fooling_s"] = time.perf_counter() - t0

    clean, at_fgsm, at_pgd = plain_curves["fgsm"][0.0], plain_curves["fgsm"][EPS], plain_curves["pgd"][EPS]
    adv_fgsm = adv_curves["fgsm"][EPS]
    result = dict(
        data="fashion-mnist", model=MODEL, n_eval=len(y), eps=EPS, epochs=args.epochs,
        adversarial_model=f"fovea trainer with adv_train='fgsm', adv_eps={EPS}, same settings as plain",
        plain=dict(clean=clean, fgsm=at_fgsm, pgd=at_pgd, curves=plain_curves),
        adversarial=dict(clean=adv_curves["fgsm"][0.0], fgsm=adv_fgsm, pgd=adv_curves["pgd"][EPS], curves=adv_curves),
        fgsm_drop_points=100 * (clean - at_fgsm), pgd_drop_points=100 * (clean - at_pgd),
        adv_training_gain_points=100 * (adv_fgsm - at_fgsm),
        adv_training_pgd_gain_points=100 * (adv_curves["pgd"][EPS] - at_pgd),
        fooling=fool, fooling_min_confidence=min(r["confidence"] for r in fool),
        timings=timings, cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
    )
    if plots is not None:
        result["targeted"] = example_plots(plain, x, y, classes, plots)
        plot_attack_curve({"plain, FGSM": plain_curves["fgsm"], "plain, PGD-10": plain_curves["pgd"],
                           "adv. trained, FGSM": adv_curves["fgsm"], "adv. trained, PGD-10": adv_curves["pgd"]},
                          plots / "adv-curve.png", title=f"Fashion-MNIST, first {len(y)} test images")
    result["checks"] = dict(fgsm_drop_ge_50=result["fgsm_drop_points"] >= 50, pgd_ge_fgsm=at_pgd <= at_fgsm,
                            adv_gain_ge_20=result["adv_training_gain_points"] >= 20,
                            fooling_ge_99=result["fooling_min_confidence"] >= 0.99)

    print(f"Fashion-MNIST, first {len(y)} test images, eps {EPS} (L-inf):")
    print(f"  plain        clean {clean:.4f}  FGSM {at_fgsm:.4f}  PGD-10 {at_pgd:.4f}  "
          f"(FGSM -{result['fgsm_drop_points']:.1f} points, PGD -{result['pgd_drop_points']:.1f})")
    print(f"  adversarial  clean {result['adversarial']['clean']:.4f}  FGSM {adv_fgsm:.4f}  "
          f"PGD-10 {result['adversarial']['pgd']:.4f}  (over plain: FGSM +{result['adv_training_gain_points']:.1f} "
          f"points, PGD-10 +{result['adv_training_pgd_gain_points']:.1f})")
    print("  fooling images: " + ", ".join(f"{_short(r['cls'])} {r['confidence']:.3f} ({r['steps']} steps)"
                                          for r in fool))
    print("  checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in result["checks"].items()))
    print("  wall s: " + ", ".join(f"{k} {'reused' if v is None else f'{v:.0f}'}" for k, v in timings.items()))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    tmp.cleanup()


if __name__ == "__main__":
    main()
