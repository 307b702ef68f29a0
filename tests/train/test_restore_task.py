"""The superres and denoise tasks: tiny runs through `fovea train`, their data (tiles, crops,
held-out splits), tiled inference, and their metrics against fovea.apps.image_quality."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fovea.apps.image_quality import gaussian_filter_baseline, median_filter_baseline, psnr, ssim
from fovea.cli.main import main
from fovea.data.color import bicubic_degrade, modcrop
from fovea.data.patches import (SKIMAGE_TEST, SKIMAGE_TRAIN, SKIMAGE_VAL, PaddedImages, convert_channels,
                                load_restore_images, random_crops, random_dihedral, tile_grid)
from fovea.models.srcnn import dncnn, srcnn, srcnn_valid, super_resolve_rgb
from fovea.tasks import get_task
from fovea.tasks.restore import NOISE_SEED, denoise_image, pick_filter_params, srcnn_y, tiled_apply, upscale_image
from fovea.train.config import TASK_DEFAULTS, TrainConfig

TINY_SRCNN = '{"widths": [8, 4]}'
TINY_DNCNN = '{"depth": 3, "width": 8}'


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """train/ (two 132x132 colour crops and a grey one), val/ and test/ (one image each, odd sizes)."""
    import skimage.data

    root = tmp_path_factory.mktemp("photos")
    astro, coffee, camera = skimage.data.astronaut(), skimage.data.coffee(), skimage.data.camera()
    for sub, name, arr in (("train", "a.png", astro[100:232, 200:332]), ("train", "b.png", coffee[50:182, 300:432]),
                           ("train", "c.png", camera[200:332, 200:332]), ("val", "v.png", astro[300:350, 100:161]),
                           ("test", "t.png", coffee[200:247, 100:170])):
        (root / sub).mkdir(exist_ok=True)
        Image.fromarray(np.ascontiguousarray(arr)).save(root / sub / name)
    return root


def _cfg(task: str, folder, **kw) -> TrainConfig:
    return TrainConfig.from_dict({**TASK_DEFAULTS[task], "task": task, "data": str(folder), **kw})


def test_tiny_superres_run_through_the_cli(photo_folder, tmp_path):
    out = tmp_path / "sr"
    assert main(["train", "superres", "--data", str(photo_folder), "--scale", "3", "--epochs", "2", "--batch-size", "4",
                 "--model-kwargs", TINY_SRCNN, "--out", str(out)]) == 0
    info = json.loads((out / "model.json").read_text())
    assert info["task"] == "superres" and info["scale"] == 3 and info["model"] == "srcnn"
    assert info["model_kwargs"] == {"init_std": 0.05, "widths": [8, 4]}
    assert info["patch"] == 33 and info["channels"] == "y"
    rows = json.loads((out / "restore.json").read_text())["test_images"]
    assert [r["image"] for r in rows] == ["t.png"]
    assert {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim"} <= set(rows[0])
    assert (out / "plots" / "comparison.png").is_file() and (out / "model.safetensors").is_file()


def test_tiny_denoise_run_through_the_cli(photo_folder, tmp_path):
    out = tmp_path / "dn"
    assert main(["train", "denoise", "--data", str(photo_folder), "--sigma", "25", "--epochs", "1", "--batch-size", "4",
                 "--model-kwargs", TINY_DNCNN, "--out", str(out)]) == 0
    info = json.loads((out / "model.json").read_text())
    assert info["task"] == "denoise" and info["sigma"] == 25 and info["in_channels"] == 1
    assert info["patch"] == 40 and info["channels"] == "grey" and info["filters_picked_on"] == "validation images"
    rows = json.loads((out / "restore.json").read_text())["test_images"]
    assert {"psnr", "noisy_psnr", "gaussian_psnr", "median_psnr", "gaussian_ssim", "median_ssim"} <= set(rows[0])
    # the noisy image's PSNR is that of sigma 25 noise, clipped to [0, 1]: about 20.2 dB or a little above
    assert 20 < rows[0]["noisy_psnr"] < 21.5


def test_bad_training_settings_exit_2(photo_folder, tmp_path, capsys):
    base = ["--data", str(photo_folder), "--epochs", "1", "--out", str(tmp_path / "r")]
    assert main(["train", "superres", "--patch", "32", "--scale", "3", *base]) == 2
    assert main(["train", "superres", "--model", "dncnn", *base]) == 2
    assert main(["train", "denoise", "--sigma", "-5", *base]) == 2
    assert main(["train", "denoise", "--patch", "70", *base]) == 2  # tiles of 140 px: none fit in 132 px images
    assert main(["train", "superres", "--data", str(tmp_path / "nowhere"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("fovea train: error:") for line in err)
    assert "multiple of --scale 3" in err[0] and "srcnn" in err[1]


# ---------------------------------------------------------------------------- data


def test_skimage_lists_are_disjoint_and_load():
    assert not set(SKIMAGE_TRAIN) & set(SKIMAGE_VAL) and not set(SKIMAGE_TRAIN) & set(SKIMAGE_TEST)
    assert not set(SKIMAGE_VAL) & set(SKIMAGE_TEST)
    images = load_restore_images("skimage", "grey")
    assert [n for n, _ in images.test] == list(SKIMAGE_TEST)
    assert all(im.dtype == torch.uint8 and im.shape[0] == 1 for _, im in images.train + images.val + images.test)


def test_flat_folder_is_split_by_seed(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    a = load_restore_images(str(tmp_path), "grey", val_fraction=0.1, seed=3)
    b = load_restore_images(str(tmp_path), "grey", val_fraction=0.1, seed=3)
    names = lambda s: [n for n, _ in s]  # noqa: E731
    assert (len(a.train), len(a.val), len(a.test)) == (7, 1, 2)
    assert names(a.train) == names(b.train) and names(a.test) == names(b.test)
    assert len(set(names(a.train)) | set(names(a.val)) | set(names(a.test))) == 10


def test_channel_modes_match_their_formulas():
    from fovea.data.color import rgb_to_y

    rgb = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    y = convert_channels(rgb, "y")
    assert torch.equal(y, (rgb_to_y(rgb.double() / 255) * 255).round().to(torch.uint8))
    grey = convert_channels(rgb, "grey")
    pil = np.asarray(Image.fromarray(rgb.permute(1, 2, 0).numpy()).convert("L"))
    assert np.abs(grey[0].numpy().astype(int) - pil).max() <= 1  # PIL rounds its fixed-point luma
    assert torch.equal(convert_channels(rgb[:1], "rgb"), rgb[:1].expand(3, -1, -1))


def test_tiles_crops_and_symmetries_come_from_the_images():
    img = torch.arange(2 * 10 * 12, dtype=torch.float32).reshape(2, 10, 12)
    tiles = tile_grid([img], 6, 3)
    assert tiles.shape == (2 * 3, 2, 6, 6) and torch.equal(tiles[4], img[:, 3:9, 3:9])
    g = torch.Generator().manual_seed(0)
    crops = random_crops(tiles, 4, g)
    windows = tiles.unfold(2, 4, 1).unfold(3, 4, 1)  # (N, C, 3, 3, 4, 4): every 4x4 window
    for tile_windows, crop in zip(windows, crops):
        assert any(torch.equal(tile_windows[:, i, j], crop) for i in range(3) for j in range(3))
    square = torch.rand(16, 1, 5, 5)
    out = random_dihedral(square, g)
    for a, b in zip(square, out):
        group = [a.rot90(k, (-2, -1)) for k in range(4)] + [a.flip(-1).rot90(k, (-2, -1)) for k in range(4)]
        assert any(torch.equal(b, t) for t in group)


def test_padded_images_keep_sizes_and_indices():
    ims = [torch.ones(1, 4, 6, dtype=torch.uint8), 2 * torch.ones(1, 7, 3, dtype=torch.uint8)]
    ds = PaddedImages(ims, first_index=5)
    x, label = ds[1]
    assert x.shape == (1, 7, 6) and label.tolist() == [7, 3, 6]
    assert torch.equal(x[:, :7, :3], ims[1]) and x[:, :, 3:].sum() == 0


# ---------------------------------------------------------------------------- inference


@pytest.mark.parametrize("build", [lambda: srcnn(widths=(8, 4)), lambda: srcnn_valid(widths=(8, 4)),
                                   lambda: dncnn(depth=4, width=8)])
def test_tiled_inference_equals_whole_image(build):
    model = build().eval()
    x = torch.rand(1, 1, 45, 38)
    fn = (lambda t: srcnn_y(model, t)) if hasattr(model.cfg, "kernels") else model
    margin = sum(k - 1 for k in model.cfg.kernels) // 2 if hasattr(model.cfg, "kernels") else model.cfg.depth
    with torch.no_grad():
        torch.testing.assert_close(tiled_apply(fn, x, margin, tile=16), fn(x), atol=1e-6, rtol=0)


def test_tiled_upscale_equals_super_resolve_rgb():
    model = srcnn_valid(widths=(8, 4)).eval()
    lr = torch.rand(3, 29, 41)
    torch.testing.assert_close(upscale_image(model, lr, 3, tile=16), super_resolve_rgb(model, lr, 3), atol=1e-5, rtol=0)
    grey = upscale_image(model, lr[:1], 2, tile=8)
    assert grey.shape == (1, 58, 82)


def test_grey_denoiser_works_on_each_colour_channel():
    model = dncnn(depth=3, width=8).eval()
    x = torch.rand(3, 20, 24)
    with torch.no_grad():
        expected = model(x[:, None]).clamp(0, 1)[:, 0]
    torch.testing.assert_close(denoise_image(model, x, tile=8), expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------- steps and metrics


def _setup(task_name, folder, **kw):
    task = get_task(task_name)
    cfg = _cfg(task_name, folder, **kw)
    data = task.load_data(cfg)
    model = task.build_model(cfg, data, data.image_size).eval()
    return task, data, model


def _held_out_batch(data):
    ds = data.test.dataset
    x, y = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(x).float() / 255, torch.stack(y)


def test_superres_metrics_agree_with_image_quality(photo_folder):
    task, data, model = _setup("superres", photo_folder, scale=3, model="srcnn-valid", model_kwargs={"widths": [8, 4]})
    x, y = _held_out_batch(data)
    with torch.no_grad():
        stats = task.eval_step(model, x, y)
        h, w, _ = y[0].tolist()
        hr = modcrop(x[0, :, :h, :w], 3)[None]
        up = bicubic_degrade(hr, 3)
        out = model(up)
        sr = up.clone()
        sr[..., 6:-6, 6:-6] = out
    assert stats["count"] == 1
    torch.testing.assert_close(stats["psnr"].double(), psnr(sr.clamp(0, 1), hr, border=3).double(), atol=1e-4, rtol=0)
    torch.testing.assert_close(stats["ssim"].double(), ssim(sr.clamp(0, 1), hr, border=3).double(), atol=1e-5, rtol=0)
    torch.testing.assert_close(stats["bicubic_psnr"].double(), psnr(up.clamp(0, 1), hr, border=3).double(),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(stats["loss"].double(), F.mse_loss(sr, hr).double(), atol=1e-7, rtol=1e-4)
    again = task.eval_step(model, x, y)  # the second pass reads the bicubic figures from the cache
    torch.testing.assert_close(again["bicubic_ssim"], stats["bicubic_ssim"])


def test_denoise_metrics_agree_with_image_quality(photo_folder):
    task, data, model = _setup("denoise", photo_folder, sigma=25.0, model_kwargs={"depth": 3, "width": 8})
    x, y = _held_out_batch(data)
    h, w, index = y[0].tolist()
    clean = x[:1, :, :h, :w]
    noisy = clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(NOISE_SEED + index)) * 25 / 255
    with torch.no_grad():
        stats = task.eval_step(model, x, y)
        den = model(noisy).clamp(0, 1)
    gs, ms = task.filters["gaussian_sigma"], task.filters["median_size"]
    expected = dict(psnr=psnr(den, clean), ssim=ssim(den, clean), noisy_psnr=psnr(noisy.clamp(0, 1), clean),
                    gaussian_psnr=psnr(gaussian_filter_baseline(noisy, gs).clamp(0, 1), clean),
                    gaussian_ssim=ssim(gaussian_filter_baseline(noisy, gs).clamp(0, 1), clean),
                    median_psnr=psnr(median_filter_baseline(noisy, ms).clamp(0, 1), clean),
                    median_ssim=ssim(median_filter_baseline(noisy, ms).clamp(0, 1), clean))
    for k, v in expected.items():
        torch.testing.assert_close(stats[k].double(), v.double(), atol=1e-4, rtol=0, msg=k)


def test_filters_are_picked_on_the_validation_images(photo_folder):
    task, data, _ = _setup("denoise", photo_folder, sigma=25.0, model_kwargs={"depth": 3, "width": 8})
    val = [im.float() / 255 for _, im in task.images.val]
    picks = pick_filter_params(val, 25.0, list(range(len(val))))
    assert task.filters["gaussian_sigma"] == picks["gaussian_sigma"]
    best = max(picks["gaussian_psnr_by_sigma"].values())
    assert picks["gaussian_psnr_by_sigma"][picks["gaussian_sigma"]] == best
    assert picks["median_psnr_by_size"][picks["median_size"]] == max(picks["median_psnr_by_size"].values())


def test_training_batches_pair_corruptions_with_their_targets(photo_folder):
    task, data, model = _setup("superres", photo_folder, scale=3, model="srcnn-valid", model_kwargs={"widths": [8, 4]})
    tiles = data.train.images[:6].float() / 255
    x, y = task.augment_batch(lambda t, generator=None: t, tiles, None, torch.Generator().manual_seed(0))
    assert y.shape == (6, 1, 33, 33)
    torch.testing.assert_close(x, bicubic_degrade(y, 3))
    loss, stats = task.training_step(model, x, y)
    torch.testing.assert_close(loss, F.mse_loss(model(x), y[..., 6:27, 6:27]))  # the valid net's centre

    task, data, _ = _setup("denoise", photo_folder, sigma=25.0, model_kwargs={"depth": 3, "width": 8})
    tiles = data.train.images.float() / 255
    x, y = task.augment_batch(lambda t, generator=None: t, tiles, None, torch.Generator().manual_seed(0))
    assert y.shape == (len(tiles), 1, 40, 40)
    assert abs(float((x - y).std()) - 25 / 255) < 0.002
