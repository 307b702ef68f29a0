import pickle
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from fovea.data import decode
from fovea.data.decode import BadImageError, load_image, probe_image
from fovea.errors import UserError


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def png_with_declared_size(path, width: int, height: int):
    """A valid small PNG whose IHDR is rewritten to declare width x height (a decompression bomb header)."""
    _save(Image.new("L", (4, 4), 7), path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def test_rgb_and_gray_keep_their_channels(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    x = load_image(_save(Image.fromarray(rgb), tmp_path / "rgb.png"))
    assert x.dtype == torch.uint8 and x.shape == (3, 6, 5)
    assert torch.equal(x, torch.from_numpy(rgb).permute(2, 0, 1))
    g = load_image(_save(Image.new("L", (5, 6), 9), tmp_path / "g.png"))
    assert g.shape == (1, 6, 5) and int(g.max()) == 9


def test_channel_conversion(tmp_path):
    path = _save(Image.new("RGB", (4, 3), (255, 0, 0)), tmp_path / "red.png")
    y = load_image(path, channels=1)
    assert y.shape == (1, 3, 4) and int(y[0, 0, 0]) == 76  # ITU-R 601-2 luma of pure red
    g = load_image(_save(Image.new("L", (4, 3), 50), tmp_path / "g.png"), channels=3)
    assert g.shape == (3, 3, 4) and torch.all(g == 50)
    with pytest.raises(UserError, match="channels"):
        load_image(path, channels=2)


def test_rgba_is_composited_on_black(tmp_path):
    img = Image.new("RGBA", (3, 2), (200, 100, 50, 128))
    x = load_image(_save(img, tmp_path / "rgba.png"))
    assert x.shape == (3, 2, 3)
    assert x[:, 0, 0].tolist() == [100, 50, 25]  # value * 128 / 255, rounded
    la = load_image(_save(Image.new("LA", (3, 2), (200, 0)), tmp_path / "la.png"))
    assert la.shape == (1, 2, 3) and int(la.max()) == 0  # fully transparent -> black


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 2), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((1, 0), 1)
    path = _save(img, tmp_path / "pal.png", transparency=0)
    x = load_image(path)
    assert x.shape == (3, 2, 4)
    assert x[:, 0, 0].tolist() == [0, 0, 0]  # the transparent red is composited away
    assert x[:, 0, 1].tolist() == [0, 255, 0]
    gif = load_image(_save(img, tmp_path / "pal.gif", transparency=0))
    assert torch.equal(gif, x)


def test_grayscale_palette_counts_as_gray(tmp_path):
    img = Image.new("P", (2, 2), 1)
    img.putpalette([v for i in range(256) for v in (i, i, i)])
    path = _save(img, tmp_path / "graypal.png")
    assert probe_image(path) == ((2, 2), False)
    assert load_image(path, channels=1).shape == (1, 2, 2)


def test_16bit_scaled_by_bit_depth(tmp_path):
    a = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    x = load_image(_save(Image.fromarray(a), tmp_path / "16.png"))
    assert Image.open(tmp_path / "16.png").mode == "I;16"
    assert x.shape == (1, 1, 3) and x.flatten().tolist() == [0, 100, 255]
    big = load_image(_save(Image.fromarray(a.astype(">u2")), tmp_path / "16b.tif"))
    assert big.flatten().tolist() == [0, 100, 255]


def test_wide_int_and_float_scaled_by_own_range(tmp_path):
    i32 = np.array([[-100000, 0, 100000]], dtype=np.int32)
    x = load_image(_save(Image.fromarray(i32), tmp_path / "i.tif"))
    assert x.flatten().tolist() == [0, 128, 255]
    f = np.array([[-1.0, 0.0, 1.0]], dtype=np.float32)
    assert load_image(_save(Image.fromarray(f), tmp_path / "f.tif")).flatten().tolist() == [0, 128, 255]


def test_tiny_image_is_resized_up(tmp_path):
    x = load_image(_save(Image.new("RGB", (1, 1), (10, 20, 30)), tmp_path / "one.png"), size=(5, 7))
    assert x.shape == (3, 5, 7)
    assert x[:, 2, 3].tolist() == [10, 20, 30]


def test_downsizing_is_antialiased(tmp_path):
    stripes = np.zeros((64, 64), np.uint8)
    stripes[:, ::2] = 255
    x = load_image(_save(Image.fromarray(stripes), tmp_path / "s.png"), size=(8, 8))
    assert x.shape == (1, 8, 8)
    assert 100 < float(x.float().mean()) < 155 and int(x.max()) - int(x.min()) < 40  # averaged, not aliased


def test_jpeg_and_cmyk_and_exif_orientation(tmp_path):
    x = load_image(_save(Image.new("CMYK", (6, 4), (0, 255, 255, 0)), tmp_path / "cmyk.jpg"))
    assert x.shape == (3, 4, 6) and x[0].float().mean() > 200 and x[1].float().mean() < 60
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = _save(Image.new("RGB", (40, 20), (0, 0, 200)), tmp_path / "rot.jpg", exif=exif)
    assert probe_image(path)[0] == (40, 20)
    assert load_image(path).shape == (3, 40, 20)
    assert load_image(path, size=(8, 4)).shape == (3, 8, 4)  # draft decoding keeps the target size


def test_non_image_corrupt_and_truncated_files(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture\n")
    with pytest.raises(BadImageError, match="notes.png.*not an image"):
        load_image(text)
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(BadImageError, match="noise.jpg"):
        load_image(noise)
    full = tmp_path / "full.png"
    _save(Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)), full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    probe_image(cut)  # the header is intact ...
    with pytest.raises(BadImageError, match="cut.png.*truncated") as info:
        load_image(cut)  # ... the pixels are not
    assert isinstance(info.value, UserError) and info.value.path == str(cut)
    with pytest.raises(BadImageError, match="cannot read file"):
        load_image(tmp_path / "missing.png")


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    filters = list(warnings.filters)
    # 10000 x 10000 is above the limit but below twice it: PIL would only warn
    with pytest.raises(BadImageError, match="warn.png.*decompression-bomb"):
        load_image(png_with_declared_size(tmp_path / "warn.png", 10_000, 10_000))
    # 20000 x 20000 is above twice the limit: PIL raises on its own
    with pytest.raises(BadImageError, match="decompression-bomb"):
        probe_image(png_with_declared_size(tmp_path / "err.png", 20_000, 20_000))
    assert warnings.filters == filters  # no filter leaks out of the decoder
    small = _save(Image.new("L", (20, 16)), tmp_path / "small.png")
    monkeypatch.setattr(decode, "MAX_PIXELS", 100)
    with pytest.raises(BadImageError, match="320 pixels is above the decompression-bomb limit of 100"):
        load_image(small)


def test_bad_image_error_pickles():
    err = pickle.loads(pickle.dumps(BadImageError("/x/y.png", "truncated file")))
    assert err.path == "/x/y.png" and err.reason == "truncated file" and "y.png" in str(err)
