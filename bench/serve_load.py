"""Load on `fovea serve`: 200 prediction requests from 8 concurrent clients on loopback.

What it measures: a classification run (LeNet-5 trained one epoch on scikit-learn's digits at
32x32, made by `fovea train` unless --run is given) is served by `fovea serve` in a subprocess
(uvicorn). 8 client threads send 200 multipart uploads of digit images to
POST /api/runs/NAME/predict (top-5 classes and the Grad-CAM overlay PNG, the page's default).
It reports errors, p50 / p99 / max latency and requests per second, and the baseline measured in
the same run: the same predictor called in-process, one image at a time, on the same image bytes
(decode, forward pass, Grad-CAM, PNG encoding: what the server does for a request, without HTTP),
and, for scale, the bare forward pass of the model alone.

Command:  OMP_NUM_THREADS=1 nice -n 10 python bench/serve_load.py
Claim:    zero errors, and the served throughput is within 2x of the in-process one (ratio >= 0.5).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digit_pngs(n: int) -> list[bytes]:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).resize((32, 32), Image.Resampling.BILINEAR).save(
            buf, format="PNG")
        out.append(buf.getvalue())
    return out


def train_run(out: Path) -> Path:
    cmd = [sys.executable, "-m", "fovea.cli.main", "train", "classify", "--data", "digits", "--model", "lenet5",
           "--image-size", "32", "--epochs", "1", "--out", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def load(url: str, images: list[bytes], requests: int, clients: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def client():
        with httpx.Client(timeout=60) as c:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    r = c.post(url, files={"image": (f"{i}.png", images[i % len(images)], "image/png")})
                    ok = r.status_code == 200 and r.json().get("gradcam")
                    why = None if ok else f"{r.status_code} {r.text[:120]}"
                except Exception as e:  # a refused or dropped connection counts as an error
                    why = f"{type(e).__name__}: {e}"
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if why:
                        errors.append(why)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return dict(requests=requests, clients=clients, errors=len(errors), error_samples=errors[:5], wall_s=wall,
                requests_per_s=requests / wall, p50_ms=1000 * percentile(latencies, 50),
                p99_ms=1000 * percentile(latencies, 99), max_ms=1000 * max(latencies),
                mean_ms=1000 * statistics.fmean(latencies))


def in_process(run: Path, images: list[bytes], requests: int) -> dict:
    import torch

    from fovea.serve import Limits
    from fovea.serve.predictors import ClassifyPredictor
    from fovea.serve.images import decode_upload, resize

    predictor = ClassifyPredictor(run, Limits())
    params = dict(k=5, explain=True, neighbours=8)
    for i in range(8):  # warm-up, as the server gets
        predictor([images[i % len(images)]], params)
    t0 = time.perf_counter()
    for i in range(requests):
        predictor([images[i % len(images)]], params)
    full = requests / (time.perf_counter() - t0)
    xs = [resize(decode_upload(b, max_pixels=1 << 24, channels=1), (32, 32))[None].float() / 255 for b in images]
    with torch.no_grad():
        for x in xs[:8]:
            predictor.model(x)
        t0 = time.perf_counter()
        for i in range(requests):
            predictor.model(xs[i % len(xs)])
        bare = requests / (time.perf_counter() - t0)
    return dict(predictor_per_s=full, model_forward_per_s=bare)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="a classification run to serve (default: train LeNet-5 on digits first)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "serve_load.json"))
    args = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    run = Path(args.run) if args.run else train_run(tmp / "lenet5-digits")
    images = digit_pngs(50)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "fovea.cli.main", "serve", str(run), "--port", str(port),
                               "--log-level", "warning", "--preload", "--queue", "64"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/api/runs/{run.name}/predict"
    try:
        import httpx

        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit(f"fovea serve did not start: {server.stderr.read() if server.stderr else ''}")
            time.sleep(0.2)
        load(url, images, 16, args.clients)  # warm-up
        served = load(url, images, args.requests, args.clients)
    finally:
        server.terminate()
        server.wait(20)
    base = in_process(run, images, args.requests)
    ratio = served["requests_per_s"] / base["predictor_per_s"]
    result = dict(bench="serve_load", run=run.name, model="lenet5 32x32 (digits, 1 epoch)",
                  endpoint="POST /api/runs/NAME/predict (top-5 + Grad-CAM PNG)", served=served, in_process=base,
                  served_over_in_process=ratio, claim_within_2x=ratio >= 0.5 and served["errors"] == 0,
                  omp_num_threads=os.environ.get("OMP_NUM_THREADS"), cpus=os.cpu_count(),
                  python=platform.python_version(), command="OMP_NUM_THREADS=1 nice -n 10 python bench/serve_load.py")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| {args.requests} requests, {args.clients} clients | value |\n|---|---|")
    print(f"| errors | {served['errors']} |")
    print(f"| latency p50 / p99 / max | {served['p50_ms']:.1f} / {served['p99_ms']:.1f} / {served['max_ms']:.1f} ms |")
    print(f"| served throughput | {served['requests_per_s']:.1f} requests/s |")
    print(f"| in-process, same predictor, one image at a time | {base['predictor_per_s']:.1f} images/s |")
    print(f"| served / in-process | {ratio:.2f} |")
    print(f"| bare model forward, batch 1 (for scale) | {base['model_forward_per_s']:.0f} images/s |")
    print(f"wrote {out}")
    return 0 if result["claim_within_2x"] else 1


if __name__ == "__main__":
    sys.exit(main())
