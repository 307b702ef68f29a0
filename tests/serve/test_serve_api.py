"""`fovea serve`'s JSON API through FastAPI's TestClient, on tiny runs of every served task.

Answers are checked against the task's own code on the same image (the classifier's softmax,
Grad-CAM, the segmenter's argmax, the generator with the same seed ...), and the bounds and the
safety rules against hostile requests."""

import asyncio
import base64
import io
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from fovea.cli.main import main
from fovea.serve import Limits, create_app
from fovea.serve.app import InferenceQueue
from fovea.serve.images import heat_overlay

TASKS = ("classify", "metric", "autoencoder", "gan", "segment", "superres", "denoise", "stylenet", "flow", "depth")


@pytest.fixture(scope="module")
def client(serve_runs):
    runs_dir, _, _ = serve_runs
    with TestClient(create_app(runs_dir=runs_dir)) as c:
        yield c


def png_bytes(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def picture(data_url: str) -> np.ndarray:
    head, _, body = data_url.partition(",")
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body))))


def post(client, run, *images, **params):
    files = {name: (f"{name}.png", data, "image/png") for name, data in zip(("image", "image2"), images)}
    return client.post(f"/api/runs/{run}/predict", files=files or None, params=params)


def photo(side=64, offset=0):
    import skimage.data

    return skimage.data.astronaut()[offset:offset + side, offset:offset + side]


# ------------------------------------------------------------------------------- browsing


def test_openapi_schema_lists_the_api(client):
    schema = client.get("/openapi.json").json()
    for path in ("/api/runs", "/api/runs/{name}", "/api/runs/{name}/metrics", "/api/runs/{name}/plots/{file}",
                 "/api/runs/{name}/predict", "/api/info"):
        assert path in schema["paths"], path
    assert "multipart/form-data" in schema["paths"]["/api/runs/{name}/predict"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 404  # Swagger UI loads from a CDN: not served


def test_runs_list_run_page_metrics_and_plots(client, serve_runs):
    _, made, _ = serve_runs
    runs = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    assert set(runs) == set(TASKS)
    assert all(runs[t]["task"] == t and runs[t]["predict"] for t in TASKS)
    assert runs["gan"]["uploads"] == 0 and runs["flow"]["uploads"] == 2 and runs["classify"]["index"]
    page = client.get("/api/runs/classify").json()
    import json

    assert page["config"] == json.loads((made["classify"] / "config.json").read_text())
    assert "loss.png" in page["plots"] and "loss" in page["metric_columns"]
    metrics = client.get("/api/runs/classify/metrics").json()
    lines = (made["classify"] / "metrics.csv").read_text().strip().splitlines()
    assert len(metrics["rows"]) == len(lines) - 1 and metrics["columns"] == lines[0].split(",")
    assert all(isinstance(r["loss"], float) for r in metrics["rows"])
    r = client.get("/api/runs/classify/plots/loss.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (made["classify"] / "plots" / "loss.png").read_bytes()
    assert client.get("/api/runs/classify/report").status_code == 200
    home = client.get("/")
    assert home.status_code == 200 and "/static/app.js" in home.text and "http" not in home.text.split("<body>")[1]
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/style.css").status_code == 200


# ------------------------------------------------------------------------------- predictions


def test_classifier_top_k_grad_cam_and_neighbours_match_the_model(client, serve_runs):
    from fovea.apps.explain import grad_cam
    from fovea.data.decode import load_image
    from fovea.tasks.classify import load_classifier

    _, made, data = serve_runs
    query = sorted((data / "digits").glob("*.png"))[3]
    r = post(client, "classify", query.read_bytes(), k=3)
    assert r.status_code == 200, r.text
    body = r.json()
    model, info = load_classifier(made["classify"])
    image = load_image(query, channels=1, size=tuple(info["image_size"]))  # 8x8 already: no resizing anywhere
    with torch.no_grad():
        probs = model(image[None].float() / 255).softmax(1)[0]
    top = probs.topk(3)
    assert [t["cls"] for t in body["top"]] == [info["classes"][i] for i in top.indices.tolist()]
    assert np.allclose([t["prob"] for t in body["top"]], top.values.numpy(), atol=1e-5)
    cam = body["gradcam"]
    heat = grad_cam(model, image[None].float() / 255, int(top.indices[0]), cam["layer"])
    assert np.array_equal(picture(cam["overlay"]), heat_overlay(image, heat))
    assert picture(cam["overlay"]).shape == (256, 256, 3)
    nb = body["neighbours"]
    assert nb[0]["path"] == query.name and nb[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert [n["score"] for n in nb] == sorted((n["score"] for n in nb), reverse=True)
    assert picture(nb[0]["image"]).shape[:2] == (64, 64)


def test_metric_run_gives_its_embedding_and_neighbours(client, serve_runs):
    from fovea.tasks.metric import load_metric_model

    _, made, data = serve_runs
    query = sorted((data / "digits").glob("*.png"))[5]
    body = post(client, "metric", query.read_bytes()).json()
    model, _ = load_metric_model(made["metric"])
    x = torch.from_numpy(np.array(Image.open(query)))[None, None].float() / 255
    with torch.no_grad():
        want = model.embed(x)[0]
    assert np.allclose(body["embedding"], want.numpy(), atol=1e-5)
    assert body["neighbours"][0]["path"] == query.name


def test_segmentation_overlay_is_the_models_argmax(client, serve_runs):
    from fovea.data.masks import overlay_mask
    from fovea.tasks.segment import inference_tile, load_segmenter, predict_scores

    _, made, _ = serve_runs
    img = photo(48)
    body = post(client, "segment", png_bytes(img)).json()
    model, info = load_segmenter(made["segment"])
    x = torch.from_numpy(img).permute(2, 0, 1).contiguous()
    with torch.no_grad():
        mask = predict_scores(model, x[None].float() / 255, tile=inference_tile(model, info))[0].argmax(0)
    assert np.array_equal(picture(body["overlay"]), overlay_mask(x, mask.to(torch.uint8)))
    assert sum(c["share"] for c in body["classes"]) == pytest.approx(1.0, abs=1e-4)


def test_autoencoder_reconstruction_and_gan_samples(client, serve_runs):
    from fovea.tasks.autoencode import load_autoencoder
    from fovea.tasks.gan import load_gan

    _, made, data = serve_runs
    query = sorted((data / "digits").glob("*.png"))[0]
    body = post(client, "autoencoder", query.read_bytes()).json()
    model, _ = load_autoencoder(made["autoencoder"])
    x = torch.from_numpy(np.array(Image.open(query)))[None, None].float() / 255
    with torch.no_grad():
        recon = model(x).recon.clamp(0, 1)
    assert body["mse"] == pytest.approx(float((recon - x).pow(2).mean()), abs=1e-6)
    assert picture(body["reconstruction"]).shape[0] >= 128

    r = post(client, "gan", n=4, seed=3)  # no upload
    assert r.status_code == 200, r.text
    gan, _ = load_gan(made["gan"])
    with torch.no_grad():
        want = gan.sample(4, generator=torch.Generator().manual_seed(3)).clamp(0, 1)
    grid = picture(r.json()["samples"])
    s = 64 // want.shape[-1]
    tile = grid[2:2 + want.shape[-2] * s:s, 2:2 + want.shape[-1] * s:s, 0]  # the first sample, magnified s times
    assert np.abs(tile.astype(int) - (want[0, 0].numpy() * 255).round().astype(int)).max() <= 1
    assert post(client, "gan", n=4, seed=3).json()["samples"] == r.json()["samples"]


@pytest.mark.parametrize("task", ["superres", "denoise", "stylenet"])
def test_image_to_image_runs(client, serve_runs, task):
    img = photo(40)
    r = post(client, task, png_bytes(img))
    assert r.status_code == 200, r.text
    out = picture(r.json()["output"])
    scale = 2 if task == "superres" else 1
    assert out.shape[:2] == (40 * scale, 40 * scale)
    assert np.array_equal(picture(r.json()["input"]), img)


@pytest.mark.parametrize("task", ["flow", "depth"])
def test_pair_runs_take_two_images(client, task):
    a, b = photo(64), photo(64, offset=2)
    r = post(client, task, png_bytes(a), png_bytes(b))
    assert r.status_code == 200, r.text
    assert picture(r.json()["output"]).shape == (64, 64, 3)
    one = post(client, task, png_bytes(a))
    assert one.status_code == 400 and "two images" in one.json()["detail"]
    odd = post(client, task, png_bytes(a), png_bytes(photo(32)))
    assert odd.status_code == 400 and "differ in size" in odd.json()["detail"]


# ------------------------------------------------------------------------------- bounds and safety


def test_oversized_uploads_are_413(serve_runs):
    runs_dir, made, _ = serve_runs
    with TestClient(create_app([made["classify"]], limits=Limits(max_upload_bytes=10_000, max_pixels=4096))) as c:
        big = png_bytes((np.random.default_rng(0).random((200, 200)) * 255).astype(np.uint8))  # ~40 kB of noise
        r = post(c, "classify", big)
        assert r.status_code == 413 and "limit of 10000 bytes" in r.json()["detail"]

        def chunks():  # no Content-Length: counted while it streams in
            for i in range(0, len(big), 4096):
                yield big[i:i + 4096]

        r = c.post("/api/runs/classify/predict", content=chunks(),
                   headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 413
        wide = png_bytes(np.zeros((10, 500), np.uint8))  # tiny file, 5000 pixels: above the pixel limit
        r = post(c, "classify", wide)
        assert r.status_code == 413 and "pixels" in r.json()["detail"]
        assert post(c, "classify", png_bytes(np.zeros((8, 8), np.uint8))).status_code == 200


def test_non_images_are_refused(client):
    r = client.post("/api/runs/classify/predict", files={"image": ("a.png", b"#!/bin/sh\necho hi\n", "image/png")})
    assert r.status_code == 415 and "not an image" in r.json()["detail"]
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>'
    r = client.post("/api/runs/classify/predict", files={"image": ("a.svg", svg, "image/svg+xml")})
    assert r.status_code == 415
    truncated = png_bytes(photo(64))[:400]
    r = client.post("/api/runs/classify/predict", files={"image": ("t.png", truncated, "image/png")})
    assert r.status_code == 400 and "cannot be decoded" in r.json()["detail"]
    assert client.post("/api/runs/classify/predict").status_code == 400  # no upload at all
    r = client.post("/api/runs/classify/predict", params={"k": "many"}, files={"image": ("a.png", b"x", "image/png")})
    assert r.status_code == 400 and "k" in r.json()["detail"]


def test_path_traversal_is_404_and_reads_nothing_outside(serve_runs, tmp_path):
    runs_dir, made, _ = serve_runs
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(np.zeros((4, 4), np.uint8)))
    link = made["classify"] / "plots" / "leak.png"
    link.symlink_to(secret)
    outside = (runs_dir / "..").resolve()
    opened: list[str] = []
    watching = threading.Event()

    def audit(event, args):
        if watching.is_set() and event == "open" and isinstance(args[0], (str, Path)):
            opened.append(str(args[0]))

    sys.addaudithook(audit)  # hooks cannot be removed; this one only records while `watching` is set
    try:
        with TestClient(create_app(runs_dir=runs_dir)) as c:
            watching.set()
            for url in ("/api/runs/..", "/api/runs/.%2E", "/api/runs/..%2F..%2Fetc%2Fpasswd",
                        "/api/runs/%2Fetc%2Fpasswd/metrics", "/api/runs/classify/plots/..%2Fconfig.json",
                        "/api/runs/classify/plots/..%2F..%2F..%2Fsecret.png", "/api/runs/classify/plots/leak.png",
                        "/api/runs/classify/plots/.hidden.png", "/api/runs/classify/plots/%2Fetc%2Fpasswd",
                        "/api/runs/classify%2F..%2F..%2Fsecret.png/metrics", "/api/runs/classify/plots/config.json",
                        f"/api/runs/{secret.parent.name}/metrics", "/static/..%2F..%2F..%2F__init__.py",
                        "/static/%2E%2E/app.py"):
                r = c.get(url)
                assert r.status_code == 404, url
                assert r.headers["content-type"].startswith("application/json"), url
            r = c.post("/api/runs/..%2F..%2Fsecret/predict", files={"image": ("a.png", b"x", "image/png")})
            assert r.status_code == 404
            watching.clear()
    finally:
        watching.clear()
        link.unlink()
    assert not [p for p in opened if str(secret) in p or "passwd" in p], opened
    assert not [p for p in opened if Path(p).is_absolute() and not Path(p).resolve().is_relative_to(runs_dir.resolve())
                and Path(p).resolve().is_relative_to(outside)], opened


def test_unknown_run_and_plot_are_404_json(client):
    r = client.get("/api/runs/nope")
    assert r.status_code == 404 and r.json() == {"detail": "unknown run 'nope'"}
    assert post(client, "nope", png_bytes(photo(8))).status_code == 404
    assert client.get("/api/runs/classify/plots/nothing.png").status_code == 404
    assert client.get("/no/such/page").json() == {"detail": "Not Found"}


def test_queue_bound_and_timeout_answer_503():
    from fastapi import HTTPException

    release = threading.Event()

    async def scenario():
        q = InferenceQueue(Limits(max_queue=1, timeout_s=0.3, workers=1))
        first = asyncio.create_task(q.run(release.wait, 5))
        await asyncio.sleep(0.05)
        with pytest.raises(HTTPException) as busy:
            await q.run(lambda: 1)
        assert busy.value.status_code == 503 and "busy" in busy.value.detail
        with pytest.raises(HTTPException) as late:
            await first
        assert late.value.status_code == 503 and "timeout" in late.value.detail
        assert q.pending == 1  # the timed-out call still holds its place until its thread is done
        release.set()
        for _ in range(100):
            if q.pending == 0:
                break
            await asyncio.sleep(0.01)
        assert q.pending == 0 and await q.run(lambda: 7) == 7
        q.close()

    asyncio.run(scenario())


def test_concurrent_requests_share_one_loaded_model(client):
    img = png_bytes(photo(8))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: post(client, "classify", img).json()["top"], range(8)))
    assert all(a == answers[0] for a in answers)
    assert sum(1 for name in client.app.state.predictors if name == "classify") == 1


def test_cli_errors_and_loopback(tmp_path, capsys):
    from fovea.cli.serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["serve", "--runs-dir", str(tmp_path / "nowhere")]) == 2
    with pytest.raises(SystemExit) as e:  # argparse refuses it
        main(["serve", "--max-upload-mb", "0"])
    assert e.value.code == 2
