"""The from-scratch NumPy convolution (fovea.scratch): im2col + matrix product against the direct
loop form and against PyTorch on the CPU, forward + backward (input, weight and bias gradients).

    OMP_NUM_THREADS=1 python bench/scratch_conv.py [--json bench/results/scratch_conv.json] [--batch 8]

Layers: LeNet-5's three convolutions on a 32x32 input (C1 1->6 5x5 on 32x32, C3 6->16 5x5 on
14x14, C5 16->120 5x5 on 5x5) and a 64->64 3x3 convolution (padding 1) on 32x32 inputs; a batch
of --batch images, float32 everywhere. Times are the median of --repeats runs after one warm-up
(the direct form: one run); one thread for NumPy's BLAS and PyTorch (OMP_NUM_THREADS=1 and
torch.set_num_threads(1)), so the ratios compare algorithms, not thread counts.

The direct form computes one output value per loop iteration (image, output channel, row,
column: a dot product of the window with the filter), the backward pass likewise per output value;
im2col builds the matrix of receptive fields once and does one matrix product per group.

Claims (tests/slow/test_scratch_slow.py): im2col is >= 50x faster than the direct form for
LeNet-5 (its three convolutions together) and for the 64-channel layer (every layer's ratio is
reported; LeNet-5's C5, a 5x5 input giving a 1x1 output, has the fewest loop iterations and the
smallest ratio); against PyTorch (F.conv2d + autograd) the ratio im2col / torch is reported (the aim: within
3x). The three forms agree (max abs difference in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fovea import scratch as S  # noqa: E402

LAYERS = [  # name, in, out, kernel, padding, input size
    ("LeNet-5 C1 1->6 5x5, 32x32", 1, 6, 5, 0, 32),
    ("LeNet-5 C3 6->16 5x5, 14x14", 6, 16, 5, 0, 14),
    ("LeNet-5 C5 16->120 5x5, 5x5", 16, 120, 5, 0, 5),
    ("64->64 3x3 pad 1, 32x32", 64, 64, 3, 1, 32),
]


CLAIMED = ("LeNet-5, all three convolutions", "64->64 3x3 pad 1, 32x32")  # the rows the 50x claim is about


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name, cin, cout, k, pad, size, batch, repeats, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, cin, size, size)).astype(np.float32)
    w = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    oh = S.conv_output_size(size, k, pad)
    g = rng.standard_normal((batch, cout, oh, oh)).astype(np.float32)
    out = {}

    def im2col():
        y, cache = S.conv2d_im2col_forward(x, w, b, 1, pad)
        out["im2col"] = (y, *S.conv2d_im2col_backward(g, cache))

    def direct():
        y, cache = S.conv2d_direct_forward(x, w, b, 1, pad)
        out["direct"] = (y, *S.conv2d_direct_backward(g, cache))

    xt, wt, bt, gt = (torch.from_numpy(a) for a in (x, w, b, g))

    def torch_conv():
        xr, wr, br = (t.clone().requires_grad_() for t in (xt, wt, bt))
        y = F.conv2d(xr, wr, br, 1, pad)
        y.backward(gt)
        out["torch"] = (y.detach().numpy(), xr.grad.numpy(), wr.grad.numpy(), br.grad.numpy())

    t_im2col = _time(im2col, repeats)
    t_torch = _time(torch_conv, repeats)
    t0 = time.perf_counter()
    direct()
    t_direct = time.perf_counter() - t0
    diff = lambda a, c: max(float(np.abs(u - v).max() / max(1.0, np.abs(v).max())) for u, v in zip(out[a], out[c]))
    return dict(layer=name, batch=batch, direct_ms=t_direct * 1e3, im2col_ms=t_im2col * 1e3, torch_ms=t_torch * 1e3,
                direct_over_im2col=t_direct / t_im2col, im2col_over_torch=t_im2col / t_torch,
                max_rel_diff_direct_vs_im2col=diff("direct", "im2col"),
                max_rel_diff_im2col_vs_torch=diff("im2col", "torch"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="bench/results/scratch_conv.json")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = [measure(*layer, batch=args.batch, repeats=args.repeats) for layer in LAYERS]
    lenet = [r for r in rows if r["layer"].startswith("LeNet")]
    total = {k: sum(r[k] for r in lenet) for k in ("direct_ms", "im2col_ms", "torch_ms")}
    rows.append(dict(layer="LeNet-5, all three convolutions", batch=args.batch, **total,
                     direct_over_im2col=total["direct_ms"] / total["im2col_ms"],
                     im2col_over_torch=total["im2col_ms"] / total["torch_ms"],
                     max_rel_diff_direct_vs_im2col=max(r["max_rel_diff_direct_vs_im2col"] for r in lenet),
                     max_rel_diff_im2col_vs_torch=max(r["max_rel_diff_im2col_vs_torch"] for r in lenet)))
    print(f"forward + backward, batch {args.batch}, float32, 1 thread\n")
    print("| layer | direct (ms) | im2col (ms) | torch (ms) | direct / im2col | im2col / torch |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layer']} | {r['direct_ms']:.0f} | {r['im2col_ms']:.2f} | {r['torch_ms']:.2f} | "
              f"{r['direct_over_im2col']:.0f}x | {r['im2col_over_torch']:.1f}x |")
    result = dict(command=" ".join([Path(sys.executable).name, *sys.argv]), batch=args.batch, repeats=args.repeats,
                  dtype="float32", threads=1, numpy=np.__version__, torch=torch.__version__,
                  machine=platform.processor() or platform.machine(), rows=rows,
                  checks=dict(im2col_50x_faster_than_direct=all(r["direct_over_im2col"] >= 50 for r in rows
                                                                if r["layer"] in CLAIMED),
                              forms_agree=all(r["max_rel_diff_direct_vs_im2col"] < 1e-4
                                              and r["max_rel_diff_im2col_vs_torch"] < 1e-4 for r in rows)))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    print(f"\nchecks: {result['checks']}\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
