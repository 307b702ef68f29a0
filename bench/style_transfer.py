"""Neural style (Gatys et al. 2016) in fovea against a straightforward implementation, and a
trained feed-forward style network against 100 Gatys steps.

    nice -n 10 python bench/style_transfer.py [--threads 2] [--json bench/results/style_transfer.json]

Part 1, 256 x 256, 100 L-BFGS-B steps: scikit-image's astronaut (content) in the style of its
immunohistochemistry image, VGG-19 with torchvision's ImageNet weights when their file is in the
torch hub cache, else a random-weight VGG-19 (seed 0; the JSON says which), content relu4_2,
style relu1_1 ... relu5_1 with w_l = 1/5, alpha = 1, beta = --beta (1e3 with ImageNet weights,
1e6 with random ones), start from the photo plus white noise (std 0.1, seed 0).

- fovea: ``fovea.apps.stylize.stylize`` (the network cut after relu5_1, the targets P and A
  computed once, channels_last).
- reference, written the usual way in this script: the whole VGG-19 ``features`` run on the
  image, the content image and the style image at every evaluation (targets recomputed), default
  memory format, the same losses written out inline, the same scipy L-BFGS-B settings (maxcor 20,
  bounds [0, 1]) from the same start. The VGG's parameters are frozen in both, so neither
  computes weight gradients.

Claims (tests/slow/test_style_transfer_slow.py): the final losses agree within 1%, and the
wall time ratio fovea / reference is at most 0.7.

Part 2, 512 x 512: the image transformation network of a ``fovea train stylenet`` run (trained
here for one short epoch on a few 64 x 64 photo crops: speed only, the architecture is the
default one) stylizes a 512 x 512 image (median of 5 no-grad forwards,
``fovea.models.stylenet.time_forward``) against 100 L-BFGS-B steps of fovea's Gatys at 512 x 512
(run, not extrapolated, unless the 256 x 256 timing predicts more than --max-gatys-seconds; then
fewer steps run and the time of 100 is their per-step time times 100, marked in the JSON).
Claim: at least 100 times faster.

Figures (docs/img/): style-content.png, style-style.png, style-result.png (part 1's fovea
result), and, made by the commands printed, style-texture.png (texture synthesis from noise
with random weights, style loss only) and style-dream.png (DeepDream with a random GoogLeNet).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
CONTENT, STYLE = "astronaut", "immunohistochemistry"
CONTENT_LAYER = "relu4_2"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def sample(name: str, size: int) -> torch.Tensor:
    """A scikit-image photo, centre-cropped to a square and resized to size x size, (1, 3, H, W)."""
    import skimage.data

    a = getattr(skimage.data, name)()
    h, w = a.shape[:2]
    s = min(h, w)
    a = a[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s, :3]
    x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float().div(255)[None]
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def imagenet_vgg19_cached() -> bool:
    import torchvision

    url = torchvision.models.get_model_weights("vgg19").DEFAULT.url
    return (Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]).is_file()


def save_png(x: torch.Tensor, path: Path) -> None:
    from fovea.cli.restore import write_png

    write_png(x.reshape(-1, *x.shape[-3:])[0], path)


# ---------------------------------------------------------------------------- the reference


class Reference:
    """Neural style as it is usually written: every evaluation runs the whole ``features`` on the
    image, the photo and the artwork, and builds the losses from the responses."""

    def __init__(self, vgg, alpha: float, beta: float):
        self.features = copy.deepcopy(vgg.features).eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        index = {name: int(k.split(".")[1]) for k, name in vgg.layer_names.items() if k.startswith("features.")}
        self.content_index = index[CONTENT_LAYER]
        self.style_index = [index[n] for n in STYLE_LAYERS]
        self.mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        self.alpha, self.beta = alpha, beta
        self.evaluations = 0

    def responses(self, img: torch.Tensor) -> dict[int, torch.Tensor]:
        x = (img - self.mean) / self.std
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            out[i] = x
        return out

    def loss(self, x: torch.Tensor, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        fx, fc, fs = self.responses(x), self.responses(content), self.responses(style)
        content_loss = 0.5 * ((fx[self.content_index] - fc[self.content_index]) ** 2).sum()
        style_loss = 0.0
        for i in self.style_index:
            _, n, h, w = fx[i].shape
            m = h * w
            f, s = fx[i].view(n, m), fs[i].view(n, m)
            g, a = f @ f.t(), s @ s.t()
            style_loss = style_loss + (1 / len(self.style_index)) * ((g - a) ** 2).sum() / (4 * n ** 2 * m ** 2)
        return self.alpha * content_loss + self.beta * style_loss

    def run(self, content: torch.Tensor, style: torch.Tensor, x0: torch.Tensor,
            steps: int) -> tuple[torch.Tensor, list]:
        from scipy.optimize import Bounds, minimize

        losses = []

        def fun(z):
            x = torch.from_numpy(z).view(x0.shape).float().requires_grad_(True)
            loss = self.loss(x, content, style)
            loss.backward()
            self.evaluations += 1
            losses.append(loss.item())
            return loss.item(), x.grad.double().numpy().ravel()

        n = x0.numel()
        res = minimize(fun, x0.double().clamp(0, 1).numpy().ravel(), jac=True, method="L-BFGS-B",
                       bounds=Bounds(np.zeros(n), np.ones(n)),
                       options=dict(maxiter=steps, maxcor=20, maxfun=4 * steps + 20, ftol=0.0, gtol=0.0))
        self.iterations = int(res.nit)
        return torch.from_numpy(res.x).view(x0.shape).float(), losses


# ---------------------------------------------------------------------------- part 1


def gatys_256(net, normalize, steps: int, beta: float, size: int = 256, figures: bool = True) -> dict:
    from fovea.apps.stylize import StyleConfig, StyleLoss, stylize

    content, style = sample(CONTENT, size), sample(STYLE, size)
    cfg = StyleConfig(content_layers=(CONTENT_LAYER,), style_layers=STYLE_LAYERS, content_weight=1.0,
                      style_weight=beta, steps=steps, sizes=(size,), init="photo", init_noise=0.1, seed=0)
    gen = torch.Generator().manual_seed(cfg.seed)
    x0 = content + cfg.init_noise * torch.randn(content.shape, generator=gen)  # stylize's start, for the reference
    ref = Reference(net, 1.0, beta)
    with torch.no_grad():  # warm both paths up (allocator, oneDNN primitives) before timing
        ref.loss(x0, content, style)
        warm = StyleLoss(net, normalize, cfg)
        warm.set_targets(content, style)
        warm(x0)
        start_fovea = float(warm(x0)[0])
        start_ref = float(ref.loss(x0, content, style))
    del warm

    t0, c0 = time.perf_counter(), time.process_time()
    result = stylize(content, style, net, normalize, cfg)
    t_fovea, cpu_fovea = time.perf_counter() - t0, time.process_time() - c0
    print(f"fovea: {result.iterations[0]} iterations, {result.evaluations} evaluations, {t_fovea:.1f} s, "
          f"loss {result.losses[0]:.6g} -> {result.final_loss:.6g}", flush=True)

    t0, c0 = time.perf_counter(), time.process_time()
    x_ref, ref_losses = ref.run(content, style, x0, steps)
    t_ref, cpu_ref = time.perf_counter() - t0, time.process_time() - c0
    with torch.no_grad():
        final_ref = float(ref.loss(x_ref, content, style))
        check = StyleLoss(net, normalize, cfg)
        check.set_targets(content, style)
        final_ref_by_fovea = float(check(x_ref)[0])
    print(f"reference: {ref.iterations} iterations, {ref.evaluations} evaluations, {t_ref:.1f} s, "
          f"loss {ref_losses[0]:.6g} -> {final_ref:.6g}", flush=True)

    if figures:  # the figures of docs/stylization.md; not with --skip-figures (the slow test)
        IMG.mkdir(parents=True, exist_ok=True)
        save_png(content, IMG / "style-content.png")
        save_png(style, IMG / "style-style.png")
        save_png(result.image, IMG / "style-result.png")
    return dict(
        size=size, steps=steps, alpha=1.0, beta=beta,
        start_loss=dict(fovea=start_fovea, reference=start_ref),
        final_loss=dict(fovea=result.final_loss, reference=final_ref, reference_image_by_fovea_loss=final_ref_by_fovea),
        final_loss_rel_diff=abs(result.final_loss - final_ref) / final_ref,
        iterations=dict(fovea=result.iterations[0], reference=ref.iterations),
        evaluations=dict(fovea=result.evaluations, reference=ref.evaluations),
        seconds=dict(fovea=t_fovea, reference=t_ref),
        seconds_per_evaluation=dict(fovea=t_fovea / result.evaluations, reference=t_ref / ref.evaluations),
        time_ratio=t_fovea / t_ref,
        cpu_seconds=dict(fovea=cpu_fovea, reference=cpu_ref),  # all threads; less sensitive to other load
        cpu_time_ratio=cpu_fovea / cpu_ref,
        load_average_after=os.getloadavg()[0],
        loss_curve=dict(fovea=result.losses[::5], reference=ref_losses[::5]),
    )


# ---------------------------------------------------------------------------- part 2


def train_stylenet(workdir: Path, threads: int) -> tuple[Path, float, list[str]]:
    """A short `fovea train stylenet` run on 8 photo crops (speed only)."""
    import skimage.data
    from PIL import Image

    data = workdir / "photos"
    data.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(("astronaut", "chelsea", "coffee", "rocket")):
        a = getattr(skimage.data, name)()
        for j, (y, x) in enumerate(((0, 0), (100, 150))):
            Image.fromarray(np.ascontiguousarray(a[y:y + 256, x:x + 256, :3])).save(data / f"{name}-{j}.png")
    style = workdir / "style.png"
    save_png(sample(STYLE, 256), style)
    out = workdir / "stylenet-run"
    cmd = [sys.executable, "-m", "fovea.cli.main", "train", "stylenet", "--style", str(style), "--data", str(data),
           "--image-size", "64", "--epochs", "1", "--batch-size", "4", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print("$ fovea " + " ".join(cmd[3:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    return out, time.perf_counter() - t0, cmd[3:]


def speed_512(net, normalize, per_eval_256: float, steps: int, max_seconds: float, beta: float,
              threads: int) -> dict:
    from fovea.apps.stylize import StyleConfig, stylize

    out: dict = {}
    try:
        from fovea.models.stylenet import time_forward
        from fovea.tasks.stylenet import load_stylenet
    except ImportError as e:
        out["stylenet"] = f"pending: {e}"
        return out
    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="style-bench-"))
    try:
        run, train_s, cmd = train_stylenet(work, threads)
        model, info = load_stylenet(run)
        net_s = time_forward(model, size=512, repeats=5, warmup=1)
        out["stylenet"] = dict(command="fovea " + " ".join(cmd), train_seconds=train_s, forward_seconds_512=net_s,
                               model_kwargs=info.get("model_kwargs"),
                               parameters=sum(p.numel() for p in model.parameters()))
        print(f"style network: {net_s * 1000:.1f} ms per 512 x 512 image", flush=True)
        photo, styled = work / "photo.png", work / "styled.png"  # the command users run, once, as a check
        save_png(sample(CONTENT, 512), photo)
        subprocess.run([sys.executable, "-m", "fovea.cli.main", "stylize", "--net", str(run), str(photo),
                        "--out", str(styled)], check=True, cwd=ROOT)
        out["stylenet"]["cli_output_size"] = list(Image.open(styled).size)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    predicted = per_eval_256 * 4 * steps * 1.05
    run_steps = steps if predicted <= max_seconds else max(5, int(max_seconds / (per_eval_256 * 4 * 1.05)))
    content, style = sample(CONTENT, 512), sample(STYLE, 512)
    cfg = StyleConfig(content_layers=(CONTENT_LAYER,), style_layers=STYLE_LAYERS, style_weight=beta, steps=run_steps,
                      sizes=(512,), seed=0)
    t0 = time.perf_counter()
    result = stylize(content, style, net, normalize, cfg)
    gatys_s = time.perf_counter() - t0
    per_step = gatys_s / max(1, result.iterations[0])
    gatys_100 = gatys_s if run_steps == steps and result.iterations[0] == steps else per_step * steps
    print(f"Gatys 512 x 512: {result.iterations[0]} iterations in {gatys_s:.1f} s", flush=True)
    out["gatys_512"] = dict(steps_run=result.iterations[0], evaluations=result.evaluations, seconds=gatys_s,
                            seconds_per_step=per_step, seconds_for_100_steps=gatys_100,
                            extrapolated=run_steps != steps, predicted_seconds_from_256=predicted)
    out["speedup"] = gatys_100 / net_s
    return out


# ---------------------------------------------------------------------------- doc figures


def doc_figures(threads: int) -> dict:
    """The texture-synthesis and DeepDream pictures, made by the commands the docs show."""
    work = Path(tempfile.mkdtemp(prefix="style-fig-"))
    try:
        content, style = work / "content.png", work / "style.png"
        save_png(sample(CONTENT, 256), content)
        save_png(sample(STYLE, 256), style)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        cmds = {
            "style-texture.png": ["stylize", str(content), str(style), "--init", "noise", "--content-weight", "0",
                                  "--style-weight", "1", "--weights", "random", "--size", "128", "--steps", "200",
                                  "--out", str(IMG / "style-texture.png")],
            "style-dream.png": ["dream", str(content), "--weights", "random", "--layer", "inception4a",
                                "--octaves", "4", "--steps", "10", "--out", str(IMG / "style-dream.png")],
        }
        shown = {}
        for name, args in cmds.items():
            print("$ fovea " + " ".join(args), flush=True)
            subprocess.run([sys.executable, "-m", "fovea.cli.main", *args], check=True, env=env, cwd=ROOT)
            shown[name] = "fovea " + " ".join(a.replace(str(work) + "/", "").replace(str(ROOT) + "/", "")
                                              for a in args)
        return shown
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "style_transfer.json"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--beta", type=float, help="style weight, alpha = 1 (default 1e3 with ImageNet weights, the "
                                              "paper's alpha/beta = 1e-3; 1e6 with random weights, whose style "
                                              "term is smaller: below that the result is the photo plus noise)")
    p.add_argument("--max-gatys-seconds", type=float, default=600.0)
    p.add_argument("--skip-512", action="store_true")
    p.add_argument("--skip-figures", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from fovea.apps.stylize import load_vgg

    imagenet = imagenet_vgg19_cached()
    net, normalize, source = load_vgg("torchvision" if imagenet else "random", "vgg19", seed=0)
    print(f"loss network: {source}", flush=True)
    if args.beta is None:
        args.beta = 1e3 if imagenet else 1e6
    results: dict = dict(weights="imagenet" if imagenet else "random", network=source, threads=args.threads,
                         torch=torch.__version__, machine=platform.machine(), processor=platform.processor(),
                         command="nice -n 10 python bench/style_transfer.py " + " ".join(argv or sys.argv[1:]))
    results["gatys_256"] = part1 = gatys_256(net, normalize, args.steps, args.beta, figures=not args.skip_figures)
    if not args.skip_512:
        results["speed_512"] = speed_512(net, normalize, part1["seconds_per_evaluation"]["fovea"], args.steps,
                                         args.max_gatys_seconds, args.beta, args.threads)
    if not args.skip_figures:
        results["figures"] = doc_figures(args.threads)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")

    print(f"\n| {args.steps} L-BFGS-B steps, 256 x 256, VGG-19 ({results['weights']} weights) | fovea | reference |")
    print("|---|---|---|")
    print(f"| wall time (s) | {part1['seconds']['fovea']:.1f} | {part1['seconds']['reference']:.1f} |")
    print(f"| evaluations | {part1['evaluations']['fovea']} | {part1['evaluations']['reference']} |")
    print(f"| final loss | {part1['final_loss']['fovea']:.6g} | {part1['final_loss']['reference']:.6g} |")
    print(f"\ntime ratio fovea / reference {part1['time_ratio']:.3f} (claim <= 0.7); final losses differ by "
          f"{100 * part1['final_loss_rel_diff']:.3f}% (claim < 1%)")
    sp = results.get("speed_512")
    if sp and "speedup" in sp:
        g = sp["gatys_512"]
        print(f"512 x 512: style network {1000 * sp['stylenet']['forward_seconds_512']:.1f} ms, Gatys 100 steps "
              f"{g['seconds_for_100_steps']:.1f} s{' (extrapolated)' if g['extrapolated'] else ''}: "
              f"{sp['speedup']:.0f}x (claim >= 100x)")
    elif sp:
        print(f"512 x 512: {sp.get('stylenet')}")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
