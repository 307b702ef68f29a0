"""Measures for generative models and anomaly detection: the Frechet distance between two sets
of features, class coverage, a generation report in the feature space of a fovea classifier,
and pixel-space anomaly baselines (PCA reconstruction error, one-class SVM) with their metrics.

The Frechet distance between Gaussians fitted to two feature sets (Dowson & Landau 1982),
``d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, is the measure behind FID
(Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium"), there in the pool features of Inception v3 on ImageNet. Here the features are
the pre-logits vector of a classifier trained on the same data as the generator, so the
numbers are comparable only between reports made with the same classifier; the report gives two
reference points computed the same way (held-out real images, the best case; uniform noise,
the worst) so that one number can be read without another run. The distance is biased upwards
for small sample sizes (Binkowski et al. 2018): compare sets of equal size.

Anomaly baselines are the ones every learned detector must beat: the squared reconstruction
error of PCA fitted on normal data, and a one-class SVM with an RBF kernel (Schoelkopf et al.
2001, "Estimating the Support of a High-Dimensional Distribution") on raw pixels. Scores are
"higher = more anomalous"; a threshold is picked on normal validation data only.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import UserError
from fovea.models.base import eval_mode

__all__ = [
    "anomaly_metrics", "class_coverage", "classifier_features", "frechet_distance", "generation_report",
    "ocsvm_anomaly_scores", "pca_anomaly_scores", "pick_threshold",
]

FRECHET_EPS = 1e-6  # added to both covariances' diagonals when sqrtm fails, as pytorch-fid does
_IMAG_TOL = 1e-3  # an imaginary part of sqrtm's diagonal above this means the square root is unreliable


# ---------------------------------------------------------------------------- Frechet distance


def _as_features(x, name: str) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise UserError(f"{name} has shape {tuple(a.shape)}; expected a 2-D array of features (N, D)")
    if len(a) < 2:
        raise UserError(f"{name} holds {len(a)} sample(s); a covariance needs at least 2")
    if not np.isfinite(a).all():
        raise UserError(f"{name} holds NaN or infinite values")
    return a


def _sqrtm_trace(s_a: np.ndarray, s_b: np.ndarray, eps: float) -> float:
    """``Tr((S_a S_b)^(1/2))``: the real part of scipy's matrix square root, retried with
    ``eps * I`` added to both covariances when it fails or is not finite (near-singular
    covariances, e.g. fewer samples than dimensions)."""
    from scipy import linalg

    def root(a, b, strict):
        with warnings.catch_warnings():
            # scipy warns of a singular product; the first try retries on it, the second accepts it
            warnings.simplefilter("error" if strict else "ignore", linalg.LinAlgWarning)
            try:
                r = linalg.sqrtm(a @ b)
            except (linalg.LinAlgError, linalg.LinAlgWarning, ValueError):
                return None
        return r if np.isfinite(r).all() else None

    r = root(s_a, s_b, strict=True)
    if r is None or (np.iscomplexobj(r) and np.abs(np.diagonal(r).imag).max() > _IMAG_TOL):
        offset = np.eye(len(s_a)) * eps
        r = root(s_a + offset, s_b + offset, strict=False)
        if r is None:
            raise UserError(f"the matrix square root of S_a S_b failed even with eps={eps} added to the "
                            "covariances; expected features with finite, non-degenerate covariances")
    return float(np.trace(r.real))


def frechet_distance(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray, *,
                     eps: float = FRECHET_EPS) -> float:
    """Frechet distance between the Gaussians fitted to two feature sets (N_a x D, N_b x D):
    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, in float64, with the unbiased
    covariances (``np.cov``). Symmetric, and 0 for a set against itself (clipped at 0, since
    rounding can make it a hair negative)."""
    a, b = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise UserError(f"feats_a has {a.shape[1]} features per sample and feats_b {b.shape[1]}; expected the same")
    diff = a.mean(0) - b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    d2 = diff @ diff + np.trace(s_a) + np.trace(s_b) - 2 * _sqrtm_trace(s_a, s_b, eps)
    return max(float(d2), 0.0)


# ---------------------------------------------------------------------------- classifier features


def _expected_channels(classifier: nn.Module) -> int | None:
    channels = getattr(classifier, "in_channels", None)  # a FeatureModel records it
    if channels is None:
        try:
            channels = classifier.net.default_input_size[0]
        except (AttributeError, StopIteration):
            return None
    return int(channels)


@torch.no_grad()
def classifier_features(classifier: nn.Module, images: torch.Tensor, batch_size: int = 256, *,
                        image_size: int | tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The pre-logits features (N x D) and logits (N x K) of ``classifier`` for ``images``
    (N x C x H x W, floats in [0, 1]), in batches, in eval mode, as float32 CPU tensors.

    ``classifier`` is an :class:`~fovea.tasks.classify.ImageClassifier` (``.preprocess`` and a
    ``.net`` with ``forward_features`` and ``forward_head``) or a
    :class:`~fovea.apps.features.FeatureModel`. Images of another size than ``image_size`` (when
    given, or recorded by the model) are resized to it, bilinearly; a channel count other than
    the classifier's is refused."""
    if images.ndim != 4 or len(images) == 0:
        raise UserError(f"images have shape {tuple(images.shape)}; expected a non-empty (N, C, H, W)")
    if batch_size < 1:
        raise UserError(f"batch_size={batch_size}; expected a positive integer")
    channels = _expected_channels(classifier)
    if channels is not None and images.shape[1] != channels:
        raise UserError(f"images have {images.shape[1]} channels; the classifier takes {channels}")
    if image_size is None:
        image_size = getattr(classifier, "image_size", None)  # a FeatureModel records it
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    device = next(classifier.parameters(), torch.empty(0)).device
    feats, logits = [], []
    with eval_mode(classifier):
        for xb in images.split(batch_size):
            xb = xb.to(device).float()
            if size is not None and tuple(xb.shape[2:]) != tuple(size):
                xb = F.interpolate(xb, size=tuple(size), mode="bilinear", align_corners=False,
                                   antialias=True).clamp_(0, 1)
            z = classifier.net.forward_features(classifier.preprocess(xb))
            feats.append(classifier.net.forward_head(z, pre_logits=True).flatten(1).float().cpu())
            logits.append(classifier.net.forward_head(z).float().cpu())
    return torch.cat(feats), torch.cat(logits)


# ---------------------------------------------------------------------------- class coverage


def class_coverage(logits: torch.Tensor, num_classes: int | None = None,
                   min_share: float = 0.0) -> tuple[float, torch.Tensor]:
    """The share of the ``num_classes`` classes (default: the logits' width) that the
    classifier predicts (argmax) for at least one sample, or, with ``min_share > 0``, for at
    least that share of the samples; and the per-class prediction counts. A generator that
    collapses onto a few modes covers few classes."""
    if logits.ndim != 2 or len(logits) == 0:
        raise UserError(f"logits have shape {tuple(logits.shape)}; expected a non-empty (N, K)")
    k = logits.shape[1] if num_classes is None else int(num_classes)
    if k < logits.shape[1]:
        raise UserError(f"num_classes={k}, but the logits have {logits.shape[1]} columns; expected at least that many")
    if not 0.0 <= min_share <= 1.0:
        raise UserError(f"min_share={min_share}; expected a share in [0, 1]")
    counts = torch.bincount(logits.argmax(1).cpu(), minlength=k)
    covered = counts >= max(min_share * len(logits), 1.0)
    return covered.sum().item() / k, counts


# ---------------------------------------------------------------------------- generation report


def generation_report(classifier: nn.Module, real: torch.Tensor, fake: torch.Tensor, *,
                      noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                      image_size: int | tuple[int, int] | None = None, batch_size: int = 256) -> dict:
    """Quality of generated images ``fake`` in the feature space of a fovea ``classifier``
    trained on the same data, with two reference points computed the same way.

    ``real`` (images in [0, 1], in random order) is split in two: the first half is the
    reference set every distance is measured to, the second half (held-out real) gives the best
    case a generator can reach. Uniform noise in [0, 1] the shape of the held-out half (made
    with ``generator``, or ``noise`` when given) gives the worst case. Returns::

        {"fid": {"samples": d, "real": d, "noise": d},        # Frechet distance to the reference
         "coverage": {"samples": c, "real": c, "noise": c},   # share of classes predicted
         "n": {"reference": n, "real": n, "samples": n, "noise": n}}

    The distance grows as the sample size shrinks: pass as many fakes as held-out reals.
    """
    if real.ndim != 4 or len(real) < 4:
        raise UserError(f"real has shape {tuple(real.shape)}; expected (N, C, H, W) with N >= 4")
    if fake.ndim != 4 or tuple(fake.shape[1:]) != tuple(real.shape[1:]):
        raise UserError(f"fake has shape {tuple(fake.shape)}; expected (N, {', '.join(map(str, real.shape[1:]))})")
    half = len(real) // 2
    reference, held_out = real[:half], real[half:]
    if noise is None:
        noise = torch.rand(held_out.shape, generator=generator, device=generator.device if generator else "cpu")
    elif tuple(noise.shape[1:]) != tuple(real.shape[1:]):
        raise UserError(f"noise has shape {tuple(noise.shape)}; expected (N, {', '.join(map(str, real.shape[1:]))})")

    def embed(x):
        return classifier_features(classifier, x, batch_size, image_size=image_size)

    ref_feats, _ = embed(reference)
    fid, coverage, n = {}, {}, {"reference": len(reference)}
    for key, images in (("samples", fake), ("real", held_out), ("noise", noise)):
        feats, logits = embed(images)
        fid[key] = frechet_distance(feats, ref_feats)
        coverage[key] = class_coverage(logits)[0]
        n[key] = len(images)
    return {"fid": fid, "coverage": coverage, "n": n}


# ---------------------------------------------------------------------------- anomaly detection


def _flat_pair(train, test) -> tuple[np.ndarray, np.ndarray]:
    tr = np.asarray(train, dtype=np.float64).reshape(len(train), -1)
    te = np.asarray(test, dtype=np.float64).reshape(len(test), -1)
    if tr.shape[1] != te.shape[1]:
        raise UserError(f"train has {tr.shape[1]} values per sample and test {te.shape[1]}; expected the same")
    if len(tr) < 2:
        raise UserError(f"train holds {len(tr)} sample(s); expected at least 2")
    return tr, te


def pca_anomaly_scores(train: np.ndarray, test: np.ndarray, n_components: int | float = 0.9) -> np.ndarray:
    """Anomaly scores of ``test``: the squared error of reconstructing each (flattened) sample
    from the principal subspace of normal ``train`` data. ``n_components``: a count, or the share
    of the variance to keep (a float in (0, 1))."""
    from sklearn.decomposition import PCA

    tr, te = _flat_pair(train, test)
    if isinstance(n_components, float) and not 0.0 < n_components < 1.0:
        raise UserError(f"n_components={n_components}; expected a count or a variance share in (0, 1)")
    if isinstance(n_components, int) and not 1 <= n_components <= min(tr.shape):
        raise UserError(f"n_components={n_components}; expected 1 to {min(tr.shape)} for train of shape {tr.shape}")
    pca = PCA(n_components=n_components, svd_solver="full").fit(tr)
    recon = pca.inverse_transform(pca.transform(te))
    return ((te - recon) ** 2).sum(axis=1)


def ocsvm_anomaly_scores(train: np.ndarray, test: np.ndarray, nu: float = 0.1, gamma="scale",
                         max_train: int = 2000, seed: int = 0) -> np.ndarray:
    """Anomaly scores of ``test`` from a one-class SVM with an RBF kernel fitted on the raw
    (flattened) pixels of normal ``train`` data, at most ``max_train`` of them drawn at random
    (the fit is quadratic or worse in their number): ``-decision_function``, higher = more
    anomalous. ``nu`` bounds the share of training samples treated as outliers."""
    from sklearn.svm import OneClassSVM

    tr, te = _flat_pair(train, test)
    if not 0.0 < nu <= 1.0:
        raise UserError(f"nu={nu}; expected a share in (0, 1]")
    if len(tr) > max_train:
        tr = tr[np.random.default_rng(seed).choice(len(tr), max_train, replace=False)]
    return -OneClassSVM(kernel="rbf", nu=nu, gamma=gamma).fit(tr).decision_function(te)


def anomaly_metrics(scores: np.ndarray, is_anomaly: np.ndarray, threshold: float | None = None) -> dict:
    """ROC-AUC and average precision of anomaly ``scores`` (higher = more anomalous) against
    the truth ``is_anomaly``; with a ``threshold`` (a score above it is flagged), also the
    precision, recall and accuracy of the flags."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    s, y = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(is_anomaly).astype(bool).ravel()
    if len(s) != len(y):
        raise UserError(f"{len(s)} scores but {len(y)} labels; expected one label per score")
    n_anomalies = int(y.sum())
    if n_anomalies in (0, len(y)):
        raise UserError(f"the labels hold {n_anomalies} anomalies and {len(y) - n_anomalies} normal samples; "
                        "expected both")
    out = {"roc_auc": float(roc_auc_score(y, s)), "average_precision": float(average_precision_score(y, s))}
    if threshold is not None:
        flagged = s > threshold
        tp = int((flagged & y).sum())
        out.update(threshold=float(threshold), precision=tp / max(int(flagged.sum()), 1),
                   recall=tp / n_anomalies, accuracy=float((flagged == y).mean()))
    return out


def pick_threshold(normal_val_scores: np.ndarray, quantile: float = 0.95) -> float:
    """A threshold from validation scores of normal data only: their ``quantile`` (linear
    interpolation), so that about ``1 - quantile`` of normal samples are flagged."""
    s = np.asarray(normal_val_scores, dtype=np.float64).ravel()
    if len(s) == 0:
        raise UserError("normal_val_scores is empty; expected the scores of normal validation samples")
    if not 0.0 <= quantile <= 1.0:
        raise UserError(f"quantile={quantile}; expected a value in [0, 1]")
    return float(np.quantile(s, quantile))
