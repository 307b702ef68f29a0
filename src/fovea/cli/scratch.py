"""`fovea scratch check` and `fovea scratch train`: the from-scratch NumPy engine's gradient checks
and torch comparisons, and LeNet-5 trained on scikit-learn's digits with it."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from fovea.errors import UserError


def _write_json(path: str, data: dict) -> None:
    """Atomically: a temp file in the same folder, then os.replace."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_check(args) -> int:
    from fovea.scratch_check import GRAD_TOL, TOL, format_table, run_checks

    t0 = time.perf_counter()
    rows = run_checks(seed=args.seed)
    print(format_table(rows))
    failed = [r.name for r in rows if not r.passed]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} passed (float64; max abs difference with PyTorch <= {TOL:g}, "
          f"finite-difference relative error <= {GRAD_TOL:g}) in {time.perf_counter() - t0:.1f} s")
    if args.json:
        _write_json(args.json, dict(tolerance=TOL, gradcheck_tolerance=GRAD_TOL, seed=args.seed,
                                    rows=[r.as_dict() for r in rows], passed=not failed))
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


def cmd_train(args) -> int:
    import numpy as np

    from fovea import scratch as S
    from fovea.scratch.data import load_digits32, random_shift

    if args.epochs < 1 or args.batch_size < 1:
        raise UserError(f"Received --epochs {args.epochs} and --batch-size {args.batch_size}, expected both >= 1")
    if not 0 <= args.shift <= 2:
        raise UserError(f"Received --shift {args.shift}, expected 0, 1 or 2 pixels "
                        "(the zero border of the 32x32 field)")
    if args.lr <= 0:
        raise UserError(f"Received --lr {args.lr}, expected a positive learning rate")
    xtr, ytr, xte, yte = load_digits32(test_fraction=0.25, seed=args.seed)
    if args.limit:
        xtr, ytr = xtr[:args.limit], ytr[:args.limit]
    model = S.lenet5(act=args.act, pool=args.pool, seed=args.seed)
    opt = S.OPTIMIZERS[args.optimizer](model.parameters(), lr=args.lr, l2=args.l2)
    print(f"LeNet-5 (NumPy) on digits resized to 32x32: {len(xtr)} training, {len(xte)} test images; "
          f"{args.optimizer} lr {args.lr} (cosine), {args.epochs} epochs, batch {args.batch_size}, "
          f"random shifts of up to {args.shift} px")
    t0 = time.perf_counter()
    history = S.fit(model, S.SoftmaxCrossEntropy(), opt, xtr, ytr, args.epochs, args.batch_size, seed=args.seed,
                    x_test=xte, y_test=yte, schedule=lambda e: 0.5 * (1 + np.cos(np.pi * e / args.epochs)),
                    augment=(lambda x, rng: random_shift(x, rng, args.shift)) if args.shift else None, log=print)
    seconds = time.perf_counter() - t0
    acc = history[-1]["test_acc"]
    print(f"test accuracy {acc:.4f} ({round(acc * len(xte))}/{len(xte)}) in {seconds:.0f} s")
    if args.json:
        _write_json(args.json, dict(
            model="lenet5", act=args.act, pool=args.pool, optimizer=args.optimizer, lr=args.lr, l2=args.l2,
            shift=args.shift, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
            split=f"scikit-learn digits, stratified 75/25 (train_test_split, random_state={args.seed})",
            n_train=len(xtr), n_test=len(xte), test_accuracy=acc, seconds=seconds, history=history))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scratch", help="the from-scratch NumPy engine: gradient checks, LeNet-5 on digits",
                       description="fovea.scratch: convolutional networks in plain NumPy, checked against PyTorch.")
    s = p.add_subparsers(dest="scratch_command", metavar="{check,train}")
    c = s.add_parser("check", help="every layer against PyTorch autograd and finite differences; prints a table",
                     description="Runs every scratch layer's forward and backward pass against PyTorch (float64) "
                                 "and a finite-difference gradient check; exit code 1 if any row fails.")
    c.add_argument("--json", metavar="OUT", help="also write the table as JSON")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=cmd_check)
    t = s.add_parser("train", help="train the NumPy LeNet-5 on scikit-learn's digits (32x32)",
                     description="LeNet-5 in plain NumPy on scikit-learn's 8x8 digits, resized to 28x28 and padded "
                                 "to 32x32; a stratified 75/25 split with --seed.")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--optimizer", choices=["sgd", "momentum", "adagrad", "rmsprop", "adam"], default="adam")
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--l2", type=float, default=0.0, help="lambda of the L2 term lambda * sum W^2")
    t.add_argument("--shift", type=int, default=2, help="augmentation: random shifts of up to N pixels (0: none)")
    t.add_argument("--act", choices=["relu", "tanh", "sigmoid"], default="relu")
    t.add_argument("--pool", choices=["max", "avg"], default="max")
    t.add_argument("--limit", type=int, default=0, help="use only the first N training images (0: all)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--json", metavar="OUT", help="write the result and the per-epoch history as JSON")
    t.set_defaults(func=cmd_train)

    def _help(args) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)
