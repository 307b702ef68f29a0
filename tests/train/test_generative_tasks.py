"""Autoencoder and GAN runs through the trainer: every kind trains and writes its pictures, the
GAN's two optimizers checkpoint and resume, anomaly detection scores the held-out classes, and
the commands that use these runs (reconstruct, generate, anomaly score/evaluate) work or fail
with one line."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from fovea.cli.main import main
from fovea.tasks.autoencode import KINDS, load_autoencoder
from fovea.tasks.gan import load_gan
from fovea.train.config import TASK_DEFAULTS, TrainConfig
from fovea.train.loop import Trainer


def ae_config(tmp_path, kind, **kw):
    settings = dict(TASK_DEFAULTS["autoencoder"], task="autoencoder", kind=kind, data="digits", epochs=2,
                    batch_size=64, val_fraction=0.1, out=str(tmp_path / kind), log_every_steps=10)
    settings.update(kw)
    return TrainConfig.from_dict(settings)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_autoencoder_kind_trains_and_writes_its_pictures(tmp_path, kind):
    # digits is small: a few hundred steps, with a higher rate than the default for the slow starters
    settings = dict(contractive=dict(lr=1e-2), vae=dict(epochs=60)).get(kind, {})
    result = Trainer(ae_config(tmp_path, kind, **{"epochs": 20, **settings})).fit()
    run = tmp_path / kind
    assert {"loss", "mse", "recon"} <= set(result["test"]), "the test split was evaluated"
    for name in ("model.safetensors", "model.json", "report.html", "plots/reconstructions.png", "plots/errors.png",
                 "plots/interpolation.png", "plots/latent.png"):
        assert (run / name).is_file(), name
    if kind in ("vae", "denoising"):
        assert (run / "plots" / "samples.png").is_file()
    # reconstructions beat the mean image: the autoencoder learned something about digits
    model, info = load_autoencoder(run)
    assert info["kind"] == kind
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images[:200] / 16.0, dtype=torch.float32)[:, None]
    with torch.no_grad():
        mse = (model(x).recon - x).pow(2).mean()
    baseline = (x - x.mean(0)).pow(2).mean()
    assert mse < baseline, (float(mse), float(baseline))


def test_denoising_reports_the_noisy_input_error_beside_its_own(tmp_path):
    result = Trainer(ae_config(tmp_path, "denoising", epochs=20, lr=1e-2, noise="gaussian:0.3")).fit()
    test = result["test"]
    from fovea.data.sources import load_data

    x = load_data("digits").test.images.double().div(255).numpy()
    noisy = np.clip(x + np.random.default_rng(0).normal(0, 0.3, x.shape), 0, 1)  # most pixels are 0: clamping halves
    assert test["noisy_mse"] == pytest.approx(((noisy - x) ** 2).mean(), rel=0.03)
    assert test["mse"] < 0.5 * test["noisy_mse"]


def test_anomaly_detection_ranks_unseen_digits_above_the_normal_one(tmp_path):
    cfg = ae_config(tmp_path, "conv", epochs=15, normal_classes="0", batch_size=32)
    result = Trainer(cfg).fit()
    anomaly = result["anomaly"]
    assert anomaly["normal_classes"] == ["0"]
    assert anomaly["roc_auc"] > 0.9
    assert anomaly["threshold"] is not None
    saved = json.loads((tmp_path / "conv" / "anomaly.json").read_text())
    assert saved["roc_auc"] == anomaly["roc_auc"]


def gan_config(tmp_path, name, **kw):
    settings = dict(TASK_DEFAULTS["gan"], task="gan", arch="dcgan", data="digits", epochs=2, batch_size=64,
                    width=8, latent_dim=16, out=str(tmp_path / name), log_every_steps=10, deterministic=True)
    settings.update(kw)
    return TrainConfig.from_dict(settings)


def test_gan_trains_with_two_optimizers_and_resumes_to_the_same_weights(tmp_path):
    Trainer(gan_config(tmp_path, "full", d_steps=2)).fit()
    run = tmp_path / "full"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert set(ckpt["optimizers"]) == {"discriminator", "generator"}
    assert ckpt["optimizers"]["generator"]["param_groups"][0]["betas"] == (0.5, 0.999)
    for name in ("plots/samples/epoch-001.png", "plots/samples/epoch-002.png", "plots/progress.png",
                 "plots/samples.png", "report.html"):
        assert (run / name).is_file(), name

    half = tmp_path / "half"
    Trainer(gan_config(tmp_path, "half", d_steps=2, epochs=1)).fit()
    cfg = json.loads((half / "config.json").read_text())
    cfg["epochs"] = 2
    (half / "config.json").write_text(json.dumps(cfg))
    assert main(["train", "--resume", str(half)]) == 0
    a, b = load_file(run / "model.safetensors"), load_file(half / "model.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("generator.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_d_steps_sets_how_often_the_generator_steps(tmp_path):
    Trainer(gan_config(tmp_path, "k3", d_steps=3, epochs=1)).fit()
    ckpt = torch.load(tmp_path / "k3" / "checkpoints" / "last.ckpt", weights_only=True)
    d_steps = ckpt["optimizers"]["discriminator"]["state"][0]["step"]
    g_steps = ckpt["optimizers"]["generator"]["state"][0]["step"]
    assert int(d_steps) == ckpt["state"]["step"] and int(g_steps) == int(d_steps) // 3


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vae")
    Trainer(ae_config(tmp, "vae", epochs=3, normal_classes="0,1,2,3,4,5,6,7,8")).fit()
    return tmp / "vae"


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory):
    from sklearn.datasets import load_digits

    tmp = tmp_path_factory.mktemp("pngs")
    d = load_digits()
    paths = []
    for i in (0, 9, 19):  # digits 0, 9 and 9
        p = tmp / f"digit{i}-{d.target[i]}.png"
        Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).resize((24, 24)).save(p)
        paths.append(str(p))
    return paths


def test_reconstruct_generate_and_anomaly_commands(vae_run, digit_pngs, tmp_path, capsys):
    assert main(["reconstruct", str(vae_run), *digit_pngs, "--out", str(tmp_path / "r.png"), "--json"]) == 0
    out = capsys.readouterr().out
    note, payload = out[:out.index("{")], json.loads(out[out.index("{"):])
    assert "24x24 resized to the model's 8x8" in note
    assert len(payload["images"]) == 3 and (tmp_path / "r.png").is_file()

    assert main(["generate", str(vae_run), "-n", "16", "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").is_file()

    assert main(["anomaly", "score", str(vae_run), *digit_pngs, "--maps", str(tmp_path / "maps"), "--json"]) == 0
    out = capsys.readouterr().out
    scored = json.loads(out[out.index("{"):])
    assert scored["threshold"] is not None and len(list((tmp_path / "maps").glob("*.png"))) == 3

    assert main(["anomaly", "evaluate", str(vae_run), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert set(table["methods"]) == {"vae autoencoder", "PCA reconstruction error", "one-class SVM on pixels"}
    from fovea.data.sources import load_data

    assert table["anomalies"] == int((load_data("digits").test.labels == 9).sum())
    assert table["methods"]["vae autoencoder"]["roc_auc"] > 0.5


def test_reconstruct_notes_size_as_height_by_width_and_refuses_a_corrupt_file(vae_run, tmp_path, capsys):
    wide = tmp_path / "wide.png"  # 16 high, 24 wide, colour: the model takes 8x8 grayscale
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(wide)
    assert main(["reconstruct", str(vae_run), str(wide), "--out", str(tmp_path / "r.png")]) == 0
    assert "16x24 resized to the model's 8x8, colour converted to grayscale" in capsys.readouterr().out
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot a png body")
    for command in (["reconstruct", str(vae_run), str(bad)], ["anomaly", "score", str(vae_run), str(bad)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "bad.png" in err and len(err.strip().splitlines()) == 1, err


def test_generate_from_a_gan_run_with_quality_figures(tmp_path, capsys):
    Trainer(gan_config(tmp_path, "g", epochs=1, precision="bf16-mixed")).fit()
    model, info = load_gan(tmp_path / "g")
    assert model.sample(5).shape == (5, 1, 8, 8)
    cls = TrainConfig.from_dict(dict(data="digits", model="conv3x3-8,relu,maxpool2,fc10", epochs=8, lr=0.05,
                                     batch_size=32, val_fraction=0.0, out=str(tmp_path / "cls")))
    Trainer(cls).fit()
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "g"), "-n", "100", "--out", str(tmp_path / "s.png"),
                 "--classifier", str(tmp_path / "cls"), "--json"]) == 0
    q = json.loads(capsys.readouterr().out)["quality"]
    assert (tmp_path / "s.png").is_file()
    # held-out real digits are the best case and noise the worst, in the classifier's feature space
    assert q["fid"]["real"] < q["fid"]["noise"] and q["coverage"]["real"] == 1.0
    assert set(q["fid"]) == {"samples", "real", "noise"}


@pytest.mark.parametrize("args,needle", [
    (["train", "autoencoder", "--kind", "sparse-ish", "--data", "digits"], "unknown autoencoder kind 'sparse-ish'"),
    (["train", "autoencoder", "--kind", "denoising", "--noise", "salt:0.1", "--data", "digits"], "--noise 'salt:0.1'"),
    (["train", "gan", "--arch", "resnet", "--data", "digits"], "--arch 'resnet'"),
    (["train", "gan", "--gan-loss", "wasserstein", "--data", "digits"], "--gan-loss 'wasserstein'"),
    (["anomaly", "fit", "--data", "digits"], "--normal-classes"),
])
def test_bad_input_is_one_line_exit_2(args, needle, tmp_path):
    res = subprocess.run([sys.executable, "-m", "fovea.cli.main", *args, "--out", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "x").exists()


def test_generate_refuses_an_autoencoder_without_a_sampler(tmp_path, capsys):
    Trainer(ae_config(tmp_path, "fc", epochs=1)).fit()
    assert main(["generate", str(tmp_path / "fc"), "-n", "4"]) == 2
    assert "has no sampler" in capsys.readouterr().err
