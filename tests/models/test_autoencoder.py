"""Autoencoders: shapes and ranges for every arch, the VAE's sampling in train and eval mode,
user errors, and the linear autoencoder learning the PCA subspace."""

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from torch import nn

from fovea.errors import UserError
from fovea.models.autoencoder import ARCHS, AEOutput, build_autoencoder

SHAPES = [(1, (8, 8)), (1, (28, 28)), (3, (32, 32))]


def _small(arch, c, size, **kw):
    """Narrow layers keep the 32x32x3 fully connected model small."""
    if arch == "fc":
        kw.setdefault("hidden", [32])
        kw.setdefault("latent_dim", 8)
    if arch == "conv":
        kw.setdefault("hidden", [8, 16])
    if arch == "linear":
        kw.setdefault("latent_dim", 8)
    return build_autoencoder(arch, c, size, **kw)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("c,size", SHAPES)
def test_shapes_and_range(arch, c, size):
    ae = _small(arch, c, size)
    x = torch.rand(2, c, *size)
    out = ae(x)
    assert isinstance(out, AEOutput)
    assert out.recon.shape == x.shape
    assert out.code.shape == (2, ae.latent_dim)
    assert out.mu is None and out.logvar is None
    torch.testing.assert_close(ae.encode(x), out.code)
    torch.testing.assert_close(ae.decode(out.code), out.recon)
    if arch != "linear":
        assert out.recon.min() >= 0 and out.recon.max() <= 1
    out.recon.sum().backward()
    assert all(p.grad is not None for p in ae.parameters())


@pytest.mark.parametrize("size", [(7, 9), (5, 13), (4, 4)])
def test_conv_reconstructs_odd_sizes_exactly(size):
    ae = _small("conv", 2, size, variational=True)
    assert ae(torch.rand(2, 2, *size)).recon.shape == (2, 2, *size)


def test_fc_defaults_follow_the_d_d2_d4_shape():
    ae = build_autoencoder("fc", 1, (8, 8))
    linears = [m for m in ae.modules() if isinstance(m, nn.Linear)]
    # encoder 64 -> 32, code 32 -> 16, decoder 16 -> 32 -> 64
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 16), (16, 32), (32, 64)]
    assert ae.latent_dim == 16 and ae.arch == "fc" and ae.image_size == (8, 8)
    assert sum(isinstance(m, nn.ReLU) for m in ae.modules()) == 2


def test_fc_hidden_is_the_last_hidden_activation():
    ae = build_autoencoder("fc", 1, (4, 4), hidden=[10, 6], latent_dim=3, encoder_act="tanh")
    out = ae(torch.rand(5, 1, 4, 4))
    assert out.hidden.shape == (5, 6)
    assert sum(isinstance(m, nn.Tanh) for m in ae.modules()) == 4


def test_single_layer_sigmoid_encoder_is_the_contractive_form():
    ae = build_autoencoder("fc", 1, (4, 4), hidden=[], latent_dim=5, encoder_act="sigmoid")
    x = torch.rand(3, 1, 4, 4)
    w, b = ae.code_layer.weight, ae.code_layer.bias
    out = ae(x)
    torch.testing.assert_close(out.code, torch.sigmoid(x.flatten(1) @ w.T + b))
    assert out.hidden is out.code
    # with a relu encoder and no hidden layer the code is linear in x
    relu = build_autoencoder("fc", 1, (4, 4), hidden=[], latent_dim=5)
    torch.testing.assert_close(relu.encode(x), x.flatten(1) @ relu.code_layer.weight.T + relu.code_layer.bias)
    assert relu(x).hidden is None


def test_linear_has_no_nonlinearity():
    ae = build_autoencoder("linear", 1, (4, 4), latent_dim=3)
    assert all(isinstance(m, (nn.Linear, nn.Flatten, nn.Unflatten, nn.Identity, nn.Sequential, type(ae)))
               for m in ae.modules())
    x = torch.randn(2, 1, 4, 4)
    # linear in x up to the bias: f(a x1 + b x2) = a f(x1) + b f(x2) + (1 - a - b) f(0)
    f = lambda v: ae(v).recon
    x1, x2, zero = x[:1], x[1:], torch.zeros(1, 1, 4, 4)
    torch.testing.assert_close(f(2 * x1 - 3 * x2), 2 * f(x1) - 3 * f(x2) + 2 * f(zero), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["fc", "conv"])
def test_vae_eval_deterministic_train_stochastic(arch):
    ae = _small(arch, 1, (8, 8), variational=True)
    x = torch.rand(3, 1, 8, 8)
    ae.train()
    a, b = ae(x), ae(x)
    assert a.mu.shape == a.logvar.shape == a.code.shape == (3, ae.latent_dim)
    torch.testing.assert_close(a.mu, b.mu)
    assert not torch.allclose(a.code, b.code)
    # z = mu + exp(logvar / 2) * eps with eps ~ N(0, I): the implied eps has the right shape and scale
    eps = (a.code - a.mu) / torch.exp(0.5 * a.logvar)
    assert eps.abs().max() < 6
    ae.eval()
    c, d = ae(x), ae(x)
    torch.testing.assert_close(c.code, c.mu)
    torch.testing.assert_close(c.recon, d.recon)
    torch.testing.assert_close(ae.encode(x), c.mu)


def test_vae_reparameterization_uses_the_global_generator():
    ae = _small("fc", 1, (8, 8), variational=True).train()
    x = torch.rand(2, 1, 8, 8)
    torch.manual_seed(5)
    a = ae(x)
    torch.manual_seed(5)
    eps = torch.randn(2, ae.latent_dim)
    torch.testing.assert_close(a.code, a.mu + torch.exp(0.5 * a.logvar) * eps)


@pytest.mark.parametrize("arch", ["fc", "conv"])
def test_sample(arch):
    ae = _small(arch, 3, (8, 8), variational=True)
    s = ae.sample(4, generator=torch.Generator().manual_seed(0))
    assert s.shape == (4, 3, 8, 8)
    assert s.min() >= 0 and s.max() <= 1
    torch.testing.assert_close(s, ae.sample(4, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("arch", ARCHS)
def test_sample_on_a_plain_autoencoder_raises(arch):
    with pytest.raises(UserError, match="variational"):
        _small(arch, 1, (8, 8)).sample(2)


def test_user_errors():
    with pytest.raises(UserError, match=r"3x3.*at least 4x4"):
        build_autoencoder("conv", 1, (3, 3))
    with pytest.raises(UserError, match=r"at least 8x8"):
        build_autoencoder("conv", 1, (6, 16), hidden=[4, 4, 4])
    with pytest.raises(UserError, match="fc, conv, linear"):
        build_autoencoder("rbm", 1, (8, 8))
    with pytest.raises(UserError, match="'linear'"):
        build_autoencoder("linear", 1, (8, 8), variational=True)
    with pytest.raises(UserError, match="encoder_act='swish2'"):
        build_autoencoder("fc", 1, (8, 8), encoder_act="swish2")
    with pytest.raises(UserError, match=r"\(B, 1, 8, 8\)"):
        build_autoencoder("fc", 1, (8, 8))(torch.rand(2, 3, 8, 8))


def test_linear_autoencoder_learns_the_pca_subspace():
    """Baldi & Hornik 1989: the squared-error minimizers of a linear autoencoder with k units
    span the top-k principal subspace (the decoder's columns; the basis itself is arbitrary)."""
    k = 4
    data = load_digits().data / 16.0
    centred = data - data.mean(0)  # the biases could learn the mean; centring makes 200 steps enough
    x = torch.tensor(centred, dtype=torch.float32).view(-1, 1, 8, 8)
    pca = PCA(k).fit(data).components_.T  # (64, k)
    ae = build_autoencoder("linear", 1, (8, 8), latent_dim=k)
    decoder_columns = lambda: ae.decoder[0].weight.detach().double().numpy()  # (64, k)
    assert np.degrees(subspace_angles(decoder_columns(), pca)).max() > 30  # a random start is far off
    opt = torch.optim.Adam(ae.parameters(), lr=0.03)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread never waits on a worker parked by a busy machine
    try:
        for _ in range(200):
            loss = (ae(x).recon - x).pow(2).flatten(1).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    assert np.degrees(subspace_angles(decoder_columns(), pca)).max() < 5
    # and the error is PCA's: the variance outside the top k components
    eig = np.linalg.eigvalsh(np.cov(centred, rowvar=False, bias=True))[::-1]
    assert loss.item() == pytest.approx(eig[k:].sum(), rel=0.01)
