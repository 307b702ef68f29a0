"""Super-resolution and denoising on held-out photographs: SRCNN x3 against bicubic upscaling,
and a DnCNN at sigma 25 against Gaussian and median filtering.

    python bench/restore.py [--threads 2] [--json bench/results/restore.json]

It trains both networks with `fovea train` (a subprocess per run, with --threads intra-op
threads), on scikit-image's sample photographs (``--data skimage``: training, validation and
test lists fixed in fovea.data.patches), then measures both on the test images
(camera, coins, chelsea), whole, with the functions the tasks validate with:

- super-resolution: luminance (BT.601 Y) cropped to a multiple of 3, bicubic down- and
  up-sampling, then SRCNN; PSNR and SSIM on Y with 3 pixels shaved off each side;
- denoising: grey images plus Gaussian noise of sigma 25/255 (fixed per image), DnCNN against
  the noisy input, a Gaussian filter and a median filter whose width and window were picked on
  the validation images by the training run; the filters' best settings on the test images
  themselves are measured too, as a stricter reference.

Claims (tests/slow/test_restore_slow.py): SRCNN's mean PSNR is above bicubic's, and the
denoiser's mean PSNR is above both filters'. It writes docs/img/restore-superres.png (a crop
of chelsea in colour: bicubic, SRCNN, ground truth) and docs/img/restore-denoise.png (a crop
of camera: noisy, Gaussian, median, DnCNN, clean), and every figure to the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# what `fovea train` is given; the CPU budget is a few minutes per network on 2 cores
SUPERRES_ARGS = ["--scale", "3"]  # the task's defaults: SRCNN 9-1-5, Adam 1e-3, batch 16, 20 epochs
DENOISE_ARGS = ["--sigma", "25", "--model-kwargs", '{"depth": 8, "width": 32}', "--epochs", "8", "--batch-size", "16"]


def train(task: str, args: list[str], out: Path, threads: int) -> float:
    """Run `fovea train TASK ARGS --out OUT` and return its wall time in seconds."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "fovea.cli.main", "train", task, "--data", "skimage", *args, "--out", str(out)]
    print("$ fovea " + " ".join(cmd[3:]), flush=True)
    if (out / "config.json").is_file():  # an earlier run here: start afresh rather than append to its metrics
        shutil.rmtree(out)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - t0


def _mean(rows: list[dict]) -> dict:
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k not in ("image", "loss")}


def measure_superres(run: Path) -> dict:
    from fovea.data.patches import SKIMAGE_TEST, convert_channels, skimage_image
    from fovea.tasks.restore import load_restorer, superres_metrics

    model, info = load_restorer(run, "superres")
    rows = []
    for name in SKIMAGE_TEST:
        y = convert_channels(skimage_image(name), "y").float() / 255
        rows.append(dict(image=name, **superres_metrics(model, y, info["scale"])))
    return dict(model=info["model"], model_kwargs=info["model_kwargs"], scale=info["scale"], per_image=rows,
                mean=_mean(rows))


def measure_denoise(run: Path) -> dict:
    from fovea.data.patches import SKIMAGE_TEST, SKIMAGE_VAL, convert_channels, skimage_image
    from fovea.tasks.restore import denoise_metrics, load_restorer, pick_filter_params

    model, info = load_restorer(run, "denoise")
    first = len(SKIMAGE_VAL)  # test image i has the fixed noise of index len(val) + i, as in the run
    clean = [convert_channels(skimage_image(n), info["channels"]).float() / 255 for n in SKIMAGE_TEST]
    rows = [dict(image=n, **denoise_metrics(model, im, info["sigma"], first + i, info["gaussian_sigma"],
                                            info["median_size"]))
            for i, (n, im) in enumerate(zip(SKIMAGE_TEST, clean))]
    oracle = pick_filter_params(clean, info["sigma"], [first + i for i in range(len(clean))])
    return dict(model=info["model"], model_kwargs=info["model_kwargs"], sigma=info["sigma"],
                gaussian_sigma=info["gaussian_sigma"], median_size=info["median_size"],
                filters_picked_on=info["filters_picked_on"], per_image=rows, mean=_mean(rows),
                test_best_filters=dict(gaussian_sigma=oracle["gaussian_sigma"], median_size=oracle["median_size"],
                                       gaussian_psnr=oracle["gaussian_psnr_by_sigma"][oracle["gaussian_sigma"]],
                                       median_psnr=oracle["median_psnr_by_size"][oracle["median_size"]]))


def _save_panels(panels: list[torch.Tensor], titles: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(1.9 * len(panels), 2.2))
    for ax, img, t in zip(axes, panels, titles):
        arr = img.clamp(0, 1).permute(1, 2, 0).numpy()
        ax.imshow(arr[..., 0] if arr.shape[2] == 1 else arr, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(t, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


@torch.no_grad()
def figures(sr_run: Path, dn_run: Path, out_dir: Path, sr: dict, dn: dict) -> list[str]:
    from fovea.apps.image_quality import gaussian_filter_baseline, median_filter_baseline
    from fovea.data.color import modcrop
    from fovea.data.patches import SKIMAGE_TEST, SKIMAGE_VAL, convert_channels, skimage_image
    from fovea.models.srcnn import super_resolve_rgb
    from fovea.tasks.restore import denoise_image, fixed_noise, load_restorer

    model, info = load_restorer(sr_run, "superres")
    s = info["scale"]
    hr = modcrop(skimage_image("chelsea").float() / 255, s)[None]
    lr = F.interpolate(hr, size=(hr.shape[-2] // s, hr.shape[-1] // s), mode="bicubic", align_corners=False,
                       antialias=True)
    bicubic = F.interpolate(lr, scale_factor=s, mode="bicubic", align_corners=False).clamp(0, 1)
    out = super_resolve_rgb(model, lr, s)
    box = (slice(60, 180), slice(150, 270))  # chelsea's eye and whiskers
    row = next(r for r in sr["per_image"] if r["image"] == "chelsea")
    sr_png = out_dir / "restore-superres.png"
    _save_panels([t[0, :, box[0], box[1]] for t in (bicubic, out, hr)],
                 [f"bicubic {row['bicubic_psnr']:.2f} dB", f"SRCNN {row['psnr']:.2f} dB", "ground truth"], sr_png,
                 f"x{s} super-resolution, chelsea (PSNR on Y, whole image)")

    model, info = load_restorer(dn_run, "denoise")
    index = len(SKIMAGE_VAL) + SKIMAGE_TEST.index("camera")
    clean = convert_channels(skimage_image("camera"), info["channels"]).float() / 255
    noisy = fixed_noise(clean[None], info["sigma"], index)[0]
    panels = [noisy, gaussian_filter_baseline(noisy, info["gaussian_sigma"]),
              median_filter_baseline(noisy, info["median_size"]), denoise_image(model, noisy), clean]
    row = next(r for r in dn["per_image"] if r["image"] == "camera")
    titles = [f"noisy {row['noisy_psnr']:.2f} dB", f"gaussian {info['gaussian_sigma']:g}: {row['gaussian_psnr']:.2f}",
              f"median {info['median_size']}: {row['median_psnr']:.2f}", f"DnCNN {row['psnr']:.2f} dB", "clean"]
    box = (slice(60, 200), slice(180, 320))  # the cameraman's head and camera
    dn_png = out_dir / "restore-denoise.png"
    _save_panels([p[:, box[0], box[1]] for p in panels], titles, dn_png,
                 f"denoising at sigma {info['sigma']:g}, camera (PSNR, whole image)")
    return [str(sr_png), str(dn_png)]


def table(sr: dict, dn: dict) -> str:
    m, d = sr["mean"], dn["mean"]
    best = dn["test_best_filters"]
    lines = ["| task | method | PSNR (dB) | SSIM |", "|---|---|---:|---:|",
             f"| x{sr['scale']} super-resolution (Y) | bicubic | {m['bicubic_psnr']:.2f} | {m['bicubic_ssim']:.4f} |",
             f"| x{sr['scale']} super-resolution (Y) | SRCNN 9-1-5 | {m['psnr']:.2f} | {m['ssim']:.4f} |",
             f"| denoising, sigma {dn['sigma']:g} | noisy input | {d['noisy_psnr']:.2f} | {d['noisy_ssim']:.4f} |",
             f"| denoising, sigma {dn['sigma']:g} | Gaussian filter, sigma {dn['gaussian_sigma']:g} px | "
             f"{d['gaussian_psnr']:.2f} | {d['gaussian_ssim']:.4f} |",
             f"| denoising, sigma {dn['sigma']:g} | median filter, {dn['median_size']}x{dn['median_size']} | "
             f"{d['median_psnr']:.2f} | {d['median_ssim']:.4f} |",
             f"| denoising, sigma {dn['sigma']:g} | DnCNN | {d['psnr']:.2f} | {d['ssim']:.4f} |",
             "",
             f"Filters tuned on the test images themselves: Gaussian sigma {best['gaussian_sigma']:g} px "
             f"{best['gaussian_psnr']:.2f} dB, median {best['median_size']}x{best['median_size']} "
             f"{best['median_psnr']:.2f} dB."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads of each training run (on a shared machine a parallel region waits for "
                         "every worker, so one thread is steadier)")
    ap.add_argument("--runs", help="folder for the two run directories (default: a temporary one)")
    ap.add_argument("--figures", default="docs/img", help="folder of the comparison PNGs")
    ap.add_argument("--json", default="bench/results/restore.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(args.runs or tmp)
        sr_run, dn_run = runs / "superres", runs / "denoise"
        sr_time = train("superres", SUPERRES_ARGS, sr_run, args.threads)
        dn_time = train("denoise", DENOISE_ARGS, dn_run, args.threads)
        sr, dn = measure_superres(sr_run), measure_denoise(dn_run)
        sr["train_seconds"], dn["train_seconds"] = sr_time, dn_time
        sr["command"] = "fovea train superres --data skimage " + " ".join(SUPERRES_ARGS)
        dn["command"] = "fovea train denoise --data skimage " + " ".join(DENOISE_ARGS)
        pngs = figures(sr_run, dn_run, Path(args.figures), sr, dn)
    checks = dict(srcnn_beats_bicubic=sr["mean"]["psnr"] > sr["mean"]["bicubic_psnr"],
                  dncnn_beats_gaussian=dn["mean"]["psnr"] > dn["mean"]["gaussian_psnr"],
                  dncnn_beats_median=dn["mean"]["psnr"] > dn["mean"]["median_psnr"])
    result = dict(threads=args.threads, superres=sr, denoise=dn, figures=pngs, checks=checks,
                  srcnn_gain_db=sr["mean"]["psnr"] - sr["mean"]["bicubic_psnr"],
                  dncnn_gain_over_best_filter_db=dn["mean"]["psnr"] - max(dn["mean"]["gaussian_psnr"],
                                                                           dn["mean"]["median_psnr"]))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(sr, dn))
    print(f"\ntraining: superres {sr_time:.0f} s, denoise {dn_time:.0f} s ({args.threads} threads); "
          f"SRCNN {result['srcnn_gain_db']:+.2f} dB over bicubic, DnCNN "
          f"{result['dncnn_gain_over_best_filter_db']:+.2f} dB over the better filter; wrote {out}")


if __name__ == "__main__":
    main()
