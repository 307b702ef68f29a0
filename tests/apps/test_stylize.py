"""Neural style and DeepDream: the losses against NumPy, Gram matrices pulled towards the style's,
the network truncated and the targets computed once, DeepDream raising its objective."""

import numpy as np
import pytest
import torch

import fovea
from fovea.apps import stylize as st
from fovea.apps.explain import tap
from fovea.errors import UserError
from fovea.losses.style import FeatureTap, content_loss, gram_matrix, style_layer_loss, total_variation


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return fovea.create_model("vgg19").eval()


def _images(size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    content = torch.stack([xx, yy, (xx + yy) / 2])[None]  # smooth ramps
    stripes = (torch.sin(xx * 25) > 0).float()
    style = torch.stack([stripes, 1 - stripes, torch.rand(size, size, generator=g)])[None]
    return content, style


# ---------------------------------------------------------------------------- losses against NumPy


def test_gram_content_style_and_tv_match_numpy():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(2, 5, 4, 3)).astype(np.float32)
    p = rng.normal(size=f.shape).astype(np.float32)
    ft, pt = torch.from_numpy(f), torch.from_numpy(p)
    flat = f.reshape(2, 5, 12)
    gram = np.einsum("bik,bjk->bij", flat, flat)
    assert np.allclose(gram_matrix(ft).numpy(), gram, rtol=1e-5, atol=1e-5)
    assert np.allclose(gram_matrix(ft, normalize=True).numpy(), gram / 60, rtol=1e-5, atol=1e-6)
    assert np.isclose(float(content_loss(ft, pt)), 0.5 * ((f - p) ** 2).sum(), rtol=1e-5)
    a = np.einsum("bik,bjk->bij", p.reshape(2, 5, 12), p.reshape(2, 5, 12))
    e = ((gram - a) ** 2).sum() / (4 * 5**2 * 12**2)
    assert np.isclose(float(style_layer_loss(gram_matrix(ft), torch.from_numpy(a), 5, 12)), e, rtol=1e-5)
    x = rng.random((1, 3, 6, 7)).astype(np.float32)
    tv = ((x[..., 1:, :] - x[..., :-1, :]) ** 2).sum() + ((x[..., :, 1:] - x[..., :, :-1]) ** 2).sum()
    assert np.isclose(float(total_variation(torch.from_numpy(x))), tv, rtol=1e-5)


def test_style_loss_is_alpha_content_plus_beta_weighted_style(vgg):
    content, style = _images(32)
    cfg = st.StyleConfig(content_layers=("relu3_1",), style_layers=("relu1_1", "relu2_1"),
                         style_layer_weights=(0.3, 0.7), content_weight=2.0, style_weight=50.0, tv_weight=0.5)
    loss_fn = st.StyleLoss(vgg, st.Normalize(), cfg)
    loss_fn.set_targets(content, style)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    loss, parts = loss_fn(x)

    def feats(img):  # a full forward of the whole VGG, hooked by module name
        names = {v: k for k, v in vgg.layer_names.items()}
        with torch.no_grad(), tap(vgg, [names[n] for n in ("relu1_1", "relu2_1", "relu3_1")]) as out:
            vgg(st.Normalize()(img))
        return {n: out[names[n]].double().numpy()[0] for n in ("relu1_1", "relu2_1", "relu3_1")}

    fx, fc, fs = feats(x), feats(content), feats(style)
    lc = 0.5 * ((fx["relu3_1"] - fc["relu3_1"]) ** 2).sum()
    ls = 0.0
    for name, w in (("relu1_1", 0.3), ("relu2_1", 0.7)):
        n, m = fx[name].shape[0], fx[name].shape[1] * fx[name].shape[2]
        g, a = (f.reshape(n, m) @ f.reshape(n, m).T for f in (fx[name], fs[name]))
        ls += w * ((g - a) ** 2).sum() / (4 * n**2 * m**2)
    xn = x.double().numpy()
    tv = (np.diff(xn, axis=2) ** 2).sum() + (np.diff(xn, axis=3) ** 2).sum()
    assert np.isclose(float(parts["content"]), lc, rtol=1e-4)
    assert np.isclose(float(parts["style"]), ls, rtol=1e-4)
    assert np.isclose(float(loss), 2.0 * lc + 50.0 * ls + 0.5 * tv, rtol=1e-4)


def test_channels_last_gives_the_same_loss(vgg):
    content, style = _images(32)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    losses = []
    for cl in (True, False):
        loss_fn = st.StyleLoss(vgg, st.Normalize(), st.StyleConfig(channels_last=cl))
        loss_fn.set_targets(content, style)
        losses.append(float(loss_fn(x)[0]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


# ---------------------------------------------------------------------------- the network and the targets


def test_feature_tap_keeps_only_up_to_the_deepest_layer_and_matches_a_full_forward(vgg):
    layers = ["relu1_1", "relu3_1", "relu2_1"]
    t = FeatureTap(vgg, layers)
    index = {v: int(k.split(".")[1]) for k, v in vgg.layer_names.items() if k.startswith("features.")}
    assert len(t.body) == index["relu3_1"] + 1 < len(vgg.features)
    assert all(not p.requires_grad for p in t.body.parameters())
    x = torch.randn(1, 3, 32, 32)
    got = t(x)
    with torch.no_grad(), tap(vgg, [f"features.{index[n]}" for n in layers]) as full:
        vgg.features(x)
    for n in layers:
        assert torch.equal(got[n], full[f"features.{index[n]}"])
    assert len(st.StyleLoss(vgg, st.Normalize(), st.StyleConfig()).tap.body) == index["relu5_1"] + 1


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_targets_are_computed_once_per_scale(vgg, optimizer):
    content, style = _images(32)
    calls = []
    cfg = st.StyleConfig(steps=3, sizes=(16, 32), optimizer=optimizer, content_layers=("relu2_1",),
                         style_layers=("relu1_1", "relu2_1"))
    # the truncated body is built inside stylize: count passes through its first layer instead
    handle = vgg.features[0].register_forward_pre_hook(lambda m, a: calls.append(tuple(a[0].shape[-2:])))
    try:
        result = st.stylize(content, style, vgg, cfg=cfg)
    finally:
        handle.remove()
    assert result.iterations == [3, 3]
    assert 2 * 3 <= result.evaluations <= 2 * 5  # L-BFGS-B also evaluates its start, and its line search may add some
    assert len(calls) == 2 * 2 + result.evaluations + 1  # content and style once per scale, the steps, the final loss
    assert result.sizes == [(16, 16), (32, 32)] and result.image.shape == (3, 32, 32)


# ---------------------------------------------------------------------------- optimization


def test_style_only_from_noise_pulls_the_grams_towards_the_style(vgg):
    """Texture synthesis with random weights: only the style term, starting from white noise."""
    content, style = _images(32)
    layers = ("relu1_1", "relu2_1", "relu3_1")
    cfg = st.StyleConfig(content_weight=0.0, style_weight=1.0, style_layers=layers, content_layers=("relu1_1",),
                         init="noise", steps=100, sizes=(32,))
    result = st.stylize(content, style, vgg, cfg=cfg)
    t = FeatureTap(vgg, layers)

    def rel_error(img):
        with torch.no_grad():
            fx, fs = t(st.Normalize()(img)), t(st.Normalize()(style))
        return np.array([((gram_matrix(fx[n]) - gram_matrix(fs[n])).norm() / gram_matrix(fs[n]).norm()).item()
                         for n in layers])

    noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(cfg.seed))
    before, after = rel_error(noise), rel_error(result.image[None])  # the result as saved: pixels in [0, 1]
    assert (after < before / 5).all() and after.mean() < before.mean() / 8, (before, after)
    assert result.final_loss < result.losses[0] / 100


def test_preserve_color_keeps_the_photo_chrominance(vgg):
    content, style = _images(32)
    cfg = st.StyleConfig(steps=3, sizes=(32,), preserve_color="luminance", content_layers=("relu2_1",),
                         style_layers=("relu1_1", "relu2_1"))
    out = st.stylize(content, style, vgg, cfg=cfg).image[None]
    yiq_out, yiq_in = st._to_yiq(out), st._to_yiq(content)
    inside = (out > 0.01).all(1) & (out < 0.99).all(1)  # where no channel was clipped
    assert torch.allclose(yiq_out[:, 1:][:, :, inside[0]], yiq_in[:, 1:][:, :, inside[0]], atol=1e-4)


def test_match_color_gives_the_style_the_content_mean_and_covariance():
    g = torch.Generator().manual_seed(0)
    content = (0.5 + 0.1 * torch.randn(1, 3, 40, 40, generator=g)).clamp(0, 1)
    content[:, 0] += 0.1
    style = (0.4 + 0.05 * torch.randn(1, 3, 30, 30, generator=g) @ torch.eye(30)).clamp(0, 1)
    out = st.match_color(style, content)
    c, o = content.flatten(2)[0].double(), out.flatten(2)[0].double()
    assert torch.allclose(o.mean(1), c.mean(1), atol=5e-3)
    assert torch.allclose(torch.cov(o), torch.cov(c), atol=5e-4)


def test_bad_settings_and_layers_end_in_user_errors(vgg):
    content, style = _images(32)
    with pytest.raises(UserError, match="relu9_1"):
        st.StyleLoss(vgg, st.Normalize(), st.StyleConfig(style_layers=("relu9_1",)))
    with pytest.raises(UserError, match="one weight per layer"):
        st.stylize(content, style, vgg, cfg=st.StyleConfig(style_layer_weights=(1.0,)))
    with pytest.raises(UserError, match="too small"):
        st.stylize(content, style, vgg, cfg=st.StyleConfig(sizes=(8,), steps=1))
    with pytest.raises(UserError, match="optimizer"):
        st.stylize(content, style, vgg, cfg=st.StyleConfig(optimizer="sgd"))
    with pytest.raises(UserError, match="neural style needs a VGG"):
        st.load_vgg("random", model="resnet18")


# ---------------------------------------------------------------------------- DeepDream


def test_deep_dream_raises_the_layer_objective():
    net, normalize, _ = st.load_classifier_net("googlenet", "random", seed=0)
    g = torch.Generator().manual_seed(0)
    image = (0.5 + 0.1 * torch.randn(1, 3, 64, 64, generator=g)).clamp(0, 1)
    assert st.calibrate_batchnorm(net, normalize(image)) > 0
    result = st.deep_dream(st.OnPixels(net, normalize), image, st.DreamConfig(layer="inception3b", octaves=2, steps=4))
    assert result.final_objective > 1.5 * result.start_objective > 0
    assert result.image.shape == (3, 64, 64) and 0 <= result.image.min() and result.image.max() <= 1
    assert not (result.image - image[0]).abs().max() < 1e-3  # the image changed


def test_deep_dream_takes_vgg_paper_names_and_refuses_unknown_layers(vgg):
    model = st.OnPixels(vgg, st.Normalize())
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cfg = st.DreamConfig(layer="relu2_1", octaves=1, steps=3, jitter=4, objective="mean")
    result = st.deep_dream(model, image, cfg)
    assert result.final_objective > result.start_objective
    with pytest.raises(UserError, match="did you mean"):
        st.deep_dream(model, image, st.DreamConfig(layer="relu2_9"))
    with pytest.raises(UserError, match="mean_square or mean"):
        st.deep_dream(model, image, st.DreamConfig(objective="max"))
