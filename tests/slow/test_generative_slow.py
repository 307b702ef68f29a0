"""Generative quality on Fashion-MNIST (bench/generative.py, one run, about 20 minutes on 2 CPU
cores), in the feature space of a fovea classifier, with 2000 samples per model and a class
counted as covered when it gets at least 2% of the samples:

1. a DCGAN trains in <= 600 s and covers >= 8 of 10 classes; its Frechet distance is at most a
   quarter of uniform noise's;
2. VAE samples cover >= 9 of 10 classes and sit at most 0.2 of the way from held-out real data
   (0) to noise (1) on the Frechet scale;
3. the denoising autoencoder's output has at most half the MSE of its noisy input (sigma 0.3).
"""

import pytest

from benchrun import run_bench


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("generative")
    return run_bench("generative.py", tmp / "generative.json", "--figures", str(tmp / "img"))


@pytest.mark.slow
def test_dcgan_trains_in_ten_minutes_and_covers_the_classes(bench):
    q = bench["dcgan"]["quality"]
    assert bench["dcgan"]["train_s"] <= 600, f"load {bench['dcgan']['load_before']} -> {bench['dcgan']['load_after']}"
    assert q["coverage"]["samples"] >= 8, q["class_counts"]["samples"]
    assert q["fid"]["samples"] <= q["fid"]["noise"] / 4
    assert q["fid"]["real"] < q["fid"]["samples"]  # the reference points bracket the samples


@pytest.mark.slow
def test_vae_samples_cover_the_classes_and_sit_near_real_data(bench):
    q = bench["vae"]["quality"]
    assert q["coverage"]["samples"] >= 9, q["class_counts"]["samples"]
    assert q["position"] <= 0.2
    assert q["coverage"]["real"] == 10


@pytest.mark.slow
def test_denoising_autoencoder_halves_the_noise(bench):
    d = bench["dae"]["denoising"]
    assert d["sigma"] == 0.3
    assert d["mse_output"] <= d["mse_noisy"] / 2
