"""Optical flow on the synthetic ``chairs`` data: FlowNetS and FlowNetC against zero flow,
Farneback and DIS, average end-point error on held-out pairs, one table.

    python bench/flow.py [--json bench/results/flow.json] [--figures docs/img] [--runs DIR] [--threads 2]

What runs: `fovea train flow` (as a user runs it, in a subprocess) for FlowNetS and FlowNetC at
reduced width (WIDTH of the paper's channels; FlowNetC's correlation with a displacement range
scaled to the 64x64 frames, see CONFIGS), on the ``chairs`` generator at 64x64 (DATA: TRAIN
training pairs, 200 validation pairs, 200 test pairs from their own seeds), with the task's
defaults (Adam, cosine schedule, zscore input) and the settings below. Then both trained runs, loaded as
`fovea flow` loads them, and the baselines (zero flow; OpenCV's Farneback and DIS, medium
preset, on the grey frames) are measured on the same 200 test pairs: the average end-point
error over all pixels (occluded ones too, as in Flying Chairs), and over the non-occluded
pixels only.

The claim (tests/slow/test_flow_slow.py): each FlowNet's EPE is at most half the zero-flow
EPE, with Farneback in the same table; and each training run stays within the CPU budget
(BUDGET_S seconds of wall time on 2 otherwise idle cores, reported, not asserted).

Figures (``--figures``): flow-examples.png (test pairs: frames, ground truth, FlowNetS,
FlowNetC, Farneback, DIS; the Middlebury colour code on one scale per row) and flow-chairs.png
(generated pairs: frames, ground truth, occlusion).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

os.environ.pop("FOVEA_RUN_DIR", None)

ROOT = Path(__file__).resolve().parents[1]
TRAIN = 4000
DATA = f"chairs:n={TRAIN},val=200,test=200,size=64"
WIDTH = 0.25
EPOCHS = 12  # 6,000 steps of 8 pairs
BUDGET_S = 8 * 60  # wall seconds on 2 otherwise idle cores; CPU seconds are reported too
COMMON = ["--epochs", str(EPOCHS), "--batch-size", "8", "--lr", "1e-3", "--augment", "hflip,vflip", "--seed", "0"]
CONFIGS = {
    "flownets": dict(width=WIDTH),
    # The paper's correlation (d = 20, steps s2 = 2 on conv3 features, stride 8) reaches +-160
    # input pixels in steps of 16, for 512 x 384 frames; chairs at 64 x 64 moves up to about 20
    # pixels, so here d = 3 cells with steps of 1: +-24 pixels in steps of 8, 7 x 7 = 49 channels.
    "flownetc": dict(width=WIDTH, max_displacement=3, stride2=1),
}


def train(model: str, out: Path, threads: int) -> dict | None:
    """Train one model with `fovea train flow`: wall and CPU seconds, kept in the run as
    bench_train.json, so a reused run reports the time it took (None: not known)."""
    import resource

    record = out / "bench_train.json"
    if (out / "model.safetensors").exists():
        return dict(json.loads(record.read_text()), reused=True) if record.exists() else None
    cmd = [sys.executable, "-m", "fovea.cli.main", "train", "flow", "--data", DATA, "--model", model,
           "--model-kwargs", json.dumps(CONFIGS[model]), *COMMON, "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print("$", " ".join(cmd[1:]), flush=True)
    t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    took = dict(wall_s=time.perf_counter() - t0, cpu_s=cpu_s, threads=threads,
                load_avg_1min_after=os.getloadavg()[0])
    record.write_text(json.dumps(took) + "\n")
    return took


@torch.no_grad()
def evaluate(runs: dict[str, Path]) -> tuple[dict, dict]:
    """EPE (all pixels, non-occluded pixels) of every method on the test pairs, and the predictions."""
    from fovea.apps.flow_baselines import available_baselines
    from fovea.data.chairs import make_chairs, parse_chairs_spec
    from fovea.tasks.flow import load_flow_model, pair_epe

    o = parse_chairs_spec(DATA)
    lo, hi = o["objects"]
    test = make_chairs(o["test"], o["size"], 3 * o["seed"] + 2, min_objects=lo, max_objects=hi, motion=o["motion"])
    x = test.images.float() / 255
    preds: dict[str, torch.Tensor] = {}
    for name, path in runs.items():
        model, _ = load_flow_model(path)
        preds[name] = torch.cat([model(x[i:i + 50]) for i in range(0, len(x), 50)])
    for name, fn in available_baselines().items():
        preds[name] = torch.stack([fn(p[:3], p[3:]) for p in test.images])
    rows = {}
    for name, pred in preds.items():
        rows[name] = dict(epe=float(pair_epe(pred, test.flows).mean()),
                          epe_noc=float(pair_epe(pred, test.flows, test.valid).mean()))
    return rows, dict(preds=preds, test=test)


def figures(out_dir: Path, found: dict) -> list[str]:
    from fovea.data.chairs import make_chairs
    from fovea.report.flowviz import flow_legend, flow_to_color
    from fovea.report.plots import plot_image_grid

    out_dir.mkdir(parents=True, exist_ok=True)
    test, preds = found["test"], found["preds"]
    order = [m for m in ("flownets", "flownetc", "farneback", "dis") if m in preds]
    cells, titles = [], []
    for i in range(5):
        scale = float(test.flows[i].norm(dim=0).max())
        cells += [test.images[i, :3], test.images[i, 3:], flow_to_color(test.flows[i], scale)]
        titles += ["frame 1", "frame 2", f"truth (max {scale:.1f} px)"]
        for m in order:
            e = float((preds[m][i] - test.flows[i]).norm(dim=0).mean())
            cells.append(flow_to_color(preds[m][i], scale))
            titles.append(f"{m} {e:.2f}")
    cells += [flow_legend(64)] + [torch.full((3, 64, 64), 255, dtype=torch.uint8)] * (2 + len(order))
    titles += ["colour key"] + [""] * (2 + len(order))
    ncols = 3 + len(order)
    plot_image_grid(torch.stack(cells), titles, out_dir / "flow-examples.png", ncols=ncols,
                    title="held-out chairs pairs: flow colour-coded (Middlebury), EPE in pixels")
    d = make_chairs(6, (64, 64), seed=1)
    cells = []
    for i in range(6):
        occ = (~d.valid[i]).to(torch.uint8).mul(255).expand(3, -1, -1)
        cells += [d.images[i, :3], d.images[i, 3:], flow_to_color(d.flows[i]), occ]
    plot_image_grid(torch.stack(cells), ["frame 1", "frame 2", "flow", "occluded"] * 6, out_dir / "flow-chairs.png",
                    ncols=8, title="chairs: generated pairs, their exact flow and occluded pixels (white)")
    return [str(out_dir / "flow-examples.png"), str(out_dir / "flow-chairs.png")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "flow.json"))
    p.add_argument("--figures", default=str(ROOT / "docs" / "img"))
    p.add_argument("--runs", default=None, help="where the runs go (reused when they exist; default: a temp folder)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)),
                   help="CPU threads of each training run (default: $OMP_NUM_THREADS, else 2)")
    args = p.parse_args()
    import tempfile

    runs_dir = Path(args.runs) if args.runs else Path(tempfile.mkdtemp(prefix="fovea-flow-bench-"))
    runs = {m: runs_dir / m for m in CONFIGS}
    train_s = {m: train(m, path, args.threads) for m, path in runs.items()}
    torch.set_num_threads(args.threads)
    rows, found = evaluate(runs)
    zero = rows["zero"]["epe"]
    for r in rows.values():
        r["ratio_to_zero"] = r["epe"] / zero
    checks = {f"{m} epe <= zero / 2": rows[m]["epe"] <= zero / 2 for m in CONFIGS}
    figs = figures(Path(args.figures), found)
    result = dict(
        data=DATA, width=WIDTH, configs=CONFIGS, train_args=COMMON, threads=args.threads,
        train_s=train_s, budget_s=BUDGET_S, table=rows, checks=checks, figures=figs,
        machine=dict(cpu=platform.processor() or platform.machine(), cores=os.cpu_count(), torch=torch.__version__),
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")

    print(f"\naverage end-point error on {len(found['test'])} held-out chairs pairs (64x64), pixels\n")
    print("| method | EPE (all pixels) | EPE (non-occluded) | EPE / zero flow | training: wall, CPU |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        t = train_s.get(name)
        if t:
            when = f"{t['wall_s']:.0f} s, {t['cpu_s']:.0f} s, {t['threads']} thread(s)"
        else:
            when = "reused run" if name in train_s else "-"
        print(f"| {name} | {r['epe']:.3f} | {r['epe_noc']:.3f} | {r['ratio_to_zero']:.2f} | {when} |")
    print()
    for k, v in checks.items():
        print(f"{'ok  ' if v else 'FAIL'} {k}")
    print(f"wrote {args.json}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
