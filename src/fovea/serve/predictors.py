"""What the try-it page and ``POST /api/runs/{name}/predict`` answer, one predictor per task.

A predictor loads its run's model once (through the task's own loader, the one the command-line
tools use) and is then called with the uploaded image bytes. Every picture in an answer is a PNG
data URL, so one JSON document holds the whole answer. Calls into one predictor are serialized
by its lock: Grad-CAM hooks modules of the shared model, and a forward pass already uses every
core through torch's intra-op threads."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import torch

from fovea.serve.images import (UploadError, decode_upload, enlarge, fit_longest, heat_overlay, png_data_url, resize,
                                to_pixels)
from fovea.train.run import Run

INDEX_FILE = "index.safetensors"  # a retrieval index (`fovea index RUN FOLDER --out RUN/index.safetensors`)
SERVED_TASKS = ("classify", "segment", "autoencoder", "gan", "metric", "superres", "denoise", "stylenet", "flow",
                "depth")


class Predictor:
    """Base: ``uploads`` images expected per request (0 for samplers, 2 for flow and depth)."""

    uploads = 1

    def __init__(self, run_dir: Path, limits):
        self.run_dir = run_dir
        self.limits = limits
        self.lock = threading.Lock()
        self.info = Run.existing(run_dir).read_json("model.json")

    def decode(self, data: bytes, channels: int | None = None) -> torch.Tensor:
        return decode_upload(data, max_pixels=self.limits.max_pixels, channels=channels)

    def __call__(self, uploads: list[bytes], params: dict) -> dict:
        with self.lock:
            return self.predict(uploads, params)

    def predict(self, uploads: list[bytes], params: dict) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError


# ------------------------------------------------------------------------------- classifiers, retrieval


class Retrieval:
    """Nearest neighbours from ``RUN/index.safetensors`` built with this run's own model."""

    def __init__(self, run_dir: Path):
        from fovea.apps.features import LayerExtractor, load_feature_model
        from fovea.apps.retrieval import Index, check_model

        self.index = Index.load(run_dir / INDEX_FILE)
        self.model = load_feature_model(str(run_dir))
        check_model(self.index, self.model, INDEX_FILE)
        self.extract = LayerExtractor(self.model, self.index.meta["layer"], self.index.meta["pool"])
        self.folder = Path(self.index.meta.get("folder", "/"))

    def __call__(self, image: torch.Tensor, k: int) -> list[dict]:
        from fovea.apps.retrieval import l2_normalize, load_thumbnails, nearest

        query = resize(self.model_input(image), self.model.image_size)
        with torch.no_grad():
            emb = l2_normalize(self.extract(query[None]))
        scores, ids = nearest(self.index.embeddings, emb, k, backend="torch")
        paths = [self.index.paths[i] for i in ids[0].tolist()]
        thumbs, ok = load_thumbnails(paths, self.model.in_channels, self.model.image_size)
        out = []
        for rank, (p, s, t, good) in enumerate(zip(paths, scores[0].tolist(), thumbs, ok)):
            try:  # shown relative to the indexed folder: the answer does not reveal the server's layout
                name = str(Path(p).relative_to(self.folder))
            except ValueError:
                name = Path(p).name
            out.append(dict(rank=rank + 1, path=name, score=round(float(s), 6),
                            image=png_data_url(enlarge(to_pixels(t), 64)) if good else None))
        return out

    def model_input(self, image: torch.Tensor) -> torch.Tensor:
        c = self.model.in_channels
        if image.shape[0] == c:
            return image
        if c == 3:
            return image.expand(3, -1, -1)
        w = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)  # ITU-R 601 luma, as fovea's decoder
        return (image.float() * w).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def _retrieval(run_dir: Path) -> Retrieval | None:
    return Retrieval(run_dir) if (run_dir / INDEX_FILE).is_file() else None


class ClassifyPredictor(Predictor):
    """Top-k classes, and the Grad-CAM map of the most probable class over the image."""

    def __init__(self, run_dir, limits):
        from fovea.apps.explain import default_layer, map_layers
        from fovea.tasks.classify import load_classifier

        super().__init__(run_dir, limits)
        self.model, self.info = load_classifier(run_dir)
        self.size = tuple(self.info["image_size"])
        self.classes = [str(c) for c in self.info["classes"]]
        probe = torch.zeros(1, self.info["in_channels"], *self.size)
        try:
            self.layer = default_layer(map_layers(self.model, probe))
        except Exception:  # a model with no spatial map (all fully connected) has no Grad-CAM
            self.layer = None
        self.retrieval = _retrieval(run_dir)

    def predict(self, uploads, params):
        from fovea.apps.explain import grad_cam

        image = self.decode(uploads[0], self.info["in_channels"])
        x = resize(image, self.size)[None].float().div(255)
        with torch.no_grad():
            probs = self.model(x).float().softmax(1)[0]
        k = max(1, min(int(params.get("k", 5)), len(self.classes)))
        top = probs.topk(k)
        result = dict(top=[dict(cls=self.classes[j], prob=round(float(p), 6))
                           for p, j in zip(top.values.tolist(), top.indices.tolist())])
        result["gradcam"] = None
        if self.layer is not None and params.get("explain", True):
            target = int(top.indices[0])
            heat = grad_cam(self.model, x, target, self.layer)
            result["gradcam"] = dict(layer=self.layer, cls=self.classes[target],
                                     overlay=png_data_url(heat_overlay(image, heat)))
        if self.retrieval is not None:
            result["neighbours"] = self.retrieval(image, int(params.get("neighbours", 8)))
        return result


class MetricPredictor(Predictor):
    """The embedding of the image, and its nearest neighbours when the run has an index."""

    def __init__(self, run_dir, limits):
        from fovea.tasks.metric import load_metric_model

        super().__init__(run_dir, limits)
        self.model, self.info = load_metric_model(run_dir)
        self.retrieval = _retrieval(run_dir)

    def predict(self, uploads, params):
        image = self.decode(uploads[0], self.info["in_channels"])
        x = resize(image, tuple(self.info["image_size"]))[None].float().div(255)
        with torch.no_grad():
            emb = self.model.embed(x)[0].float()
        result = dict(embedding=[round(v, 6) for v in emb.tolist()], norm=round(float(emb.norm()), 6))
        if self.retrieval is not None:
            result["neighbours"] = self.retrieval(image, int(params.get("neighbours", 8)))
        return result


# ------------------------------------------------------------------------------- pixels to pixels


class SegmentPredictor(Predictor):
    """The predicted mask over the image and each class's share of the pixels."""

    def __init__(self, run_dir, limits):
        from fovea.tasks.segment import inference_tile, load_segmenter

        super().__init__(run_dir, limits)
        self.model, self.info = load_segmenter(run_dir)
        self.tile = inference_tile(self.model, self.info)
        self.classes = self.info.get("classes") or [str(i) for i in range(self.info["num_classes"])]

    def predict(self, uploads, params):
        from fovea.data.masks import overlay_mask
        from fovea.tasks.segment import predict_scores

        image = fit_longest(self.decode(uploads[0], self.info["in_channels"]), self.limits.work_side, 8)
        with torch.no_grad():
            scores = predict_scores(self.model, image[None].float().div(255), tile=self.tile)
        mask = scores[0].float().argmax(0).to(torch.uint8)
        counts = np.bincount(mask.flatten().numpy(), minlength=len(self.classes))
        return dict(size=list(mask.shape), overlay=png_data_url(overlay_mask(image, mask)),
                    classes=[dict(cls=str(c), share=round(float(n) / mask.numel(), 6))
                             for c, n in zip(self.classes, counts)])


class ImageToImagePredictor(Predictor):
    """Super-resolution, denoising and style networks: one picture in, one out."""

    def __init__(self, run_dir, limits):
        super().__init__(run_dir, limits)
        task = self.info.get("task")
        if task == "stylenet":
            from fovea.tasks.stylenet import load_stylenet

            self.model, self.info = load_stylenet(run_dir)
        else:
            from fovea.tasks.restore import load_restorer

            self.model, self.info = load_restorer(run_dir, task)
        self.task = task

    def predict(self, uploads, params):
        # super-resolution multiplies the pixels by scale^2: its input is capped lower
        side = self.limits.work_side // (int(self.info.get("scale", 1)) if self.task == "superres" else 1)
        image = fit_longest(self.decode(uploads[0]), max(16, side))
        x = image.float().div(255)
        with torch.no_grad():
            if self.task == "superres":
                from fovea.tasks.restore import upscale_image

                out = upscale_image(self.model, x, int(self.info["scale"]))
            elif self.task == "denoise":
                from fovea.tasks.restore import denoise_image

                out = denoise_image(self.model, x)
            else:
                from fovea.tasks.stylenet import stylize_image

                out = stylize_image(self.model, x)
        return dict(input=png_data_url(to_pixels(image)), output=png_data_url(to_pixels(out)),
                    size=[int(out.shape[-2]), int(out.shape[-1])])


class PairPredictor(Predictor):
    """Optical flow (two frames) and disparity (a rectified left and right view)."""

    uploads = 2

    def __init__(self, run_dir, limits):
        super().__init__(run_dir, limits)
        if self.info.get("task") == "flow":
            from fovea.tasks.flow import load_flow_model

            self.model, self.info = load_flow_model(run_dir)
        else:
            from fovea.tasks.depth import load_depth_model

            self.model, self.info = load_depth_model(run_dir)

    def predict(self, uploads, params):
        a, b = (self.decode(u, 3) for u in uploads)
        if a.shape != b.shape:
            raise UploadError(400, f"the two images differ in size ({a.shape[1]}x{a.shape[2]} and "
                                   f"{b.shape[1]}x{b.shape[2]}); expected a pair of the same size")
        a, b = (fit_longest(t, self.limits.work_side, 64) for t in (a, b))
        with torch.no_grad():
            if self.info.get("task") == "flow":
                from fovea.report.flowviz import flow_to_color

                flow = self.model(torch.cat([a, b])[None].float().div(255))[0].float()
                length = torch.linalg.vector_norm(flow, dim=0)
                picture = flow_to_color(flow).permute(1, 2, 0).numpy()
                stats = dict(mean=round(float(length.mean()), 4), max=round(float(length.max()), 4))
            else:
                from fovea.tasks.depth import disparity_to_color, predict_disparity

                disp = predict_disparity(self.model, a, b, int(self.info.get("scale", 1)))[0].float()
                picture = disparity_to_color(disp.numpy(), max(float(disp.max()), 1e-6))
                stats = dict(mean=round(float(disp.mean()), 4), max=round(float(disp.max()), 4))
        return dict(output=png_data_url(np.ascontiguousarray(picture)), size=list(a.shape[-2:]), **stats)


# ------------------------------------------------------------------------------- generative models


class AutoencoderPredictor(Predictor):
    """The image at the model's size beside its reconstruction, and their mean squared error."""

    def __init__(self, run_dir, limits):
        from fovea.tasks.autoencode import load_autoencoder

        super().__init__(run_dir, limits)
        self.model, self.info = load_autoencoder(run_dir)

    def predict(self, uploads, params):
        image = self.decode(uploads[0], self.info["in_channels"])
        x = resize(image, tuple(self.info["image_size"]))[None].float().div(255)
        with torch.no_grad():
            recon = self.model(x).recon.float().clamp(0, 1)
        return dict(input=png_data_url(enlarge(to_pixels(x[0]))),
                    reconstruction=png_data_url(enlarge(to_pixels(recon[0]))),
                    mse=round(float((recon - x).pow(2).mean()), 6))


class GanPredictor(Predictor):
    """``n`` samples from the generator (no upload), as one grid; ``seed`` makes them repeatable."""

    uploads = 0

    def __init__(self, run_dir, limits):
        from fovea.tasks.gan import load_gan

        super().__init__(run_dir, limits)
        self.model, self.info = load_gan(run_dir)

    def predict(self, uploads, params):
        from fovea.apps.explain import tile_images

        n = int(params.get("n", 16))
        if not 1 <= n <= 64:
            raise UploadError(400, f"n={n}: expected 1 to 64 samples")
        g = torch.Generator().manual_seed(int(params.get("seed", 0)))
        with torch.no_grad():
            samples = self.model.sample(n, generator=g).float().clamp(0, 1)
        grid, _ = tile_images(samples, ncols=min(8, math.ceil(math.sqrt(n))), scale=max(1, 64 // samples.shape[-1]))
        return dict(n=n, samples=png_data_url(grid))


PREDICTORS = {"classify": ClassifyPredictor, "metric": MetricPredictor, "segment": SegmentPredictor,
              "superres": ImageToImagePredictor, "denoise": ImageToImagePredictor,
              "stylenet": ImageToImagePredictor, "flow": PairPredictor, "depth": PairPredictor,
              "autoencoder": AutoencoderPredictor, "gan": GanPredictor}


def uploads_for(task: str | None) -> int | None:
    """How many images a task's prediction takes; None when the task is not served."""
    cls = PREDICTORS.get(task or "")
    return None if cls is None else cls.uploads


__all__ = ["INDEX_FILE", "PREDICTORS", "Predictor", "SERVED_TASKS", "uploads_for"]
