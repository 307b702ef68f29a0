import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from fovea.data.transforms import BatchAugment, Preprocess, parse_augment, to_float, torchvision_pipeline
from fovea.errors import UserError


def _images(n=8, c=3, h=20, w=24, seed=0):
    """Smooth random images in (0, 1), so interpolation tests compare structure, not noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    return TF.gaussian_blur(x, [5, 5], [1.5, 1.5])


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _uint8_rgb(n=64, h=8, w=8, seed=0):
    """Correlated RGB pixels, as natural images have."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, h, w, generator=g)
    x = 0.6 * base + 0.4 * torch.rand(n, 3, h, w, generator=g) * torch.tensor([1.0, 0.6, 0.3]).view(1, 3, 1, 1)
    return (x * 255).round().to(torch.uint8)


# ---------------------------------------------------------------- parse_augment


def test_parse_augment_example_and_empty():
    assert parse_augment("crop:4,hflip,rotate:15,noise:0.05") == [
        ("crop", {"padding": 4}),
        ("hflip", {}),
        ("rotate", {"degrees": 15.0}),
        ("noise", {"std": 0.05}),
    ]
    assert parse_augment("elastic:30:3, fancy-pca, crop:2:reflect") == [
        ("elastic", {"alpha": 30.0, "sigma": 3.0}),
        ("fancy-pca", {}),
        ("crop", {"padding": 2, "mode": "reflect"}),
    ]
    assert parse_augment(None) == parse_augment("") == parse_augment("none") == []


@pytest.mark.parametrize(
    "text, bad",
    [
        ("crop:4,blur:3", "blur"),
        ("rotate:abc", "rotate:abc"),
        ("crop:2.5", "crop:2.5"),
        ("crop:4:mirror", "crop:4:mirror"),
        ("noise", "noise"),
        ("hflip:0.5:1", "hflip:0.5:1"),
        ("rrc:0", "rrc:0"),
        ("noise:-1", "noise:-1"),
        ("hflip,,vflip", "hflip,,vflip"),
    ],
)
def test_parse_augment_errors_name_the_token(text, bad):
    with pytest.raises(UserError) as err:
        parse_augment(text)
    assert bad in str(err.value)
    assert "fancy-pca" in str(err.value)  # lists the valid ops


def test_batch_augment_validates_op_lists():
    aug = BatchAugment([("crop", {}), ("hflip", {"p": 1})])
    assert aug.ops == [("crop", {"padding": 4, "mode": "zero"}), ("hflip", {"p": 1.0})]
    with pytest.raises(UserError, match="padd"):
        BatchAugment([("crop", {"padd": 2})])
    with pytest.raises(UserError, match="rotate"):
        BatchAugment([("rotate", {})])


# ---------------------------------------------------------------- every op


ALL_OPS = [
    "crop:3", "crop:2:reflect", "rrc:0.3", "hflip", "vflip", "rotate:30", "shear:20", "translate:0.2",
    "elastic", "elastic:8:2", "noise:0.1", "jitter:0.5", "fancy-pca:0.5", "none",
    "rrc,rotate:10,shear:5,translate:0.1,hflip,crop:2,jitter:0.3,noise:0.02",
]


@pytest.mark.parametrize("ops", ALL_OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ops_keep_shape_dtype_device_and_range(ops, dtype):
    aug = BatchAugment(ops).fit(_uint8_rgb())
    x = _images().to(dtype)
    y = aug(x, generator=_gen())
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert y.min() >= 0 and y.max() <= 1
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("ops", ["crop:3", "rotate:30", "elastic", "jitter:0.5", "noise:0.1", "hflip"])
def test_grayscale_input(ops):
    x = _images(c=1)
    assert BatchAugment(ops)(x, generator=_gen()).shape == x.shape


def test_flips_are_exact():
    x = _images()
    assert torch.equal(BatchAugment("hflip:1")(x), x.flip(-1))
    assert torch.equal(BatchAugment("vflip:1")(x), x.flip(-2))
    assert torch.equal(BatchAugment("hflip:0")(x), x)
    x = _images(n=64)
    y = BatchAugment("hflip")(x, generator=_gen())
    same = (y == x).flatten(1).all(1)
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    assert (same | flipped).all() and same.any() and flipped.any()


@pytest.mark.parametrize("mode", ["zero", "reflect"])
def test_crop_yields_shifted_windows_of_the_padded_input(mode):
    p, x = 3, _images(n=16)
    y = BatchAugment(f"crop:{p}:{mode}")(x, generator=_gen())
    padded = torch.nn.functional.pad(x, (p,) * 4, mode="constant" if mode == "zero" else "reflect")
    h, w = x.shape[-2:]
    offsets = set()
    for i in range(len(x)):
        hits = [
            (dy, dx)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            if torch.equal(y[i], padded[i, :, dy : dy + h, dx : dx + w])
        ]
        assert hits, f"sample {i} is not a window of the padded input"
        offsets.update(hits)
    assert len(offsets) > 1


def _draws(n, lo, hi, seed):
    """The angles BatchAugment draws for a one-op pipeline from a generator with this seed."""
    return (torch.rand(n, generator=_gen(seed)) * (hi - lo) + lo).tolist()


def test_rotate_agrees_with_torchvision():
    x, deg = _images(), 30.0
    y = BatchAugment(f"rotate:{deg}")(x, generator=_gen(7))
    for i, angle in enumerate(_draws(len(x), -deg, deg, 7)):
        ref = TF.rotate(x[i], angle, interpolation=InterpolationMode.BILINEAR)
        torch.testing.assert_close(y[i, :, 3:-3, 3:-3], ref[:, 3:-3, 3:-3], atol=1e-4, rtol=0)


def test_shear_agrees_with_torchvision():
    x, deg = _images(n=4), 20.0
    y = BatchAugment(f"shear:{deg}")(x, generator=_gen(3))
    for i, angle in enumerate(_draws(len(x), -deg, deg, 3)):
        ref = TF.affine(x[i], angle=0.0, translate=[0, 0], scale=1.0, shear=[angle, 0.0],
                        interpolation=InterpolationMode.BILINEAR)
        torch.testing.assert_close(y[i], ref, atol=1e-4, rtol=0)


def test_translate_shifts_by_whole_pixels():
    x, frac = _images(n=16), 0.25
    y = BatchAugment(f"translate:{frac}")(x, generator=_gen(1))
    g = _gen(1)
    tx = (torch.rand(len(x), generator=g) * 2 - 1) * frac * x.shape[-1]
    ty = (torch.rand(len(x), generator=g) * 2 - 1) * frac * x.shape[-2]
    for i, (dx, dy) in enumerate(zip(tx.round().tolist(), ty.round().tolist())):
        ref = TF.affine(x[i], angle=0.0, translate=[dx, dy], scale=1.0, shear=[0.0])
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0)
    assert len(set(tx.round().tolist())) > 1


def test_rrc_stays_inside_the_image():
    # a crop that left the image would pull in the zero fill
    x = torch.full((64, 3, 20, 24), 0.7)
    for ops in ("rrc:0.05", "rrc:1", "rrc:0.5,hflip,rrc:0.5"):
        torch.testing.assert_close(BatchAugment(ops)(x, generator=_gen()), x, atol=1e-5, rtol=0)
    y = BatchAugment("rrc:0.1")(_images(), generator=_gen())
    assert not torch.allclose(y, _images(), atol=1e-2)


def test_elastic_zero_alpha_is_identity_and_warps_otherwise():
    x = _images()
    torch.testing.assert_close(BatchAugment("elastic:0:4")(x, generator=_gen()), x, atol=1e-5, rtol=0)
    y = BatchAugment("elastic:20:3")(x, generator=_gen())
    assert (y - x).abs().mean() > 1e-3


def test_jitter_zero_strength_is_identity():
    x = _images()
    torch.testing.assert_close(BatchAugment("jitter:0")(x, generator=_gen()), x, atol=1e-6, rtol=0)


def test_noise_has_requested_std():
    x = torch.full((64, 3, 16, 16), 0.5)
    y = BatchAugment("noise:0.05")(x, generator=_gen())
    assert abs((y - x).std().item() - 0.05) < 0.002
    assert abs((y - x).mean().item()) < 0.002


def test_same_seed_same_output_different_seed_different():
    aug = BatchAugment("rrc:0.5,rotate:15,hflip,crop:2,elastic,jitter:0.4,noise:0.05")
    x = _images()
    assert torch.equal(aug(x, generator=_gen(1)), aug(x, generator=_gen(1)))
    assert not torch.equal(aug(x, generator=_gen(1)), aug(x, generator=_gen(2)))
    torch.manual_seed(5)
    a = aug(x)
    torch.manual_seed(5)
    assert torch.equal(a, aug(x))


def test_eval_mode_is_identity():
    aug = BatchAugment("crop:4,hflip,noise:0.1").eval()
    x = _images()
    assert aug(x) is x


def test_adjacent_geometric_ops_fuse_into_one_resampling():
    # two rotations resampled once equal one rotation by the summed angle; resampling
    # twice would blur by far more than the tolerance
    x, deg = _images(n=4), 25.0
    y = BatchAugment(f"rotate:{deg},rotate:{deg}")(x, generator=_gen(4))
    g = _gen(4)
    first = torch.rand(len(x), generator=g) * 2 * deg - deg
    second = torch.rand(len(x), generator=g) * 2 * deg - deg
    for i, angle in enumerate((first + second).tolist()):
        ref = TF.rotate(x[i], angle, interpolation=InterpolationMode.BILINEAR)
        torch.testing.assert_close(y[i, :, 5:-5, 5:-5], ref[:, 5:-5, 5:-5], atol=1e-4, rtol=0)


# ---------------------------------------------------------------- Fancy PCA


def test_fancy_pca_fit_matches_numpy():
    imgs = _uint8_rgb(n=32)
    aug = BatchAugment("fancy-pca:0.1").fit(imgs)
    vecs = aug.eigvecs.double()
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0)
    pixels = (imgs.double() / 255).permute(1, 0, 2, 3).reshape(3, -1).numpy()
    ref_vals, ref_vecs = np.linalg.eigh(np.cov(pixels))
    np.testing.assert_allclose(aug.eigvals.numpy(), ref_vals[::-1], rtol=1e-4, atol=1e-7)
    # same eigenvectors up to sign
    np.testing.assert_allclose(np.abs(ref_vecs[:, ::-1].T @ vecs.numpy()), np.eye(3), atol=1e-4)
    assert BatchAugment("hflip").fit(imgs).eigvals.numel() == 0  # not needed: no-op


def test_fancy_pca_adds_a_constant_shift_along_the_components():
    aug = BatchAugment("fancy-pca:0.5").fit(_uint8_rgb())
    x = torch.full((256, 3, 4, 4), 0.5)
    shift = aug(x, generator=_gen()) - x
    per_image = shift[:, :, :1, :1]
    torch.testing.assert_close(shift, per_image.expand_as(shift))  # constant RGB shift per image
    # coordinates in the eigenbasis divided by sqrt(lambda) are the alphas ~ N(0, 0.5)
    alpha = (per_image.flatten(1) @ aug.eigvecs) / aug.eigvals.sqrt()
    assert 0.4 < alpha.std().item() < 0.6
    # the shift varies most along the first principal component
    coords = per_image.flatten(1) @ aug.eigvecs
    assert coords[:, 0].std() > coords[:, 2].std()


def test_fancy_pca_needs_fit_and_state_dict_restores_it():
    with pytest.raises(RuntimeError, match="fit"):
        BatchAugment("fancy-pca")(_images())
    fitted = BatchAugment("fancy-pca").fit(_uint8_rgb())
    fresh = BatchAugment("fancy-pca")
    fresh.load_state_dict(fitted.state_dict())
    x = _images()
    assert torch.equal(fresh(x, generator=_gen()), fitted(x, generator=_gen()))


# ---------------------------------------------------------------- Preprocess


def _correlated(n=3000, c=3, h=4, w=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = c * h * w
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    scales = torch.linspace(0.1, 1.0, d, dtype=torch.float64)
    z = torch.randn(n, d, generator=g, dtype=torch.float64) * scales
    return (0.5 + 0.1 * z @ q.T).float().view(n, c, h, w)


def test_zscore_per_channel_mean_0_std_1():
    x = _images(n=64)
    y = Preprocess("zscore").fit(x)(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.transpose(0, 1).reshape(3, -1).std(1), torch.ones(3), atol=1e-4, rtol=0)


def test_zscore_accepts_uint8():
    imgs = _uint8_rgb()
    a = Preprocess("zscore").fit(imgs)
    torch.testing.assert_close(a(imgs), a(to_float(imgs)))


def test_mean_image_subtracts_the_mean_image():
    x = _images(n=16)
    pre = Preprocess("mean-image").fit(x)
    torch.testing.assert_close(pre.mean, x.mean(0, keepdim=True))
    torch.testing.assert_close(pre(x), x - x.mean(0, keepdim=True))


@pytest.mark.parametrize("kind", ["pca-whiten", "zca-whiten"])
def test_whitening_gives_identity_covariance(kind):
    x = _correlated()
    pre = Preprocess(kind, eps=1e-7).fit(x)
    y = pre(x)
    assert y.shape == x.shape
    cov = torch.cov(y.flatten(1).double().T)
    torch.testing.assert_close(cov, torch.eye(48, dtype=torch.float64), atol=2e-3, rtol=0)
    torch.testing.assert_close(y.mean(0), torch.zeros(3, 4, 4), atol=1e-3, rtol=0)


def test_zca_is_symmetric_and_pca_orders_components():
    x = _correlated()
    zca = Preprocess("zca-whiten", eps=1e-7).fit(x)
    assert torch.equal(zca.whitening, zca.whitening.T)
    pca = Preprocess("pca-whiten", eps=1e-7).fit(x)
    assert (pca.eigvals[:-1] >= pca.eigvals[1:]).all()
    torch.testing.assert_close(pca.eigvals, zca.eigvals)


def test_whitening_eps_damps_small_components():
    x = _correlated()
    y = Preprocess("pca-whiten", eps=1.0).fit(x)(x)
    assert y.flatten(1).var(0).max() < 0.1  # variances l / (l + 1) with l << 1


@pytest.mark.parametrize("kind", Preprocess.KINDS)
def test_preprocess_state_dict_round_trip(kind):
    x = _correlated(n=500)
    fitted = Preprocess(kind).fit(x)
    fresh = Preprocess(kind)
    fresh.load_state_dict(fitted.state_dict())
    assert torch.equal(fresh(x), fitted(x))


def test_preprocess_errors():
    with pytest.raises(UserError, match="'whiten'"):
        Preprocess("whiten")
    pre = Preprocess("mean-image").fit(_images(c=3))
    with pytest.raises(UserError, match="3x20x24"):
        pre(_images(c=1))
    with pytest.raises(RuntimeError, match="fit"):
        Preprocess("zscore")(_images())
    with pytest.raises(UserError, match="zscore"):
        Preprocess("pca-whiten").fit(torch.zeros(2, 3, 64, 64))
    with pytest.raises(Exception):  # a zscore state dict does not load into a zca module
        Preprocess("zca-whiten").load_state_dict(Preprocess("zscore").fit(_images()).state_dict())


def test_preprocess_max_samples():
    x = torch.cat([torch.zeros(10, 1, 2, 2), torch.ones(10, 1, 2, 2)])
    pre = Preprocess("mean-image").fit(x, max_samples=2)  # evenly spaced: first and last
    torch.testing.assert_close(pre.mean, torch.full((1, 1, 2, 2), 0.5))


# ---------------------------------------------------------------- to_float and the baseline


def test_to_float_matches_torchvision():
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    y = to_float(x)
    assert y.dtype == torch.float32
    assert torch.equal(y, v2.ToDtype(torch.float32, scale=True)(x))
    assert to_float(y) is y


def test_torchvision_pipeline_runs_on_pil_and_tensors():
    pipe = torchvision_pipeline("crop:4,hflip,rotate:10,shear:5,translate:0.1,rrc,elastic,jitter:0.3,noise:0.05", 28)
    pil = Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8), mode="L")
    for inp in (pil, torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)):
        out = pipe(inp)
        assert out.shape == (1, 28, 28) and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1
    names = [type(t).__name__ for t in pipe.transforms]
    assert names[0] == "ToImage" and names.index("ToDtype") == names.index("GaussianNoise") - 1


def test_torchvision_pipeline_matches_batched_flip_and_fancy_pca():
    imgs = torch.randint(0, 256, (4, 3, 6, 6), dtype=torch.uint8)
    batched = BatchAugment("hflip:1")(to_float(imgs))
    pipe = torchvision_pipeline("hflip:1", 6)
    assert torch.equal(torch.stack([pipe(im) for im in imgs]), batched)
    with pytest.raises(UserError, match="fancy-pca"):
        torchvision_pipeline("fancy-pca", 6)
    aug = BatchAugment("fancy-pca").fit(_uint8_rgb())
    out = torchvision_pipeline(aug, 6)(imgs[0])
    shift = out - to_float(imgs[0])
    assert out.shape == (3, 6, 6) and shift.abs().max() > 0
