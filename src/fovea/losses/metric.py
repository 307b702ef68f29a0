"""Metric-learning losses of Siamese and triplet networks: the contrastive loss, the triplet
loss, and their batch versions with pair and triplet mining.

An embedding network f maps images to points of R^D where similar images lie close and
dissimilar ones far apart. Distances are Euclidean, D(x1, x2) = ||f(x1) - f(x2)||_2.

Contrastive loss (Hadsell, Chopra and LeCun 2006), for a pair at distance D:

    L = s * 1/2 D^2 + (1 - s) * 1/2 max(0, m - D)^2,

with s = ``similar`` = 1 for a similar pair and 0 for a dissimilar one. Similar pairs are
pulled together; dissimilar pairs are pushed apart until they are at least the margin m
away. Hadsell et al. write the label as Y = 0 for a similar pair and Y = 1 for a dissimilar
one, L = (1 - Y) 1/2 D^2 + Y 1/2 max(0, m - D)^2, so fovea's ``similar`` is 1 - Y. (The
survey's equation 4 has the same form but its text says "Y = 1 if similar, and Y = 1
otherwise", and drops the 0 in the max: read it as Hadsell et al. wrote it.)

Triplet loss (Schroff et al. 2015, FaceNet; the survey's equation 7), on squared distances,
for an anchor a, a positive p of the same class and a negative n of another class:

    L = 1/2 max(0, m + ||a - p||^2 - ||a - n||^2).

The loss is zero once the negative is at least m farther (in squared distance) than the
positive. At the kink (exactly on the margin) the gradient taken is 0.

Cross-domain learning (sketch vs photo, with unshared branches) gives two sets of
embeddings, a and b: every pair (i in a, j in b) is a candidate, including i == j. Within
one set, a pair never joins an image with itself.

Miners choose which pairs or triplets of a batch enter the loss (``MINERS``); see
``mine_pairs`` and ``mine_triplets``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fovea.errors import UserError

__all__ = [
    "CONTRASTIVE_MINERS",
    "METRIC_LOSSES",
    "MINERS",
    "batch_contrastive_loss",
    "batch_triplet_loss",
    "contrastive_loss",
    "mine_pairs",
    "mine_triplets",
    "pairwise_distances",
    "triplet_loss",
]

MINERS = ("all", "random", "hard", "semihard", "batch-hard")
CONTRASTIVE_MINERS = ("all", "random", "hard")
METRIC_LOSSES = ("contrastive", "triplet")


def pairwise_distances(a: Tensor, b: Tensor | None = None, squared: bool = False) -> Tensor:
    """Euclidean distances between the rows of ``a`` (N, D) and of ``b`` (M, D), or of ``a``
    with itself when ``b`` is None: an (N, M) matrix, squared distances if ``squared``.

    Computed as ||x||^2 + ||y||^2 - 2 x.y (one matrix product, O(N M) memory) after
    subtracting a common center, which leaves distances unchanged and shrinks the
    cancellation error; negative round-off is clamped to 0, and the diagonal of a set with
    itself is exactly 0. The square root of a zero distance has an infinite derivative, so
    a zero distance gets gradient 0 instead of NaN.
    """
    if a.dim() != 2:
        raise UserError(f"Received embeddings of shape {tuple(a.shape)}; expected (N, D).")
    if b is not None and (b.dim() != 2 or b.shape[1] != a.shape[1]):
        raise UserError(f"Received embeddings of shapes {tuple(a.shape)} and {tuple(b.shape)}; "
                        "expected (N, D) and (M, D) with the same D.")
    center = a.detach().mean(0) if a.shape[0] else 0.0
    x = a - center
    y = x if b is None else b - center
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    d2 = d2.clamp_min(0.0)
    if b is None:
        d2 = d2.masked_fill(torch.eye(len(a), dtype=torch.bool, device=a.device), 0.0)
    if squared:
        return d2
    zero = d2 == 0
    return torch.sqrt(d2.masked_fill(zero, 1.0)).masked_fill(zero, 0.0)


def _check_margin(margin: float) -> None:
    if margin < 0:
        raise UserError(f"Received margin={margin}; expected a margin >= 0.")


def contrastive_loss(d: Tensor, similar: Tensor, margin: float = 1.0) -> Tensor:
    """Mean over pairs of the contrastive loss (Hadsell et al. 2006),
    s * 1/2 d^2 + (1 - s) * 1/2 max(0, m - d)^2.

    ``d``: Euclidean distances of the pairs, (N,); ``similar``: s, bool or 0/1, (N,), True
    for a similar pair (Hadsell et al.'s Y = 0). A dissimilar pair at d >= m contributes
    zero loss and zero gradient.
    """
    _check_margin(margin)
    if d.shape != similar.shape or d.numel() == 0:
        raise UserError(f"Received distances of shape {tuple(d.shape)} and similar of shape "
                        f"{tuple(similar.shape)}; expected the same non-empty shape (N,).")
    if similar.dtype != torch.bool and not ((similar == 0) | (similar == 1)).all():
        raise UserError("Received similar with values other than 0 and 1; expected a bool or 0/1 "
                        "tensor, 1 for a similar pair.")
    s = similar.to(d.dtype)
    push = F.relu(margin - d)
    return (0.5 * s * d * d + 0.5 * (1.0 - s) * push * push).mean()


def triplet_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 0.2) -> Tensor:
    """Mean over triplets of the triplet loss on squared distances (FaceNet; survey eq. 7),
    1/2 max(0, m + ||a - p||^2 - ||a - n||^2). All three inputs are (N, D)."""
    _check_margin(margin)
    if anchor.dim() != 2 or anchor.shape != positive.shape or anchor.shape != negative.shape:
        raise UserError(f"Received anchor, positive and negative of shapes {tuple(anchor.shape)}, "
                        f"{tuple(positive.shape)} and {tuple(negative.shape)}; expected three (N, D).")
    d_ap = (anchor - positive).pow(2).sum(1)
    d_an = (anchor - negative).pow(2).sum(1)
    return (0.5 * F.relu(margin + d_ap - d_an)).mean()


def _random_choice(mask: Tensor, generator: torch.Generator | None) -> Tensor:
    """For each row of a bool mask, the column of one True entry drawn uniformly (argmax of
    uniform scores over the allowed entries); rows with no True entry give an arbitrary column."""
    device = generator.device if generator is not None else mask.device
    scores = torch.rand(mask.shape, generator=generator, device=device).to(mask.device)
    return scores.masked_fill(~mask, -1.0).argmax(1)


def _argmin_masked(dist: Tensor, mask: Tensor) -> Tensor:
    return dist.masked_fill(~mask, float("inf")).argmin(1)


def _argmax_masked(dist: Tensor, mask: Tensor) -> Tensor:
    return dist.masked_fill(~mask, float("-inf")).argmax(1)


def mine_pairs(dist: Tensor, positive: Tensor, negative: Tensor, miner: str = "all",
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Pairs (i, j) of a distance matrix (N, M) for the contrastive loss, with bool masks
    ``positive`` and ``negative`` (N, M) of the allowed similar and dissimilar pairs.

    "all": every allowed pair; "hard": per anchor row i, the hardest positive (largest
    distance) and the hardest negative (smallest distance); "random": per anchor, one
    positive and one negative drawn uniformly. An anchor without a positive (or a negative)
    contributes only the pair it has. Returns index tensors rows, cols and the bool similar.
    """
    if miner not in CONTRASTIVE_MINERS:
        raise UserError(f"Unknown miner {miner!r} for the contrastive loss; expected one of: "
                        f"{', '.join(CONTRASTIVE_MINERS)}.")
    if miner == "all":
        rows_p, cols_p = positive.nonzero(as_tuple=True)
        rows_n, cols_n = negative.nonzero(as_tuple=True)
    else:
        if miner == "hard":
            pos_col, neg_col = _argmax_masked(dist, positive), _argmin_masked(dist, negative)
        else:
            pos_col, neg_col = _random_choice(positive, generator), _random_choice(negative, generator)
        rows_p = positive.any(1).nonzero(as_tuple=True)[0]
        rows_n = negative.any(1).nonzero(as_tuple=True)[0]
        cols_p, cols_n = pos_col[rows_p], neg_col[rows_n]
    similar = torch.cat([torch.ones_like(rows_p, dtype=torch.bool), torch.zeros_like(rows_n, dtype=torch.bool)])
    return torch.cat([rows_p, rows_n]), torch.cat([cols_p, cols_n]), similar


def mine_triplets(dist: Tensor, positive: Tensor, negative: Tensor, miner: str = "semihard",
                  margin: float = 0.2, generator: torch.Generator | None = None
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Triplets (anchor i, positive j, negative k) of a squared-distance matrix ``dist``
    (N, M), with bool masks ``positive`` and ``negative`` (N, M); returns three index tensors.

    "all": every triplet with positive[i, j] and negative[i, k] (batch all).
    "random": for each positive pair (i, j), one negative of i drawn uniformly.
    "hard": for each positive pair, the hardest negative, smallest dist[i, k].
    "semihard" (FaceNet): for each positive pair, the negative with the smallest dist[i, k]
        among those farther than the positive, dist[i, j] < dist[i, k]. When the band
        dist[i, j] < dist[i, k] < dist[i, j] + m holds any negative, this is the hardest one
        in it; when the band is empty it is an easy negative whose loss is 0. When no
        negative is farther than the positive, fall back to the farthest negative (the
        easiest of the hard ones), as FaceNet's reference implementations do, rather than
        the hardest one, which FaceNet found leads to collapsed embeddings.
    "batch-hard" (Hermans, Beyer and Leibe 2017): per anchor, one triplet with the hardest
        positive (largest dist[i, j]) and the hardest negative (smallest dist[i, k]).
    Anchors with no negative (or no positive) give no triplet.
    """
    if miner not in MINERS:
        raise UserError(f"Unknown miner {miner!r}; expected one of: {', '.join(MINERS)}.")
    if miner == "all":
        valid = positive[:, :, None] & negative[:, None, :]
        return valid.nonzero(as_tuple=True)
    has_neg = negative.any(1)
    if miner == "batch-hard":
        anchors = (positive.any(1) & has_neg).nonzero(as_tuple=True)[0]
        return anchors, _argmax_masked(dist, positive)[anchors], _argmin_masked(dist, negative)[anchors]
    anchors, pos = (positive & has_neg[:, None]).nonzero(as_tuple=True)
    if miner == "hard":
        return anchors, pos, _argmin_masked(dist, negative)[anchors]
    neg_mask = negative[anchors]  # (P, M): the negatives of each pair's anchor
    if miner == "random":
        return anchors, pos, _random_choice(neg_mask, generator)
    row = dist[anchors]
    d_ap = dist[anchors, pos][:, None]
    outside = neg_mask & (row > d_ap)
    neg = torch.where(outside.any(1), _argmin_masked(row, outside), _argmax_masked(row, neg_mask))
    return anchors, pos, neg


def _label_list(labels: Tensor, limit: int = 16) -> str:
    values = labels.tolist()
    text = ", ".join(str(v) for v in values[:limit])
    return f"[{text}{', ...' if len(values) > limit else ''}]"


def _label_masks(labels_a: Tensor, emb_a: Tensor, emb_b: Tensor | None,
                 labels_b: Tensor | None) -> tuple[Tensor, Tensor, str, str]:
    """Masks (N, M) of same-label and allowed pairs, plus a description of the batch and its
    labels for error messages."""
    if emb_a.dim() != 2 or labels_a.shape != (emb_a.shape[0],):
        raise UserError(f"Received embeddings of shape {tuple(emb_a.shape)} and labels of shape "
                        f"{tuple(labels_a.shape)}; expected (N, D) and (N,).")
    if (emb_b is None) != (labels_b is None):
        raise UserError("Received only one of emb_b and labels_b; expected both (cross-domain) or neither.")
    if emb_b is None:
        same = labels_a[:, None] == labels_a[None, :]
        allowed = ~torch.eye(len(labels_a), dtype=torch.bool, device=labels_a.device)
        return same, allowed, f"batch of {len(labels_a)} images", f"labels {_label_list(labels_a)}"
    if emb_b.dim() != 2 or labels_b.shape != (emb_b.shape[0],):
        raise UserError(f"Received embeddings of shape {tuple(emb_b.shape)} and labels of shape "
                        f"{tuple(labels_b.shape)}; expected (M, D) and (M,).")
    same = labels_a[:, None] == labels_b[None, :]
    allowed = torch.ones_like(same)
    return (same, allowed, f"batch of {len(labels_a)} + {len(labels_b)} images",
            f"labels {_label_list(labels_a)} and {_label_list(labels_b)}")


def _check_pairs(positive: Tensor, negative: Tensor, batch: str, labels: str) -> None:
    if not positive.any():
        raise UserError(f"{batch} has no positive pair ({labels}): use a P x K sampler (--pk) "
                        "or a bigger batch.")
    if not negative.any():
        raise UserError(f"{batch} has no negative pair ({labels}): use a P x K sampler (--pk) "
                        "or a bigger batch.")


def batch_contrastive_loss(emb_a: Tensor, labels_a: Tensor, emb_b: Tensor | None = None,
                           labels_b: Tensor | None = None, margin: float = 1.0, miner: str = "all",
                           generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
    """The contrastive loss over the pairs of a labelled batch, on Euclidean distances.

    Within one set (``emb_b`` None) the pairs are i < j; across two sets (cross-domain,
    unshared branches) every (i in a, j in b), including i == j. A pair is similar when its
    labels are equal. ``miner`` is one of ``CONTRASTIVE_MINERS`` (see ``mine_pairs``; the
    hard and random miners take each image of a as an anchor against all others). The loss
    is the mean over the chosen pairs. Returns (loss, stats) with stats pairs (number of
    pairs), positives (similar pairs among them) and active (fraction with nonzero loss).
    A batch with no similar or no dissimilar pair is a UserError.
    """
    _check_margin(margin)
    if miner not in CONTRASTIVE_MINERS:
        raise UserError(f"Unknown miner {miner!r} for the contrastive loss; expected one of: "
                        f"{', '.join(CONTRASTIVE_MINERS)}.")
    same, allowed, batch, labels = _label_masks(labels_a, emb_a, emb_b, labels_b)
    if emb_b is None and miner == "all":
        allowed = allowed.triu()  # each unordered pair once
    positive, negative = same & allowed, ~same & allowed
    _check_pairs(positive, negative, batch, labels)
    dist = pairwise_distances(emb_a, emb_b)
    rows, cols, similar = mine_pairs(dist.detach(), positive, negative, miner, generator)
    d = dist[rows, cols]
    loss = contrastive_loss(d, similar, margin)
    with torch.no_grad():
        active = torch.where(similar, d > 0, d < margin)
    return loss, dict(pairs=len(d), positives=similar.sum(), active=active.float().mean())


def batch_triplet_loss(emb_a: Tensor, labels_a: Tensor, emb_b: Tensor | None = None,
                       labels_b: Tensor | None = None, margin: float = 0.2, miner: str = "semihard",
                       generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
    """The triplet loss over the triplets of a labelled batch, on squared distances.

    Anchors come from set a, positives and negatives from set b (b = a when ``emb_b`` is
    None, and then a positive is never the anchor itself). ``miner`` is one of ``MINERS``
    (see ``mine_triplets``). With "all" the loss is the mean over the triplets with positive
    loss (Hermans et al.'s batch all, BA != 0: averaging over every valid triplet would let
    the many easy ones wash the gradient out), and 0 when none is active; with the other
    miners it is the mean over the mined triplets. Returns (loss, stats) with stats
    triplets (number of triplets) and active (fraction with positive loss).
    A batch with no positive pair, no negative, or no anchor having both is a UserError.
    """
    _check_margin(margin)
    if miner not in MINERS:
        raise UserError(f"Unknown miner {miner!r}; expected one of: {', '.join(MINERS)}.")
    same, allowed, batch, labels = _label_masks(labels_a, emb_a, emb_b, labels_b)
    positive, negative = same & allowed, ~same & allowed
    _check_pairs(positive, negative, batch, labels)
    if not (positive.any(1) & negative.any(1)).any():
        raise UserError(f"{batch} has no valid triplet, no anchor with both a positive and a "
                        f"negative ({labels}): use a P x K sampler (--pk) or a bigger batch.")
    dist = pairwise_distances(emb_a, emb_b, squared=True)
    i, j, k = mine_triplets(dist.detach(), positive, negative, miner, margin, generator)
    losses = 0.5 * F.relu(margin + dist[i, j] - dist[i, k])
    active = losses.detach() > 0
    if miner == "all":
        loss = losses.sum() / active.sum().clamp_min(1)
    else:
        loss = losses.mean()
    return loss, dict(triplets=len(losses), active=active.float().mean())
