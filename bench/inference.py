"""Inference speed on CPU: images/s of a classifier run's model (fitted z-score preprocessing in
front of the network, the module `fovea predict` calls) in four execution paths.

    OMP_NUM_THREADS=1 python bench/inference.py [--threads 1] [--min-time 2] [--json bench/results/inference.json]

- ResNet-18 at 224x224 RGB, 1000 classes: the ImageNet size its users predict at; LeNet-5 at 32x32
  grey, 10 classes. Batch 1 and batch 64. Inputs are float images in [0, 1] already in memory
  (decoding is the same for every path and left out).
- Paths: eager PyTorch in NCHW (the baseline), eager channels_last (model and input), `torch.compile`
  (default mode, NCHW, ``dynamic=False``: one graph per batch size; compile time reported apart),
  and onnxruntime's CPU provider running the file `fovea export --format onnx` writes (opset 17;
  export time reported apart).
- Every path gets the same number of threads (``--threads``, default 1: the machine these figures
  come from is shared; torch.set_num_threads and onnxruntime's intra_op_num_threads). A cell is the
  median over timed repetitions after two warm-up calls (at least 3 repetitions and ``--min-time``
  seconds). The ratio of each path is against eager NCHW of the same model and batch in this run.
- Claim checked by `fovea predict`'s default: the path it picks (``--backend auto``) is the fastest
  of those it can use without a long start-up (torch.compile is left out of predict: its compile
  costs more than a folder of images takes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from fovea.apps.export import OPSET, Exportable, export_onnx, onnx_session
from fovea.data.transforms import Preprocess
from fovea.tasks.classify import ImageClassifier, build_net

MODELS = {  # name -> (in_channels, side, num_classes)
    "resnet18": (3, 224, 1000),
    "lenet5": (1, 32, 10),
}
BATCHES = (1, 64)
PATHS = ("eager", "channels_last", "compile", "onnxruntime")


def classifier(name: str) -> ImageClassifier:
    ch, side, k = MODELS[name]
    torch.manual_seed(0)
    pre = Preprocess("zscore").fit(torch.rand(64, ch, side, side))
    return ImageClassifier(build_net(name, k, ch, (side, side)), pre).eval()


def time_call(fn, min_time: float, min_reps: int = 3) -> float:
    """Median seconds of one call of ``fn`` after two warm-up calls."""
    for _ in range(2):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_model(name: str, threads: int, min_time: float, paths: tuple[str, ...], tmp: Path) -> list[dict]:
    ch, side, _ = MODELS[name]
    model = classifier(name)
    rows: list[dict] = []
    setup: dict[str, float] = {}
    runners = {}
    if "eager" in paths:
        runners["eager"] = lambda x: model(x)
    if "channels_last" in paths:
        cl_model = classifier(name).to(memory_format=torch.channels_last)
        runners["channels_last"] = lambda x: cl_model(x.contiguous(memory_format=torch.channels_last))
    if "compile" in paths:  # static shapes, one graph per batch size (a second size would recompile as dynamic)
        compiled = torch.compile(classifier(name), dynamic=False)
        runners["compile"] = compiled
    if "onnxruntime" in paths:
        path = tmp / f"{name}.onnx"
        t = time.perf_counter()
        export_onnx(Exportable(model, {}, (ch, side, side), output_name="logits"), path)
        setup["onnxruntime"] = time.perf_counter() - t
        sess = onnx_session(path, threads=threads)
        runners["onnxruntime"] = lambda x: sess.run(None, {"images": x.numpy()})[0]
    for batch in BATCHES:
        x = torch.rand(batch, ch, side, side, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            ref = model(x)
        for p, fn in runners.items():
            with torch.no_grad():
                if p == "compile":  # the first call at a new batch size compiles
                    t = time.perf_counter()
                    compiled(x)
                    setup["compile"] = time.perf_counter() - t
                diff = float((torch.as_tensor(fn(x)) - ref).abs().max())
                sec = time_call(lambda: fn(x), min_time)
            rows.append(dict(model=name, input=[ch, side, side], batch=batch, path=p, images_per_s=batch / sec,
                             ms_per_batch=1000 * sec, max_abs_diff=diff, setup_s=setup.get(p)))
            print(f"  {name} batch {batch:3d} {p:14s} {batch / sec:9.1f} img/s", file=sys.stderr, flush=True)
    for r in rows:
        base = next(b for b in rows if b["batch"] == r["batch"] and b["path"] == "eager")
        r["ratio_vs_eager"] = r["images_per_s"] / base["images_per_s"]
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model (input) | batch | eager NCHW img/s | channels_last | torch.compile | onnxruntime |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in MODELS:
        for batch in BATCHES:
            cells = {r["path"]: r for r in rows if r["model"] == name and r["batch"] == batch}
            if not cells:
                continue
            ch, side, _ = MODELS[name]
            out = [f"{name} ({ch}x{side}x{side})", str(batch), f"{cells['eager']['images_per_s']:.1f}"]
            for p in PATHS[1:]:
                c = cells.get(p)
                out.append(f"{c['images_per_s']:.1f} ({c['ratio_vs_eager']:.2f}x)" if c else "-")
            rows_md = "| " + " | ".join(out) + " |"
            lines.append(rows_md)
    return "\n".join(lines)


def fastest(rows: list[dict]) -> dict:
    """Per model and batch: the fastest path, and the fastest without torch.compile."""
    out = {}
    for name in MODELS:
        for batch in BATCHES:
            cells = [r for r in rows if r["model"] == name and r["batch"] == batch]
            if cells:
                out[f"{name}/b{batch}"] = dict(
                    any=max(cells, key=lambda r: r["images_per_s"])["path"],
                    without_compile=max((r for r in cells if r["path"] != "compile"),
                                        key=lambda r: r["images_per_s"])["path"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds of timed calls per cell (at least)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--json", default="bench/results/inference.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = tuple(p for p in args.paths.split(",") if p)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows += bench_model(name, args.threads, args.min_time, paths, Path(tmp))
    import onnxruntime

    result = dict(command=" ".join(["OMP_NUM_THREADS=1 python bench/inference.py", *(argv or sys.argv[1:])]),
                  threads=args.threads, min_time_s=args.min_time, onnx_opset=OPSET, torch=torch.__version__,
                  onnxruntime=onnxruntime.__version__, cpu=platform.processor() or platform.machine(),
                  cpu_count=os.cpu_count(), rows=rows, fastest=fastest(rows), table=table(rows))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["table"])
    print(f"fastest: {json.dumps(result['fastest'])}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
