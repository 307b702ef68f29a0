"""Adversarial examples: FGSM, PGD (L-inf, L2), targeted attacks, fooling images, adversarial
training batches, and the `fovea attack` / `fovea evaluate --attack` commands."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from fovea.apps.adversarial import (accuracy_under_attack, adversarial_batch, fgsm, fooling_image, pgd,
                                    quantize)
from fovea.cli.main import main
from fovea.data.sources import load_data
from fovea.data.transforms import Preprocess
from fovea.report.plots import save_image
from fovea.tasks.classify import ImageClassifier, build_net

SPEC = "conv3x3-16,bn,relu,maxpool2,conv3x3-32,bn,relu,maxpool2,fc64,relu,dropout0.2,fc10"
TINY = "conv3x3-8,relu,maxpool2,conv3x3-16,relu,gap,fc10"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These 16x16 models are too small to gain from intra-op threads, and on a shared machine two
    threads waiting on each other cost ten times more than they give."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    data = load_data("digits", image_size=(16, 16))
    return data


@pytest.fixture(scope="module")
def trained(digits):
    """A small CNN (with batch norm and dropout) trained for 200 SGD steps on 16x16 digits."""
    torch.manual_seed(0)
    model = ImageClassifier(build_net(SPEC, 10, 1, (16, 16)), Preprocess("zscore"))
    model.preprocess.fit(digits.train.images)
    x, y = digits.train.images.float() / 255, digits.train.labels
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(200):
        idx = torch.randint(0, len(y), (64,))
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.zero_grad(set_to_none=True)
    xt, yt = digits.test.images[:256].float() / 255, digits.test.labels[:256]
    with torch.no_grad():
        assert (model(xt).argmax(1) == yt).float().mean() > 0.85
    return model, xt, yt


def loss_of(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def test_fgsm_moves_every_pixel_by_eps_and_raises_the_loss(trained):
    model, x, y = trained
    eps = 0.1
    x_adv = fgsm(model, x, y, eps)
    delta = x_adv - x
    assert delta.abs().max().item() == pytest.approx(eps, abs=1e-6)
    free = (x_adv > 0) & (x_adv < 1) & (delta != 0)  # not clamped, gradient not exactly zero
    assert free.float().mean() > 0.3
    assert torch.allclose(delta[free].abs(), torch.full_like(delta[free], eps), atol=1e-6)
    # the formula itself: clip(x + eps * sign(grad_x J))
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    assert torch.allclose(x_adv, (x + eps * g.sign()).clamp(0, 1), atol=1e-6)
    assert loss_of(model, x_adv, y) > loss_of(model, x, y) + 0.5


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_8_bit_rounding_toward_the_original_stays_within_eps(trained, norm, eps):
    model, x, y = trained
    x8 = quantize(x)
    x_adv = quantize(pgd(model, x8, y, eps, steps=3, norm=norm), reference=x8)
    assert torch.allclose(x_adv, quantize(x_adv), atol=1e-6)  # on the 8-bit grid
    delta = (x_adv - x8).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-6).all()
    if norm == "linf":
        assert round(float(size.max()) * 255) == 25  # 0.1 = 25.5 levels: 25 kept, not 26


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_pgd_stays_in_the_ball_and_beats_fgsm(trained, norm, eps):
    model, x, y = trained
    x_adv = pgd(model, x, y, eps, steps=10, norm=norm, generator=torch.Generator().manual_seed(0))
    delta = (x_adv - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    loss_fgsm = loss_of(model, fgsm(model, x, y, eps, norm=norm), y)
    loss_pgd = loss_of(model, x_adv, y)
    assert loss_pgd >= loss_fgsm
    with torch.no_grad():
        assert (model(x_adv).argmax(1) == y).float().mean() <= (model(fgsm(model, x, y, eps, norm=norm)).argmax(1) == y).float().mean()


def test_pgd_without_random_start_is_deterministic_and_more_steps_never_hurt(trained):
    model, x, y = trained
    a = pgd(model, x, y, 0.05, steps=5, random_start=False)
    b = pgd(model, x, y, 0.05, steps=5, random_start=False)
    assert torch.equal(a, b)
    per_example = lambda z: F.cross_entropy(model(z), y, reduction="none")  # noqa: E731
    with torch.no_grad():  # keep_best: at least as good as the start (x itself) for every image
        assert (per_example(a) >= per_example(x) - 1e-5).all()


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_targeted_attack_raises_the_probability_of_the_target(trained, method):
    model, x, y = trained
    keep = y != 3
    x, y = x[keep][:64], y[keep][:64]
    attack = fgsm if method == "fgsm" else pgd
    x_adv = attack(model, x, y, 0.1, target=3)
    with torch.no_grad():
        p0, p1 = model(x).softmax(1)[:, 3], model(x_adv).softmax(1)[:, 3]
    assert p1.mean() > p0.mean() + 0.05
    assert (p1 > p0).float().mean() > 0.8
    if method == "pgd":
        strong = pgd(model, x, y, 0.3, steps=20, target=3)
        with torch.no_grad():
            assert (model(strong).argmax(1) == 3).float().mean() > 0.8


@pytest.mark.parametrize("target", [0, 7])
def test_fooling_image_from_noise_reaches_99_percent(trained, target):
    model, _, _ = trained
    img, conf, steps = fooling_image(model, target, (1, 16, 16), generator=torch.Generator().manual_seed(0))
    assert conf >= 0.99 and 0 < steps < 500
    assert img.shape == (1, 16, 16) and torch.equal(img, quantize(img))  # an 8-bit image, as a PNG holds it
    with torch.no_grad():
        assert model(img[None]).softmax(1)[0, target].item() == pytest.approx(conf, abs=1e-5)


def test_fooling_image_from_grey_and_bad_target(trained):
    model, _, _ = trained
    _, conf, _ = fooling_image(model, 5, (1, 16, 16), start="grey")
    assert conf >= 0.99
    with pytest.raises(Exception, match="0..9"):
        fooling_image(model, 10, (1, 16, 16))


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_adversarial_batch_has_no_side_effects(trained, method):
    model, x, y = trained
    model.train()
    next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)).eval()  # a frozen BN stays frozen
    modes = {name: m.training for name, m in model.named_modules()}
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        x_adv = adversarial_batch(model, x[:64], y[:64], method, 0.1, steps=3)
        assert all(p.grad is None for p in model.parameters())
        assert {name: m.training for name, m in model.named_modules()} == modes
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in buffers.items())  # BN statistics untouched
        assert not x_adv.requires_grad and x_adv.shape == x[:64].shape
        assert (x_adv - x[:64]).abs().max() <= 0.1 + 1e-6
        assert loss_of(model.eval(), x_adv, y[:64]) > loss_of(model, x[:64], y[:64])
    finally:
        model.eval()


def test_adversarial_batch_in_a_training_step_gives_only_the_loss_gradient(trained):
    model, x, y = trained
    xb, yb = x[:32], y[:32]
    model.eval()  # no dropout, so the two passes below see the same network
    x_adv = adversarial_batch(model, xb, yb, "fgsm", 0.1)
    loss = 0.5 * F.cross_entropy(model(xb), yb) + 0.5 * F.cross_entropy(model(x_adv), yb)
    expected = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
    loss.backward()
    assert all(torch.allclose(p.grad, e) for p, e in zip(model.parameters(), expected))
    model.zero_grad(set_to_none=True)


def test_accuracy_under_attack_falls_with_eps(trained, digits):
    model, x, y = trained
    curve = accuracy_under_attack(model, (x, y), "fgsm", [0, 0.05, 0.2], batch_size=100)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    assert curve[0.0] == pytest.approx(clean)
    assert curve[0.0] > curve[0.05] > curve[0.2]
    from fovea.train.data import Batches

    batches = Batches(digits.test, 128, torch.device("cpu"), shuffle=False)
    pgd_curve = accuracy_under_attack(model, batches, "pgd", [0.1], steps=5)
    assert pgd_curve[0.1] < 0.5


def test_bad_arguments_name_the_value(trained):
    model, x, y = trained
    with pytest.raises(Exception, match="eps=-0.1"):
        fgsm(model, x, y, -0.1)
    with pytest.raises(Exception, match="norm='l3'"):
        pgd(model, x, y, 0.1, norm="l3")
    with pytest.raises(Exception, match="method='cw'"):
        adversarial_batch(model, x, y, "cw", 0.1)


# ---------------------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    res = subprocess.run([sys.executable, "-m", "fovea.cli.main", "train", "classify", "--data", "digits", "--model",
                          TINY, "--image-size", "16", "--epochs", "6", "--lr", "0.1", "--batch-size", "32",
                          "--out", str(out)], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    image = out.parent / "digit.png"
    save_image(digits.test.images[0], image)
    return out, image


def test_attack_command_writes_the_image_and_prints_before_and_after(run_dir, tmp_path, capsys):
    run, image = run_dir
    out = tmp_path / "adv.png"
    assert main(["attack", str(run), str(image), "--method", "pgd", "--eps", "0.2", "--steps", "5",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.is_file()
    assert text.startswith("before: ") and "\nafter: " in text and "L-inf 0.2" in text
    assert main(["attack", str(run), str(image), "--method", "fgsm", "--target", "3", "--json",
                 "--out", str(tmp_path / "t.png")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["target"] == "3" and result["after"]["target_prob"] > result["before"]["target_prob"]
    assert 0.09 < result["linf"] <= 0.1


def test_attack_command_fooling_image(run_dir, tmp_path, capsys):
    run, _ = run_dir
    out = tmp_path / "fool.png"
    assert main(["attack", str(run), "--method", "fooling", "--target", "4", "--json",
                 "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["reached"] and result["after"]["cls"] == "4" and result["after"]["prob"] >= 0.99
    assert out.is_file()


@pytest.mark.parametrize("args,needle", [
    (["--method", "fgsm", "--target", "12"], "--target '12' is not a class"),
    (["--method", "fooling"], "needs --target"),
    (["--method", "fgsm", "--eps", "-1"], "--eps -1.0 must be >= 0"),
    (["--method", "cw"], "invalid choice: 'cw'"),
    (["MISSING"], "image"),
])
def test_attack_bad_input_is_one_line_and_exit_2(run_dir, tmp_path, capsys, args, needle):
    run, image = run_dir
    if args == ["MISSING"]:
        args = [str(tmp_path / "missing.png"), "--method", "fgsm"]
    else:
        args = [str(image), *args]
    try:
        code = main(["attack", str(run), *args, "--out", str(tmp_path / "x.png")])
    except SystemExit as e:  # argparse
        code = e.code
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "x.png").exists()


def test_evaluate_attack_gives_the_curve(run_dir, capsys):
    run, _ = run_dir
    assert main(["evaluate", str(run), "--attack", "fgsm", "--eps", "0,0.1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    curve = {p["eps"]: p["accuracy"] for p in result["curve"]}
    assert set(curve) == {0.0, 0.1} and curve[0.1] < curve[0.0]
    assert result["n"] == 360 and result["attack"] == "fgsm"
    from pathlib import Path

    assert Path(result["plot"]).is_file()
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(curve[0.0])


def test_evaluate_eps_needs_attack(run_dir, capsys):
    run, _ = run_dir
    assert main(["evaluate", str(run), "--eps", "0.1"]) == 2
    assert "--eps needs --attack" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", str(run), "--attack", "fgsm", "--eps", "0,abc"])
