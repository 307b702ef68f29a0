"""Tiny trained runs of every task `fovea serve` predicts with, made once per test session."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from fovea.cli.main import main

SPEC = "conv3x3-8,relu,maxpool2,fc16,relu,fc10"  # digits are 8x8: a tiny CNN with a spatial map for Grad-CAM


def _photos(folder, n=6, side=48):
    import skimage.data

    astro, coffee = skimage.data.astronaut(), skimage.data.coffee()
    crops = [astro[0:side, 0:side], astro[100:100 + side, 200:200 + side], coffee[50:50 + side, 50:50 + side],
             coffee[200:200 + side, 300:300 + side], astro[300:300 + side, 100:100 + side],
             coffee[100:100 + side, 400:400 + side], astro[400:400 + side, 400:400 + side]]
    for sub, i, arr in [("train", i, a) for i, a in enumerate(crops[:n])] + [("test", 9, crops[n])]:
        (folder / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(arr)).save(folder / sub / f"p{i}.png")
    return folder


def _digit_pngs(folder, count=12):
    from sklearn.datasets import load_digits

    d = load_digits()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).save(folder / f"{d.target[i]}-{i}.png")
    return folder


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory):
    """``(runs_dir, {task: run folder})``: one tiny run per served task, all in one folder; the
    classifier and the metric run also hold a retrieval index of a dozen digit images."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ.pop("FOVEA_RUN_DIR", None)
    root = tmp_path_factory.mktemp("serve")
    runs, data = root / "runs", root / "data"
    digits = _digit_pngs(data / "digits")
    photos = _photos(data / "photos")
    style = data / "stripes.png"
    yy, xx = np.mgrid[0:32, 0:32]
    Image.fromarray(np.stack([(np.sin(xx / 2.0) > 0) * 230, (np.sin(yy / 3.0) > 0) * 200, np.full_like(xx, 40)],
                             -1).astype(np.uint8)).save(style)
    one = ["--epochs", "1", "--batch-size", "4"]
    commands = {
        "classify": ["train", "classify", "--data", "digits", "--model", SPEC, "--epochs", "1", "--batch-size", "64",
                     "--lr", "0.05", "--val-fraction", "0"],
        "metric": ["train", "metric", "--data", "digits", "--model", SPEC, "--epochs", "1", "--embed-dim", "8"],
        "autoencoder": ["train", "autoencoder", "--kind", "conv", "--data", "digits", "--epochs", "1"],
        "gan": ["train", "gan", "--arch", "dcgan", "--data", "digits", "--epochs", "1", "--width", "8",
                "--latent-dim", "16"],
        "segment": ["train", "segment", "--data", "shapes:24:4:4", "--image-size", "32", "--patch", "24",
                    "--model", "unet-same", "--model-kwargs", '{"base": 2, "depth": 2}', *one],
        "superres": ["train", "superres", "--data", str(photos), "--scale", "2", "--patch", "24",
                     "--model-kwargs", '{"widths": [8, 4]}', *one],
        "denoise": ["train", "denoise", "--data", str(photos), "--sigma", "25", "--patch", "24",
                    "--model-kwargs", '{"depth": 3, "width": 8}', *one],
        "stylenet": ["train", "stylenet", "--style", str(style), "--data", str(photos), "--image-size", "32",
                     "--loss", "random", "--model-kwargs", '{"width": 4, "blocks": 1}', "--epochs", "1",
                     "--batch-size", "2"],
        "flow": ["train", "flow", "--data", "chairs:n=8,val=0,test=0,size=32", "--model", "flownets",
                 "--model-kwargs", json.dumps(dict(width=0.1)), "--epochs", "1", "--batch-size", "4"],
        "depth": ["train", "depth", "--scale", "8", "--patch", "32", "--batch-size", "8", "--epochs", "1",
                  "--train-fraction", "0.125", "--model-kwargs", '{"widths": [4, 8, 8], "scales": 2, "max_disp": 10}'],
    }
    made = {}
    try:
        for task, argv in commands.items():
            out = runs / task
            assert main([*argv, "--out", str(out)]) == 0, task
            made[task] = out
        for task in ("classify", "metric"):
            assert main(["index", str(made[task]), str(digits), "--out", str(made[task] / "index.safetensors")]) == 0
    finally:
        torch.set_num_threads(threads)
    return runs, made, data
