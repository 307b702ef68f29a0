"""Generative losses against direct NumPy evaluations of their formulas, the contractive
penalty's closed form against autograd and a NumPy Jacobian, and the generator losses'
gradients where the discriminator rejects the fakes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import UserError
from fovea.losses.generative import (
    CORRUPTIONS,
    GAN_LOSSES,
    contractive_penalty_autograd,
    contractive_penalty_sigmoid,
    corrupt,
    discriminator_loss,
    generator_loss,
    reconstruction_loss,
    sparse_penalty,
    vae_kl,
)
from fovea.models.autoencoder import build_autoencoder


def _np_sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _np_log_sigmoid(a):
    return -np.logaddexp(0.0, -a)


def test_sparse_penalty_equals_numpy():
    h = torch.randn(5, 7, dtype=torch.float64)
    expected = 0.3 * np.mean(np.sum(np.abs(h.numpy()), axis=1))
    assert sparse_penalty(h, 0.3).item() == pytest.approx(expected, rel=1e-12)


def _sigmoid_encoder(d=12, k=5):
    lin = nn.Linear(d, k).double()
    with torch.no_grad():
        lin.weight.normal_(0, 0.5)
    return lin


def _numpy_jacobian_penalty(w, b, x, lam):
    """lam * mean_n ||J||_F^2 with J_ji = h_j (1 - h_j) W_ji written out as a matrix per example."""
    total = 0.0
    for xn in x:
        h = _np_sigmoid(w @ xn + b)
        jac = (h * (1 - h))[:, None] * w  # (k, d)
        total += np.sum(jac ** 2)
    return lam * total / len(x)


def test_contractive_sigmoid_equals_autograd_and_numpy_jacobian():
    lin = _sigmoid_encoder()
    x = torch.rand(4, 12, dtype=torch.float64)
    h = torch.sigmoid(lin(x))
    exact = contractive_penalty_sigmoid(h, lin.weight, 0.7)
    auto = contractive_penalty_autograd(lambda v: torch.sigmoid(lin(v)), x, 0.7)
    ref = _numpy_jacobian_penalty(lin.weight.detach().numpy(), lin.bias.detach().numpy(), x.numpy(), 0.7)
    assert exact.item() == pytest.approx(ref, rel=1e-10)
    assert auto.item() == pytest.approx(ref, rel=1e-10)


def test_contractive_penalty_gradients_agree():
    lin = _sigmoid_encoder()
    x = torch.rand(3, 12, dtype=torch.float64)
    g_exact = torch.autograd.grad(contractive_penalty_sigmoid(torch.sigmoid(lin(x)), lin.weight, 1.0), lin.weight)[0]
    g_auto = torch.autograd.grad(contractive_penalty_autograd(lambda v: torch.sigmoid(lin(v)), x, 1.0), lin.weight)[0]
    torch.testing.assert_close(g_exact, g_auto)


def test_contractive_autograd_on_a_sigmoid_autoencoder_with_image_input():
    ae = build_autoencoder("fc", 1, (3, 4), hidden=[], latent_dim=5, encoder_act="sigmoid").double()
    x = torch.rand(4, 1, 3, 4, dtype=torch.float64)
    out = ae(x)
    assert out.hidden is out.code  # the code is the sigmoid activation itself
    exact = contractive_penalty_sigmoid(out.code, ae.code_layer.weight, 0.5)
    auto = contractive_penalty_autograd(ae.encode, x, 0.5)
    torch.testing.assert_close(exact, auto)
    assert auto.requires_grad
    assert not contractive_penalty_autograd(ae.encode, x, 0.5, create_graph=False).requires_grad


def test_contractive_sigmoid_rejects_mismatched_weight():
    with pytest.raises(UserError, match="latent"):
        contractive_penalty_sigmoid(torch.rand(2, 5), torch.rand(4, 9), 1.0)


def test_vae_kl_equals_numpy_and_torch_distributions():
    mu = torch.randn(6, 4, dtype=torch.float64)
    logvar = torch.randn(6, 4, dtype=torch.float64)
    m, lv = mu.numpy(), logvar.numpy()
    expected = np.mean(np.sum(-0.5 * (1 + lv - m ** 2 - np.exp(lv)), axis=1))
    got = vae_kl(mu, logvar)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(got, torch.distributions.kl_divergence(q, p).sum(1).mean())
    assert vae_kl(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0.0  # q = prior


@pytest.mark.parametrize("kind", ["mse", "bce"])
def test_reconstruction_loss_equals_numpy(kind):
    r = torch.rand(3, 2, 4, 4, dtype=torch.float64) * 0.98 + 0.01
    x = torch.rand(3, 2, 4, 4, dtype=torch.float64)
    rn, xn = r.numpy(), x.numpy()
    per_pixel = (rn - xn) ** 2 if kind == "mse" else -(xn * np.log(rn) + (1 - xn) * np.log(1 - rn))
    assert reconstruction_loss(r, x, kind).item() == pytest.approx(per_pixel.reshape(3, -1).sum(1).mean(), rel=1e-10)
    assert reconstruction_loss(r, x, kind, reduction="mean").item() == pytest.approx(per_pixel.mean(), rel=1e-10)


def test_reconstruction_loss_bad_arguments():
    r = torch.rand(2, 4)
    with pytest.raises(UserError, match="mse, bce"):
        reconstruction_loss(r, r, "l1")
    with pytest.raises(UserError, match="reduction"):
        reconstruction_loss(r, r, "mse", reduction="none")
    with pytest.raises(UserError, match="shape"):
        reconstruction_loss(r, torch.rand(2, 5))


def test_corrupt_gaussian_noise_std():
    x = torch.full((20000,), 0.5)
    y = corrupt(x, "gaussian", 0.1, generator=torch.Generator().manual_seed(1))
    assert (y - x).std().item() == pytest.approx(0.1, rel=0.03)
    assert (y - x).mean().abs().item() < 0.005
    z = corrupt(torch.rand(1000), "gaussian", 3.0)
    assert z.min() >= 0 and z.max() <= 1  # clamped to [0, 1]


def test_corrupt_mask_fraction_and_determinism():
    x = torch.rand(20000) + 0.1  # no zeros before masking
    y = corrupt(x, "mask", 0.25, generator=torch.Generator().manual_seed(2))
    assert (y == 0).float().mean().item() == pytest.approx(0.25, abs=0.01)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept])
    y2 = corrupt(x, "mask", 0.25, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(y, y2)


def test_corrupt_bad_arguments():
    with pytest.raises(UserError, match="gaussian, mask"):
        corrupt(torch.rand(3), "saltpepper", 0.1)
    with pytest.raises(UserError, match="probability"):
        corrupt(torch.rand(3), "mask", 1.5)
    assert CORRUPTIONS == ("gaussian", "mask")


def test_discriminator_loss_equals_numpy():
    real, fake = torch.randn(7, dtype=torch.float64) * 3, torch.randn(5, dtype=torch.float64) * 3
    d_real, d_fake = _np_sigmoid(real.numpy()), _np_sigmoid(fake.numpy())
    expected = -(np.mean(np.log(d_real)) + np.mean(np.log(1 - d_fake)))
    assert discriminator_loss(real, fake).item() == pytest.approx(expected, rel=1e-10)
    ones, zeros = torch.ones_like(real), torch.zeros_like(fake)
    bce = F.binary_cross_entropy_with_logits(real, ones) + F.binary_cross_entropy_with_logits(fake, zeros)
    torch.testing.assert_close(discriminator_loss(real, fake), bce)


def test_generator_losses_equal_numpy():
    fake = torch.randn(9, dtype=torch.float64) * 3
    d_fake = _np_sigmoid(fake.numpy())
    assert generator_loss(fake, "minimax").item() == pytest.approx(np.mean(np.log(1 - d_fake)), rel=1e-10)
    assert generator_loss(fake, "non-saturating").item() == pytest.approx(-0.5 * np.mean(np.log(d_fake)), rel=1e-10)


def test_minimax_generator_loss_is_minus_discriminator_loss_up_to_the_real_term():
    real, fake = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    real_term = -np.mean(_np_log_sigmoid(real.numpy()))  # the part of L(D) that G does not control
    got = generator_loss(fake, "minimax").item()
    assert got == pytest.approx(-(discriminator_loss(real, fake).item() - real_term), rel=1e-10)


def test_stable_at_extreme_logits():
    big = torch.tensor([-200.0, 200.0])
    for kind in GAN_LOSSES:
        assert torch.isfinite(generator_loss(big, kind))
    assert torch.isfinite(discriminator_loss(big, big))


def test_non_saturating_keeps_gradients_where_minimax_vanishes():
    # a discriminator that confidently rejects the fakes: D(G(z)) = sigmoid(-10) ~ 4.5e-5
    fake = torch.full((16,), -10.0, dtype=torch.float64) + torch.linspace(-0.5, 0.5, 16, dtype=torch.float64)
    norms = {}
    for kind in GAN_LOSSES:
        logits = fake.clone().requires_grad_(True)
        generator_loss(logits, kind).backward()
        norms[kind] = logits.grad.norm().item()
    assert norms["non-saturating"] >= 100 * norms["minimax"]
    # and through a tiny generator's parameters: logits = w . G(z) with G linear
    gen = nn.Linear(3, 4).double()
    w = torch.full((4,), 1.0, dtype=torch.float64)
    z = torch.randn(16, 3, dtype=torch.float64)
    param_norms = {}
    for kind in GAN_LOSSES:
        gen.zero_grad()
        logits = gen(z) @ w
        logits = logits - logits.detach() - 10.0  # value -10, gradient of the generator's output
        generator_loss(logits, kind).backward()
        param_norms[kind] = torch.cat([p.grad.flatten() for p in gen.parameters()]).norm().item()
    assert param_norms["non-saturating"] >= 100 * param_norms["minimax"]


def test_generator_loss_unknown_kind():
    with pytest.raises(UserError, match="minimax, non-saturating"):
        generator_loss(torch.zeros(2), "wasserstein")
