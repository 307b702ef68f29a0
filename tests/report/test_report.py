import base64
import io
import json
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fovea.errors import UserError
from fovea.report import (
    ReportError,
    plot_confusion,
    plot_curves,
    plot_image_grid,
    read_metrics,
    save_image,
    write_report,
)

HEADER = "epoch,step,split,loss,acc,top5,lr,images_per_s,time_s\n"


def _write_metrics(path, epochs=3, steps_per_epoch=4):
    lines = [HEADER]
    step = 0
    for e in range(epochs):
        for i in range(steps_per_epoch):
            step += 1
            lr = 0.1 * 0.5**e
            epoch = e + (i + 1) / steps_per_epoch
            lines.append(f"{epoch},{step},train,{2.0 / step:.4f},{0.5 + 0.04 * step},,{lr},1500.5,{step * 0.1:.1f}\n")
        lines.append(f"{e + 1},{step},val,{1.5 / (e + 1):.4f},{0.6 + 0.1 * e:.2f},{0.9 + 0.02 * e:.2f},,,\n")
    lines.append(f"{epochs},{step},test,0.55,0.81,0.97,,,\n")
    path.write_text("".join(lines))
    return path


def _assert_png(path, min_bytes=2000):
    assert path.is_file()
    assert path.stat().st_size > min_bytes
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()


def test_read_metrics_parses_and_groups(tmp_path):
    m = read_metrics(_write_metrics(tmp_path / "metrics.csv", epochs=2, steps_per_epoch=2))
    assert list(m) == ["train", "val", "test"]
    assert [len(m[s]) for s in m] == [4, 2, 1]
    first = m["train"][0]
    assert first["epoch"] == 0.5 and isinstance(first["epoch"], float)
    assert first["step"] == 1 and isinstance(first["step"], int)
    assert first["top5"] is None  # empty cell
    assert first["images_per_s"] == pytest.approx(1500.5)
    val = m["val"][0]
    assert val["epoch"] == 1 and isinstance(val["epoch"], int)
    assert val["lr"] is None and val["time_s"] is None
    assert m["test"][0]["acc"] == pytest.approx(0.81)


def test_read_metrics_rows_without_split_and_missing_file(tmp_path):
    p = tmp_path / "metrics.csv"
    p.write_text("epoch,loss\n0,1.0\n1,0.5\n")
    assert [r["loss"] for r in read_metrics(p)["train"]] == [1.0, 0.5]
    with pytest.raises(ReportError, match="nope.csv"):
        read_metrics(tmp_path / "nope.csv")
    assert issubclass(ReportError, UserError)


def test_plot_curves_writes_one_png_per_metric(tmp_path):
    out = tmp_path / "plots"
    paths = plot_curves(_write_metrics(tmp_path / "metrics.csv"), out)
    names = [p.name for p in paths]
    assert names[0] == "loss.png"
    assert {"loss.png", "acc.png", "top5.png", "lr.png"} == set(names)  # bookkeeping columns are not curves
    for p in paths:
        assert p.parent == out
        _assert_png(p)


def test_plot_curves_falls_back_to_step(tmp_path):
    p = tmp_path / "metrics.csv"
    p.write_text("step,split,loss_g,loss_d\n" + "".join(f"{s},train,{1 / s},{s / 10}\n" for s in range(1, 20)))
    paths = plot_curves(p, tmp_path)
    assert sorted(x.name for x in paths) == ["loss_d.png", "loss_g.png"]
    for x in paths:
        _assert_png(x)


def test_plot_confusion(tmp_path):
    cm = torch.tensor([[5, 1, 0], [2, 7, 1], [0, 0, 0]])  # an empty row must not divide by zero
    path = plot_confusion(cm, ["cat", "dog", "$bird"], tmp_path / "cm.png")
    _assert_png(path)
    path = plot_confusion(np.random.default_rng(0).integers(0, 9, (30, 30)), [str(i) for i in range(30)],
                          tmp_path / "big.png", normalize=False)
    _assert_png(path)


@pytest.mark.parametrize("cm, classes", [(np.zeros((2, 3)), ["a", "b"]), (np.zeros(4), ["a"] * 4),
                                          (np.zeros((2, 2)), ["a", "b", "c"])])
def test_plot_confusion_rejects_bad_shapes(tmp_path, cm, classes):
    with pytest.raises(ValueError):
        plot_confusion(cm, classes, tmp_path / "cm.png")
    assert not (tmp_path / "cm.png").exists()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_plot_image_grid(tmp_path, channels, dtype):
    n = 11  # not a multiple of ncols
    x = torch.rand(n, channels, 12, 10)
    x = (x * 255).to(torch.uint8) if dtype == torch.uint8 else x * 1.2 - 0.1  # floats outside [0, 1] get clipped
    titles = [f"{i} -> {(i + 1) % 10} (p=0.93)" for i in range(n)]
    path = plot_image_grid(x, titles, tmp_path / "grid.png", ncols=4, title="misclassified <b>")
    _assert_png(path)


def test_plot_image_grid_edge_cases(tmp_path):
    _assert_png(plot_image_grid(torch.rand(3, 1, 8, 8), [], tmp_path / "a.png"), min_bytes=500)
    _assert_png(plot_image_grid(torch.zeros(0, 3, 8, 8), [], tmp_path / "empty.png", title="none"), min_bytes=500)
    with pytest.raises(ValueError, match="titles"):
        plot_image_grid(torch.rand(3, 1, 8, 8), ["a"], tmp_path / "b.png")
    with pytest.raises(ValueError, match="C = 1 or 3"):
        plot_image_grid(torch.rand(3, 2, 8, 8), [], tmp_path / "c.png")


def test_save_image_roundtrip(tmp_path):
    x = torch.arange(3 * 3 * 5, dtype=torch.uint8).reshape(3, 3, 5) * 5
    with Image.open(save_image(x, tmp_path / "rgb.png")) as im:
        assert im.size == (5, 3) and im.mode == "RGB"
        assert np.array_equal(np.asarray(im), x.permute(1, 2, 0).numpy())
    with Image.open(save_image(torch.ones(1, 4, 6) * 0.5, tmp_path / "g.png")) as im:
        assert im.size == (6, 4) and im.mode == "L"
        assert np.asarray(im).flat[0] == 128


def _run_dir(tmp_path):
    run = tmp_path / "runs" / "digits-lenet"
    (run / "plots").mkdir(parents=True)
    config = {"model": "lenet5", "lr": 0.0123, "data": {"name": "digits", "note": "<script>alert(1)</script>"}}
    (run / "config.json").write_text(json.dumps(config))
    plot_curves(_write_metrics(run / "metrics.csv"), run / "plots")
    plot_confusion(np.eye(3, dtype=int) * 4, ["a", "b", "<script>evil</script>"], run / "plots" / "confusion.png")
    return run


def _embedded_pngs(page):
    return re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]+)">', page)


def test_write_report(tmp_path):
    run = _run_dir(tmp_path)
    path = write_report(run, sections=[("Misclassified <i>", "<p>custom html</p>")])
    assert path == run / "report.html"
    page = path.read_text()
    assert "<h1>digits-lenet</h1>" in page
    # configuration values, escaped
    assert "lenet5" in page and "0.0123" in page
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # final metrics: last value per split
    table = page[page.index("<table>"):page.index("</table>")]
    rows = {m[0]: m[1] for m in re.findall(r"<tr><td>(\w+)</td>(.*?)</tr>", table)}
    assert set(rows) == {"train", "val", "test"}
    assert "<td>0.81</td>" in rows["test"] and "<td>0.97</td>" in rows["test"]
    assert "<td>0.025</td>" in rows["train"]  # lr of the last epoch
    assert "<td>0.5</td>" in rows["val"]  # 1.5 / 3
    # every plot embedded, sorted, with its name as caption, and decodable
    pngs = _embedded_pngs(page)
    names = [n for _, n in pngs]
    assert names == sorted(p.name for p in (run / "plots").glob("*.png"))
    assert "confusion.png" in names and "loss.png" in names
    for data, name in pngs:
        assert f"<figcaption>{name}</figcaption>" in page
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "PNG"
    # extra sections: heading escaped, body as given
    assert "<h2>Misclassified &lt;i&gt;</h2>" in page and "<p>custom html</p>" in page
    # self-contained: no external links or scripts
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert not (run / "report.html.tmp").exists()


def test_write_report_escapes_title_and_tolerates_missing_files(tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    page = write_report(run, title='<script>"x"</script>').read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "No metrics.csv" in page and "No config.json" in page and "No plots" in page
    with pytest.raises(ReportError, match="missing"):
        write_report(tmp_path / "missing")


def test_plotting_leaves_pyplot_alone(tmp_path):
    # Drawing must not import pyplot, which picks a GUI backend for the user and can open windows.
    if "matplotlib.pyplot" in sys.modules:
        pytest.skip("pyplot was imported by another test")
    plot_image_grid(torch.rand(2, 3, 4, 4), ["a", "b"], tmp_path / "g.png")
    plot_confusion(np.eye(2), ["a", "b"], tmp_path / "c.png")
    plot_curves(_write_metrics(tmp_path / "metrics.csv"), tmp_path)
    assert "matplotlib.pyplot" not in sys.modules
