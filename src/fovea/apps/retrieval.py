"""Content-based image retrieval with CNN features: embed a gallery of images (L2-normalized
activations of one layer), find the nearest ones to a query by cosine similarity, and measure
retrieval on labelled data with mean average precision and precision@k (relevant = same label).

CNN activations as a retrieval descriptor: Babenko et al. 2014, "Neural Codes for Image
Retrieval"; Razavian et al. 2014. Search is exact: one matrix product with the unit-length
gallery and a top-k, in torch, in chunks of queries. When the optional ``faiss`` package is
installed and the gallery holds at least :data:`FAISS_MIN_GALLERY` images, FAISS's flat
inner-product index does the same exact search faster. Product quantization
(:class:`ProductQuantizer`) turns vectors into compact byte codes.

An index is a ``.safetensors`` file with the tensor ``embeddings`` (N x D, unit rows) and a
JSON header entry ``fovea`` holding the image paths, the layer and pool, and the model's source
and fingerprint: a query embedded by any other model than the index's is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fovea.errors import UserError

__all__ = [
    "FAISS_MIN_GALLERY", "INDEX_FORMAT", "Index", "IndexMismatchError", "ProductQuantizer",
    "average_precision", "build_index", "check_model", "contact_sheet", "evaluate_retrieval",
    "list_images", "nearest", "ranking_metrics",
]

INDEX_FORMAT = "fovea-index/1"
FAISS_MIN_GALLERY = 50_000  # below this, torch's matrix product is as fast as FAISS's flat index
DEFAULT_KS = (1, 5, 10, 100)


class IndexMismatchError(UserError):
    """A query model that is not the model an index was built with."""


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length, so that the dot product is the cosine similarity."""
    return F.normalize(x.float(), dim=1)


# ---------------------------------------------------------------------------- the index


@dataclass
class Index:
    """A gallery: unit-length embeddings, one per image path, and what made them."""

    embeddings: torch.Tensor  # (N, D) float32, unit rows
    paths: list[str]
    meta: dict = field(default_factory=dict)  # model, source, weights, model_fingerprint, layer, pool, ...

    def __len__(self) -> int:
        return len(self.paths)

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = dict(self.meta, format=INDEX_FORMAT, paths=self.paths)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"embeddings": self.embeddings.float().contiguous()}, str(tmp),
                  metadata={"format": "pt", "fovea": json.dumps(header)})
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Index":
        from safetensors.torch import load_file

        from fovea.apps.features import read_header

        header = read_header(path, INDEX_FORMAT, "index (from `fovea index`)")
        emb = load_file(str(path))["embeddings"]
        meta = {k: v for k, v in header.items() if k not in ("paths", "format")}
        return cls(emb, header["paths"], meta)


def list_images(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` (recursively, hidden files left out), sorted."""
    from fovea.data.decode import IMAGE_EXTENSIONS

    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"image folder {str(root)!r} not found")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise UserError(f"no images in {str(root)!r} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def build_index(model, folder: str | Path, *, layer: str = "pre_logits", pool: str = "avg", batch_size: int = 256,
                chunk: int = 2048, log=print) -> Index:
    """Embed every image of ``folder`` with ``model`` (a :class:`~fovea.apps.features.FeatureModel`),
    decoding ``chunk`` files at a time; undecodable files are skipped and counted."""
    from fovea.apps.features import LayerExtractor, extract
    from fovea.data.decode import decode_images

    extractor = LayerExtractor(model, layer, pool)
    files = [str(p) for p in list_images(folder)]
    embeddings, paths, skipped = [], [], []
    for start in range(0, len(files), chunk):
        part = files[start:start + chunk]
        images, ok = decode_images(part, model.in_channels, model.image_size, "skip", skipped)
        if len(ok):
            embeddings.append(l2_normalize(extract(model, images, batch_size=batch_size, extractor=extractor)))
            paths += [part[i] for i in ok]
    if skipped:
        shown = "; ".join(f"{p} ({why})" for p, why in skipped[:3])
        log(f"skipped {len(skipped)} unreadable file(s): {shown}{' ...' if len(skipped) > 3 else ''}")
    if not paths:
        raise UserError(f"none of the {len(files)} images in {str(folder)!r} could be decoded")
    meta = dict(model.describe(), layer=layer, pool=pool, folder=str(Path(folder).resolve()), skipped=len(skipped))
    return Index(torch.cat(embeddings), paths, meta)


def check_model(index: Index, model, index_path: str = "index") -> None:
    """Refuse a query model other than the one the index was built with (by fingerprint)."""
    want = index.meta.get("model_fingerprint")
    if model.fingerprint != want:
        raise IndexMismatchError(
            f"index {index_path!r} was built with model {index.meta.get('model')!r} ({index.meta.get('source')}, "
            f"fingerprint {want}), but the query model {model.name!r} ({model.source}) has fingerprint "
            f"{model.fingerprint}; rebuild the index with `fovea index {model.source} FOLDER` or leave out --model")


# ---------------------------------------------------------------------------- search


def _faiss():
    try:
        import faiss  # optional: `pip install faiss-cpu`
    except ImportError:
        return None
    return faiss


def nearest(gallery: torch.Tensor, queries: torch.Tensor, k: int = 10, *, backend: str = "auto",
            chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` gallery rows with the largest dot product with each query (the cosine
    similarity for unit rows): ``(scores, indices)``, each (M, k), best first.

    ``backend``: ``torch`` (exact, a matrix product and a top-k per chunk of queries),
    ``faiss`` (FAISS's exact flat inner-product index) or ``auto`` (FAISS when installed and
    the gallery holds at least :data:`FAISS_MIN_GALLERY` rows)."""
    k = min(k, len(gallery))
    if k < 1:
        raise UserError("the gallery is empty")
    faiss = _faiss() if backend in ("auto", "faiss") else None
    if backend == "faiss" and faiss is None:
        raise UserError("backend 'faiss' needs the faiss package (pip install faiss-cpu)")
    if faiss is not None and (backend == "faiss" or len(gallery) >= FAISS_MIN_GALLERY):
        index = faiss.IndexFlatIP(gallery.shape[1])
        index.add(np.ascontiguousarray(gallery.float().cpu().numpy()))
        scores, ids = index.search(np.ascontiguousarray(queries.float().cpu().numpy()), k)
        return torch.from_numpy(scores), torch.from_numpy(ids).long()
    scores, ids = [], []
    g = gallery.float()
    for q in queries.float().split(chunk):
        top = (q.to(g.device) @ g.T).topk(k, dim=1)
        scores.append(top.values.cpu())
        ids.append(top.indices.cpu())
    return torch.cat(scores), torch.cat(ids)


# ---------------------------------------------------------------------------- metrics


def average_precision(scores, relevant) -> float:
    """AP of one ranking by descending score: the mean over the relevant items of the precision
    at each one's score, ``AP = (1/R) sum_{i relevant} #{relevant, score >= s_i} / #{all, score >= s_i}``.
    Tied scores share one threshold, as in scikit-learn's ``average_precision_score``."""
    scores = np.asarray(scores, dtype=np.float64)
    rel = np.asarray(relevant, dtype=bool)
    if not rel.any():
        return 0.0
    everything, hits = np.sort(scores), np.sort(scores[rel])
    at_or_above = len(everything) - np.searchsorted(everything, hits, "left")
    relevant_at_or_above = len(hits) - np.searchsorted(hits, hits, "left")
    return float((relevant_at_or_above / at_or_above).mean())


def ranking_metrics(queries: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor,
                    gallery_labels: torch.Tensor, ks=DEFAULT_KS, *, exclude_self: bool = False,
                    chunk: int = 256) -> dict:
    """Mean average precision and precision@k of ranking the whole gallery for every query by
    dot product (cosine similarity for unit rows); a gallery item is relevant when its label
    equals the query's. Exact, over every query and every gallery item, ``chunk`` queries at a
    time: a chunk costs ``chunk x N`` similarities, one sort per query (numpy's, faster than
    an argsort: AP needs only how many items score at least as high as each relevant one, see
    :func:`average_precision`) and a top-k for precision@k.

    ``exclude_self``: queries and gallery are the same set and each query's own row is left out
    of its ranking. Queries with no relevant item are left out of the mean (counted in
    ``no_relevant``). Tied scores count as in scikit-learn's ``average_precision_score``.
    """
    gallery = gallery.float()
    gallery_labels = gallery_labels.to(gallery.device)
    n = len(gallery)
    ks = sorted({int(k) for k in ks if 1 <= int(k) <= n - int(exclude_self)})
    ap_all, prec = [], {k: [] for k in ks}
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk].float().to(gallery.device)
        ql = query_labels[start:start + chunk].to(gallery.device)
        sims = q @ gallery.T
        rel = gallery_labels[None, :] == ql[:, None]
        if exclude_self:
            rows = torch.arange(len(q), device=gallery.device)
            cols = rows + start
            sims[rows, cols] = float("-inf")  # below every real score, and never relevant
            rel[rows, cols] = False
        if ks:
            hits = rel.gather(1, sims.topk(ks[-1], dim=1).indices).cumsum(1, dtype=torch.float32).cpu()
            for k in ks:
                prec[k].append(hits[:, k - 1] / k)
        s_np, rel_np = sims.cpu().numpy(), rel.cpu().numpy()
        everything = np.sort(s_np, axis=1)
        for i in range(len(q)):
            found = np.sort(s_np[i][rel_np[i]])
            if len(found) == 0:
                ap_all.append(np.nan)
                continue
            at_or_above = n - np.searchsorted(everything[i], found, "left")
            relevant_at_or_above = len(found) - np.searchsorted(found, found, "left")
            ap_all.append(float((relevant_at_or_above / at_or_above).mean()))
    ap = torch.tensor(ap_all, dtype=torch.float64)
    valid = ~ap.isnan()
    out = dict(mAP=float(ap[valid].mean()) if valid.any() else 0.0, queries=int(len(queries)), gallery=n,
               no_relevant=int((~valid).sum()))
    for k in ks:
        out[f"precision@{k}"] = float(torch.cat(prec[k])[valid].mean()) if valid.any() else 0.0
    return out


def evaluate_retrieval(source: str, data: str | None = None, *, gallery: str = "train", queries: str = "test",
                       ks=DEFAULT_KS, layer: str = "pre_logits", pool: str = "avg", max_queries: int | None = None,
                       weights: str | None = None, image_size=None, in_channels: int | None = None,
                       data_root: str | None = None, batch_size: int = 256, device: str = "auto",
                       features=None) -> dict:
    """mAP and precision@k of retrieving the ``gallery`` split's images for each image of the
    ``queries`` split of labelled ``data``, with one layer's L2-normalized features of a run, a
    registered model or ``pixels``. ``max_queries`` takes that many evenly spaced queries (all
    by default). ``features``: a :class:`~fovea.apps.features.FeatureSet` to use instead."""
    from fovea.apps.features import extract, model_and_data, pick_device

    if features is not None:
        g, gl = features.subset(gallery)
        q, ql = features.subset(queries)
        info = dict(model=features.meta.get("model"), data=features.meta.get("data"),
                    layer=features.meta.get("layer"), pool=features.meta.get("pool"))
    else:
        dev = pick_device(device)
        model, bundle, spec = model_and_data(source, data, weights=weights, image_size=image_size,
                                             in_channels=in_channels, data_root=data_root, device=dev,
                                             layer=layer, pool=pool)
        splits = {}
        for name in dict.fromkeys((gallery, queries)):
            s = getattr(bundle, name, None) if name in ("train", "val", "test") else None
            if s is None:
                have = [n for n in ("train", "val", "test") if getattr(bundle, n) is not None]
                raise UserError(f"data {spec!r} has no {name!r} split; it has {', '.join(have)}")
            splits[name] = (extract(model, s, layer=layer, pool=pool, batch_size=batch_size, device=dev), s.labels)
        (g, gl), (q, ql) = splits[gallery], splits[queries]
        info = dict(model=model.name, source=model.source, data=spec, layer=layer, pool=pool)
    same = gallery == queries
    if max_queries is not None and max_queries < 1:
        raise UserError(f"--max-queries {max_queries}: expected at least 1")
    if max_queries is not None and max_queries < len(q):
        if same:  # the queries' own rows would no longer be found by position
            raise UserError("--max-queries needs different gallery and query splits")
        pick = torch.linspace(0, len(q) - 1, max_queries).round().long()
        q, ql = q[pick], ql[pick]
    metrics = ranking_metrics(l2_normalize(q), ql, l2_normalize(g), gl, ks, exclude_self=same)
    return dict(info, gallery_split=gallery, query_split=queries, **metrics)


# ---------------------------------------------------------------------------- pictures


def contact_sheet(images: torch.Tensor, titles: list[str], path: str | Path, *, ncols: int, title: str | None = None):
    """Rows of ``query, result 1, ..., result k`` as one PNG: ``images`` is uint8 (N, C, H, W),
    one caption per image (a score and a name under each result)."""
    from fovea.report.plots import plot_image_grid

    return plot_image_grid(images, titles, path, ncols=ncols, title=title)


def load_thumbnails(paths: list[str], channels: int, size: tuple[int, int]) -> tuple[torch.Tensor, list[bool]]:
    """The images at ``paths`` at one size; a file that is gone or unreadable is a grey tile."""
    from fovea.data.decode import BadImageError, load_image

    out, ok = [], []
    for p in paths:
        try:
            out.append(load_image(p, channels=channels, size=size))
            ok.append(True)
        except BadImageError:
            out.append(torch.full((channels, *size), 128, dtype=torch.uint8))
            ok.append(False)
    return torch.stack(out), ok


# ---------------------------------------------------------------------------- compact codes


class ProductQuantizer:
    """Product quantization (Jégou, Douze and Schmid 2011, "Product quantization for nearest
    neighbor search"): the D dimensions are cut into ``M`` contiguous sub-vectors, each quantized
    to the nearest of ``K`` = 256 centroids learnt by k-means on its own sub-space, so a vector
    becomes ``M`` bytes and is reconstructed as the concatenation of its ``M`` centroids. The
    codebook is the Cartesian product of the sub-codebooks: K^M cells from M * K centroids."""

    def __init__(self, num_subvectors: int, num_centroids: int = 256, seed: int = 0):
        if num_subvectors < 1:
            raise UserError(f"--pq {num_subvectors}: expected at least 1 sub-vector")
        if not 1 <= num_centroids <= 256:
            raise UserError(f"num_centroids={num_centroids}: codes are bytes, so 1 to 256 centroids")
        self.m, self.k, self.seed = num_subvectors, num_centroids, seed
        self.bounds: list[tuple[int, int]] = []
        self.codebooks: list[np.ndarray] = []

    def fit(self, x: np.ndarray) -> "ProductQuantizer":
        from sklearn.cluster import KMeans, MiniBatchKMeans

        x = np.asarray(x, dtype=np.float32)
        n, d = x.shape
        if self.m > d:
            raise UserError(f"--pq {self.m} sub-vectors is more than the {d} dimensions of the features")
        cuts = np.linspace(0, d, self.m + 1).round().astype(int)  # sub-vectors differ by at most one dim
        self.bounds = list(zip(cuts[:-1].tolist(), cuts[1:].tolist()))
        k = min(self.k, n)
        self.codebooks = []
        for lo, hi in self.bounds:
            sub = x[:, lo:hi]
            if n > 20_000:  # mini-batches: k-means on all of a large set buys little for its time
                km = MiniBatchKMeans(k, random_state=self.seed, batch_size=4096, n_init=3)
            else:
                km = KMeans(k, random_state=self.seed, n_init=1)
            self.codebooks.append(km.fit(sub).cluster_centers_.astype(np.float32))
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(N, M) uint8 codes: the nearest centroid of each sub-vector."""
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        codes = [torch.cdist(x[:, lo:hi], torch.from_numpy(cb)).argmin(1)
                 for (lo, hi), cb in zip(self.bounds, self.codebooks)]
        return torch.stack(codes, 1).to(torch.uint8).numpy()

    def decode(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes).astype(np.int64)
        return np.concatenate([cb[codes[:, j]] for j, cb in enumerate(self.codebooks)], axis=1)

    def relative_error(self, x: np.ndarray) -> float:
        """sum ||x - decode(encode(x))||^2 / sum ||x||^2 (x is centred, so this is the fraction
        of the variance the codes lose)."""
        x = np.asarray(x, dtype=np.float32)
        err = ((x - self.decode(self.encode(x))) ** 2).sum()
        return float(err / max((x**2).sum(), 1e-12))

    @property
    def code_bytes(self) -> int:
        return self.m
