import gzip
import pickle
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fovea.data import DATASETS, BadImageError, data_root, load_data
from fovea.data import decode, sources
from fovea.data.sources import stratified_split
from fovea.errors import UserError

H, W = 16, 20  # the size most images in the messy folder have


def _rgb(seed: int, size=(W, H)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def messy_folder(tmp_path) -> tuple[Path, set[str]]:
    """Class folders with good images in many modes and sizes, three bad files and an empty class."""
    root = tmp_path / "pets"
    cat, dog = root / "cat", root / "dog"
    for d in (cat, dog, root / "empty"):
        d.mkdir(parents=True)
    (root / "empty" / "README.txt").write_text("no images here")  # non-image files are ignored
    _rgb(0).save(cat / "a.png")
    _rgb(1).save(cat / "b.JPG")
    _rgb(2).save(cat / "c.png")
    Image.new("RGB", (1, 1), (9, 9, 9)).save(cat / "d_tiny.png")
    Image.fromarray(np.full((H, W), 257 * 40, np.uint16)).save(cat / "e_16bit.png")
    Image.new("RGBA", (W, H), (200, 100, 50, 255)).save(cat / "f_rgba.png")
    pal = Image.new("P", (W, H), 1)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.save(cat / "g_palette.png", transparency=0)
    Image.new("L", (30, 10), 128).save(cat / "h_gray.png")
    for i in range(5):
        _rgb(10 + i).save(dog / f"dog{i}.png")
    bad = {
        cat / "corrupt.jpg": np.random.default_rng(5).integers(0, 256, 2000, dtype=np.uint8).tobytes(),
        dog / "notes.png": b"just some text\n",
    }
    full = tmp_path / "full.png"
    _rgb(99, (64, 64)).save(full)
    bad[dog / "truncated.png"] = full.read_bytes()[: full.stat().st_size // 2]
    for path, data in bad.items():
        path.write_bytes(data)
    return root, {str(p) for p in bad}


def _all_paths(bundle):
    return [p for s in (bundle.train, bundle.val, bundle.test) if s is not None for p in s.paths]


def test_folder_skips_exactly_the_bad_files(messy_folder):
    root, bad = messy_folder
    b = load_data(str(root))
    assert b.classes == ["cat", "dog"] and b.name == "pets"
    assert b.in_channels == 3 and b.image_size == (H, W)
    file_skips = {p for p, _ in b.skipped if p.endswith((".png", ".jpg"))}
    assert file_skips == bad
    assert (str(root / "empty"), "empty class folder") in b.skipped
    reasons = dict(b.skipped)
    assert "truncated" in reasons[str(root / "dog" / "truncated.png")]
    assert "not an image" in reasons[str(root / "dog" / "notes.png")]
    paths = _all_paths(b)
    assert len(paths) == len(set(paths)) == 13 and not set(paths) & bad
    assert (len(b.train), len(b.test)) == (10, 3)  # stratified 20%: 2 cats + 1 dog
    assert Counter(b.test.labels.tolist()) == {0: 2, 1: 1}
    for split in (b.train, b.test):
        assert split.images.dtype == torch.uint8 and split.images.shape == (len(split), 3, H, W)
        assert split.labels.dtype == torch.int64 and split.dataset is None
    by_name = {Path(p).name: img for s in (b.train, b.test) for p, img in zip(s.paths, s.images)}
    assert torch.all(by_name["d_tiny.png"] == 9)  # 1x1 scaled up
    assert torch.all(by_name["e_16bit.png"] == 40)  # 16-bit, gray repeated into 3 channels
    assert by_name["f_rgba.png"][:, 0, 0].tolist() == [200, 100, 50]
    assert by_name["g_palette.png"][:, 0, 0].tolist() == [0, 255, 0]
    assert torch.all(by_name["h_gray.png"] == 128)  # 30x10 resized to 20x16


def test_folder_fail_mode_names_the_file(messy_folder):
    root, bad = messy_folder
    with pytest.raises(BadImageError) as info:
        load_data(str(root), on_bad_image="fail")
    assert info.value.path in bad and info.value.path in str(info.value)
    (root / "cat" / "corrupt.jpg").unlink()
    (root / "dog" / "notes.png").unlink()
    with pytest.raises(BadImageError, match="truncated.png"):  # found only when decoding the pixels
        load_data(str(root), on_bad_image="fail")


def test_folder_options_and_streaming(messy_folder):
    root, bad = messy_folder
    b = load_data(str(root), image_size=8, channels=1, seed=3)
    assert b.in_channels == 1 and b.image_size == (8, 8) and b.train.images.shape[1:] == (1, 8, 8)
    s = load_data(str(root), max_memory_bytes=1000)  # does not fit: streamed
    assert s.train.images is None and len(s.train.dataset) == len(s.train)
    x, y = s.train.dataset[0]
    assert x.dtype == torch.uint8 and x.shape == (3, H, W) and isinstance(y, int)
    assert torch.equal(x, load_data(str(root)).train.images[0])  # same decoder in both modes
    loaded = pickle.loads(pickle.dumps(s.train.dataset))  # DataLoader workers receive it pickled
    assert torch.equal(loaded[1][0], s.train.dataset[1][0])
    # the truncated file passes the header check, so the streamed splits still list it
    assert str(root / "dog" / "truncated.png") in _all_paths(s)
    with pytest.raises(UserError, match="on_bad_image"):
        load_data(str(root), on_bad_image="ignore")


def test_streaming_substitutes_undecodable_files(messy_folder):
    root, _ = messy_folder
    paths = [str(root / "dog" / "truncated.png"), str(root / "dog" / "dog0.png")]
    ds = decode.ImageFileDataset(paths, [1, 0], 3, (H, W))
    with pytest.warns(UserWarning, match="truncated.png"):
        x, y = ds[0]
    assert y == 0 and x.shape == (3, H, W)
    strict = decode.ImageFileDataset(ds.paths, ds.labels, 3, (H, W), on_bad_image="fail")
    with pytest.raises(BadImageError, match="truncated.png"):
        strict[0]


def test_decompression_bomb_in_a_folder_is_skipped(tmp_path, monkeypatch):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("L", (4, 4), 10 * i).save(tmp_path / cls / f"{i}.png")
    Image.new("L", (40, 40)).save(tmp_path / "a" / "big.png")
    monkeypatch.setattr(decode, "MAX_PIXELS", 1000)
    b = load_data(str(tmp_path))
    assert [p for p, _ in b.skipped] == [str(tmp_path / "a" / "big.png")]
    assert "decompression-bomb" in b.skipped[0][1] and b.image_size == (4, 4)


def test_split_folders_and_val_fraction(tmp_path):
    for split, n in (("train", 10), ("val", 2), ("test", 3)):
        for cls in ("x", "y"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("L", (6, 6), i).save(d / f"{i}.bmp")
    b = load_data(str(tmp_path), val_fraction=0.5)
    assert (len(b.train), len(b.val), len(b.test)) == (20, 4, 6)  # the folder's own val/ wins
    assert all("/val/" in p for p in b.val.paths) and b.in_channels == 1


def test_val_fraction_is_stratified_and_disjoint(tmp_path):
    for cls, n in (("big", 16), ("small", 4)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("L", (5, 5), i).save(tmp_path / cls / f"{i}.png")
    b = load_data(str(tmp_path), val_fraction=0.25, seed=1)
    assert (len(b.train), len(b.val), len(b.test)) == (12, 4, 4)
    assert Counter(b.test.labels.tolist()) == {0: 3, 1: 1}
    assert Counter(b.val.labels.tolist()) == {0: 3, 1: 1}
    sets = [set(s.paths) for s in (b.train, b.val, b.test)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert len(set.union(*sets)) == 20
    again = load_data(str(tmp_path), val_fraction=0.25, seed=1)
    assert again.val.paths == b.val.paths and torch.equal(again.val.images, b.val.images)


def test_stratified_split_keeps_every_class():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 1)
    keep, take = stratified_split(labels, 0.2, seed=0)
    assert len(take) == 17 and Counter(labels[take].tolist()) == {0: 11, 1: 6}
    assert set(labels[keep]) == {0, 1, 2} and len(np.intersect1d(keep, take)) == 0


def test_csv_source(tmp_path):
    (tmp_path / "img").mkdir()
    rows = ["path,label"]
    for i in range(10):
        Image.new("RGB", (7, 9), (i, 0, 0)).save(tmp_path / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{'odd' if i % 2 else 'even'}")
    rows.append("img/missing.png,odd")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    b = load_data(str(tmp_path / "list.csv"))
    assert b.name == "list" and b.classes == ["even", "odd"] and b.image_size == (9, 7) and b.in_channels == 3
    assert (len(b.train), len(b.test)) == (8, 2) and Counter(b.test.labels.tolist()) == {0: 1, 1: 1}
    assert b.skipped == [(str(tmp_path / "img" / "missing.png"), "file not found")]
    for split in (b.train, b.test):
        for path, label in zip(split.paths, split.labels.tolist()):
            assert int(Path(path).stem) % 2 == label
    (tmp_path / "bad.csv").write_text("file,class\nimg/0.png,even\n")
    with pytest.raises(UserError, match="path,label"):
        load_data(str(tmp_path / "bad.csv"))


def test_numeric_class_names_and_classes_left_without_images(tmp_path):
    for name in ("2", "10", "3"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("L", (4, 4), i).save(tmp_path / name / f"{i}.png")
    for path in (tmp_path / "3").iterdir():
        path.write_bytes(b"broken")
    b = load_data(str(tmp_path))
    assert b.classes == ["2", "10"]  # numeric order; "3" had no decodable image
    assert (str(tmp_path / "3"), "class with no usable images") in b.skipped
    assert set(torch.cat([b.train.labels, b.test.labels]).tolist()) == {0, 1}


def test_no_images_and_bad_paths(tmp_path):
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(UserError, match="no images found"):
        load_data(str(tmp_path))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not a .csv"):
        load_data(str(tmp_path / "notes.txt"))
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.new("L", (3, 3)).save(loose / "a.png")
    with pytest.raises(UserError, match="no class subfolders"):
        load_data(str(loose))


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UserError) as info:
        load_data("digts")
    message = str(info.value)
    assert "'digts'" in message and "did you mean 'digits'" in message and "\n" not in message
    assert all(name in message for name in DATASETS)


def test_digits():
    a = load_data("digits")
    assert (len(a.train), len(a.test), a.val) == (1437, 360, None)
    assert a.train.images.dtype == torch.uint8 and a.train.images.shape[1:] == (1, 8, 8)
    assert a.in_channels == 1 and a.image_size == (8, 8) and a.classes == [str(i) for i in range(10)]
    assert int(a.train.images.max()) == 255 and a.train.paths is None
    total = Counter(a.train.labels.tolist()) + Counter(a.test.labels.tolist())
    for cls, n in Counter(a.test.labels.tolist()).items():
        assert abs(n - 0.2 * total[cls]) <= 1  # stratified
    b = load_data("digits")
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    v = load_data("digits", val_fraction=0.1, image_size=(16, 12), channels=3)
    assert (len(v.train), len(v.val)) == (1293, 144) and v.train.images.shape[1:] == (3, 16, 12)
    assert torch.equal(v.test.labels, a.test.labels)  # carving val leaves the test set alone
    for cls, n in Counter(v.val.labels.tolist()).items():
        assert abs(n - 0.1 * Counter(a.train.labels.tolist())[cls]) <= 1


def test_data_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FOVEA_DATA", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv("FOVEA_DATA")
    assert data_root() == Path("~/.cache/fovea/data").expanduser()


def _write_idx(path: Path, array: np.ndarray):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_read_from_the_data_root(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", np.arange(n * 28 * 28).reshape(n, 28, 28) % 256)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    monkeypatch.setenv("FOVEA_DATA", str(tmp_path))
    b = load_data("MNIST")
    assert (len(b.train), len(b.test)) == (12, 5) and b.train.images.shape[1:] == (1, 28, 28)
    assert b.test.labels.tolist() == [0, 1, 2, 3, 4] and b.name == "mnist"


def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr("socket.create_connection", refuse)


def test_offline_absent_cifar10_says_which_file_to_put_where(tmp_path, monkeypatch):
    _no_network(monkeypatch)
    with pytest.raises(UserError) as info:
        load_data("cifar10", root=tmp_path)
    message = str(info.value)
    assert "cifar-10-python.tar.gz" in message and str(tmp_path) in message and "\n" not in message


def test_offline_absent_fashion_mnist_mentions_make_data(tmp_path, monkeypatch):
    _no_network(monkeypatch)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    with pytest.raises(UserError) as info:
        load_data("fashion-mnist", root=tmp_path)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "FashionMNIST" / "raw") in message
    assert "make data" in message and "\n" not in message


@pytest.mark.skipif(
    not (sources.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed (make data)",
)
def test_fashion_mnist_from_debian(tmp_path):
    b = load_data("fashion-mnist", root=tmp_path)  # empty root: Debian's copy is used in place
    assert (len(b.train), len(b.test)) == (60000, 10000)
    assert b.train.images.shape == (60000, 1, 28, 28) and b.train.images.dtype == torch.uint8
    assert torch.equal(torch.bincount(b.train.labels), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(b.test.labels), torch.full((10,), 1000))
    assert b.classes[0] == "T-shirt/top" and b.classes[9] == "Ankle boot"
