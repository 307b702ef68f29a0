"""The contractive autoencoder's penalty lambda ||J_f(x)||_F^2 (Rifai et al. 2011): the closed
form for a sigmoid encoder against the Jacobian computed by automatic differentiation.

    python bench/contractive.py [--repeats 30] [--threads 1] [--json bench/results/contractive.json]

The encoder is h = sigmoid(W x + b) with d = 784 (a 28x28 image) and 196 units, a batch of 64.
One timed step is the encoder's forward, the penalty and the backward pass to W and b:

- exact: ``contractive_penalty_sigmoid(h, W, lam)``, sum_j (h_j (1 - h_j))^2 sum_i W_ji^2;
- autograd: ``contractive_penalty_autograd(encode, x, lam)``, the full (64, 196, 784) Jacobian
  by ``vmap(jacrev(...))``, differentiable for training.

Both run in the same process, interleaved (exact, autograd, exact, ...) after warm-up, so that
load from other processes falls on both alike; the speed of a side is its median step time.
The two penalties and their gradients are compared as well. Target: ratio >= 5.

One intra-op thread by default: on a small shared machine a parallel region waits for every
worker, and one worker parked by the scheduler turns a 2 ms step into a 70 ms one, which
measures the neighbours rather than the penalty.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from fovea.losses.generative import contractive_penalty_autograd, contractive_penalty_sigmoid
from fovea.models.autoencoder import build_autoencoder


def exact_step(ae, x: torch.Tensor, lam: float) -> torch.Tensor:
    ae.zero_grad(set_to_none=True)
    penalty = contractive_penalty_sigmoid(ae.encode(x), ae.code_layer.weight, lam)
    penalty.backward()
    return penalty.detach()


def autograd_step(ae, x: torch.Tensor, lam: float) -> torch.Tensor:
    ae.zero_grad(set_to_none=True)
    penalty = contractive_penalty_autograd(ae.encode, x, lam)
    penalty.backward()
    return penalty.detach()


def timed(step, *args) -> float:
    t0 = time.perf_counter()
    step(*args)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--latent", type=int, default=196)
    ap.add_argument("--lam", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (0: one per CPU)")
    ap.add_argument("--json", default="bench/results/contractive.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    torch.manual_seed(0)
    size = (28, 28)
    d = size[0] * size[1]
    ae = build_autoencoder("fc", 1, size, hidden=[], latent_dim=args.latent, encoder_act="sigmoid")
    x = torch.rand(args.batch_size, 1, *size)

    exact_value = exact_step(ae, x, args.lam)
    exact_grad = ae.code_layer.weight.grad.clone()
    auto_value = autograd_step(ae, x, args.lam)
    auto_grad = ae.code_layer.weight.grad.clone()
    value_rel_err = (exact_value - auto_value).abs().item() / auto_value.abs().item()
    grad_rel_err = ((exact_grad - auto_grad).norm() / auto_grad.norm()).item()

    for _ in range(args.warmup):
        exact_step(ae, x, args.lam)
        autograd_step(ae, x, args.lam)
    exact_times, auto_times = [], []
    for _ in range(args.repeats):
        exact_times.append(timed(exact_step, ae, x, args.lam))
        auto_times.append(timed(autograd_step, ae, x, args.lam))
    t_exact, t_auto = statistics.median(exact_times), statistics.median(auto_times)
    ratio = t_auto / t_exact

    print(f"sigmoid encoder d={d} -> {args.latent}, batch {args.batch_size}, forward + backward, "
          f"median of {args.repeats}")
    print(f"exact (closed form)   {t_exact * 1e3:9.2f} ms   penalty {exact_value.item():.6f}")
    print(f"autograd (Jacobian)   {t_auto * 1e3:9.2f} ms   penalty {auto_value.item():.6f}")
    print(f"speed-up {ratio:.1f}x   relative difference: penalty {value_rel_err:.1e}, gradient dW {grad_rel_err:.1e}")

    results = dict(
        d=d, latent=args.latent, batch_size=args.batch_size, lam=args.lam, repeats=args.repeats,
        exact_ms=t_exact * 1e3, autograd_ms=t_auto * 1e3, ratio=ratio,
        exact_penalty=exact_value.item(), autograd_penalty=auto_value.item(),
        penalty_rel_diff=value_rel_err, grad_rel_diff=grad_rel_err,
        exact_ms_runs=[t * 1e3 for t in exact_times], autograd_ms_runs=[t * 1e3 for t in auto_times],
        machine=dict(cpus=os.cpu_count(), torch=torch.__version__, threads=torch.get_num_threads()),
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
