"""Metric-learning losses against direct NumPy (float64) evaluations of their formulas and
of their analytic gradients, the margin edge cases, and the miners on hand-made 1-D
embeddings whose answers are known."""

import itertools

import numpy as np
import pytest
import torch

from fovea.errors import UserError
from fovea.losses.metric import (
    CONTRASTIVE_MINERS,
    METRIC_LOSSES,
    MINERS,
    batch_contrastive_loss,
    batch_triplet_loss,
    contrastive_loss,
    mine_pairs,
    mine_triplets,
    pairwise_distances,
    triplet_loss,
)


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


def _leaf(x):
    return _t(x).requires_grad_()


def _np_dist(a, b):
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


# ---- NumPy references: loss and analytic gradients w.r.t. the embeddings of both sets ----

def _np_contrastive(xa, xb, pairs, m):
    """pairs: (i, j, s). Mean of s 1/2 D^2 + (1 - s) 1/2 max(0, m - D)^2 with
    D = ||a_i - b_j||; dL/da_i = [s D - (1 - s) max(0, m - D)] (a_i - b_j) / D."""
    ga, gb, total = np.zeros_like(xa), np.zeros_like(xb), 0.0
    for i, j, s in pairs:
        diff = xa[i] - xb[j]
        d = np.linalg.norm(diff)
        push = max(0.0, m - d)
        total += 0.5 * s * d * d + 0.5 * (1 - s) * push * push
        # s D (a_i - b_j) / D = s (a_i - b_j); a dissimilar pair at D = 0 has no direction
        g = s * diff - (1 - s) * push * diff / d if d > 0 else s * diff
        ga[i] += g
        gb[j] -= g
    n = len(pairs)
    return total / n, ga / n, gb / n


def _np_triplet(xa, xb, triplets, m, over_active=False):
    """Mean of 1/2 max(0, m + |a_i - b_j|^2 - |a_i - b_k|^2), over all triplets or over the
    active ones; for an active triplet dL/da_i = b_k - b_j, dL/db_j = b_j - a_i,
    dL/db_k = a_i - b_k."""
    ga, gb, total, active = np.zeros_like(xa), np.zeros_like(xb), 0.0, 0
    for i, j, k in triplets:
        z = m + ((xa[i] - xb[j]) ** 2).sum() - ((xa[i] - xb[k]) ** 2).sum()
        if z > 0:
            active += 1
            total += 0.5 * z
            ga[i] += xb[k] - xb[j]
            gb[j] += xb[j] - xa[i]
            gb[k] += xa[i] - xb[k]
    n = max(active, 1) if over_active else len(triplets)
    return total / n, ga / n, gb / n


def _all_triplets(la, lb, within):
    return [(i, j, k) for i in range(len(la)) for j in range(len(lb)) for k in range(len(lb))
            if la[i] == lb[j] and la[i] != lb[k] and not (within and i == j)]


# ---- pairwise distances ----

@pytest.mark.parametrize("squared", [False, True])
def test_pairwise_distances_match_numpy(squared):
    a, b = np.random.default_rng(0).normal(size=(2, 6, 4)) * 3 + 5
    p = 2 if squared else 1
    assert np.allclose(pairwise_distances(_t(a), _t(b), squared).numpy(), _np_dist(a, b) ** p, rtol=1e-9)
    within = pairwise_distances(_t(a), squared=squared)
    assert np.allclose(within.numpy(), _np_dist(a, a) ** p, rtol=1e-9, atol=1e-12)
    assert (within.diagonal() == 0).all()


def test_pairwise_distance_gradient_matches_numpy():
    rng = np.random.default_rng(1)
    a, b, w = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)), rng.normal(size=(5, 4))
    ta, tb = _leaf(a), _leaf(b)
    (pairwise_distances(ta, tb) * _t(w)).sum().backward()
    unit = (a[:, None] - b[None]) / _np_dist(a, b)[..., None]  # d D_ij / d a_i
    assert np.allclose(ta.grad.numpy(), (w[..., None] * unit).sum(1), rtol=1e-8)
    assert np.allclose(tb.grad.numpy(), -(w[..., None] * unit).sum(0), rtol=1e-8)
    # within one set, D_ij depends on a_i and a_j: dL/da_i = sum_j (W_ij + W_ji) (a_i - a_j) / D_ij
    w = rng.normal(size=(5, 5))
    ta = _leaf(a)
    (pairwise_distances(ta, squared=True) * _t(w)).sum().backward()
    expected = ((w + w.T)[..., None] * 2 * (a[:, None] - a[None])).sum(1)
    assert np.allclose(ta.grad.numpy(), expected, rtol=1e-8)


def test_pairwise_distances_gradcheck():
    a, b = torch.randn(4, 3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(pairwise_distances, (a.requires_grad_(), b.requires_grad_()))


def test_round_off_never_gives_negative_or_nan_distances():
    x = torch.randn(64, 16) * 10
    x[1::2] = x[::2]  # float32 duplicates: x.x + y.y - 2 x.y rounds to either side of 0
    x.requires_grad_()
    for squared in (False, True):
        d = pairwise_distances(x, squared=squared)
        d.sum().backward()
        assert (d >= 0).all() and torch.isfinite(x.grad).all()
        assert d[torch.arange(0, 64, 2), torch.arange(1, 64, 2)].abs().max() < 0.1


def test_float32_distances_far_from_the_origin_are_accurate():
    x = torch.randn(8, 4) + 1000.0  # a common offset must not cost precision
    expected = _np_dist(x.double().numpy(), x.double().numpy())
    assert np.allclose(pairwise_distances(x).numpy(), expected, atol=1e-3)


def test_zero_distance_gives_finite_gradient():
    x = _leaf([[1.0, 2.0], [1.0, 2.0], [0.0, -1.0]])  # rows 0 and 1 coincide
    d = pairwise_distances(x)
    assert d[0, 1] == 0 and d[1, 0] == 0
    d.sum().backward()
    assert torch.isfinite(x.grad).all()
    # a coinciding dissimilar pair: loss m^2 / 2, finite gradients through both losses
    for loss_fn in (batch_contrastive_loss, batch_triplet_loss):
        x = _leaf([[1.0, 2.0], [1.0, 2.0], [0.0, -1.0], [0.5, 0.5]])
        loss, _ = loss_fn(x, torch.tensor([0, 1, 0, 1]), miner="all")
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


# ---- contrastive loss ----

def test_contrastive_loss_and_gradient_match_numpy():
    rng = np.random.default_rng(2)
    d, s = rng.uniform(0, 2, size=12), rng.integers(0, 2, size=12)
    td = _leaf(d)
    loss = contrastive_loss(td, torch.tensor(s, dtype=torch.bool), margin=1.3)
    loss.backward()
    push = np.maximum(0, 1.3 - d)
    assert loss.item() == pytest.approx(np.mean(0.5 * s * d**2 + 0.5 * (1 - s) * push**2), rel=1e-12)
    assert np.allclose(td.grad.numpy(), (s * d - (1 - s) * push) / 12, rtol=1e-12)
    # 0/1 integers mean the same as bools
    assert contrastive_loss(_t(d), torch.tensor(s), 1.3).item() == pytest.approx(loss.item(), rel=1e-12)


def test_contrastive_similar_pairs_are_pulled_dissimilar_pushed():
    d = _leaf([0.0, 0.5, 1.0, 2.0])
    loss = contrastive_loss(d, torch.ones(4, dtype=torch.bool), margin=1.0)
    loss.backward()
    assert loss.item() == pytest.approx((0 + 0.125 + 0.5 + 2.0) / 4)  # grows with d
    assert (d.grad[1:] > 0).all() and d.grad[0] == 0  # descent shrinks d
    d = _leaf([0.0, 0.5])
    contrastive_loss(d, torch.zeros(2, dtype=torch.bool), margin=1.0).backward()
    assert (d.grad < 0).all()  # descent grows d


def test_contrastive_margin_edges():
    # a dissimilar pair exactly at the margin, or beyond it: zero loss and zero gradient
    for value in (1.5, 1.5000001, 4.0):
        d = _leaf([value])
        loss = contrastive_loss(d, torch.tensor([False]), margin=1.5)
        loss.backward()
        assert loss.item() == 0 and d.grad.item() == 0
    d = _leaf([1.4])
    loss = contrastive_loss(d, torch.tensor([False]), margin=1.5)
    loss.backward()
    assert loss.item() == pytest.approx(0.5 * 0.1**2) and d.grad.item() == pytest.approx(-0.1)


def test_batch_contrastive_all_matches_numpy():
    rng = np.random.default_rng(3)
    x, labels = rng.normal(size=(6, 3)), [0, 0, 1, 1, 1, 2]
    tx = _leaf(x)
    loss, stats = batch_contrastive_loss(tx, torch.tensor(labels), margin=2.0)
    loss.backward()
    pairs = [(i, j, int(labels[i] == labels[j])) for i, j in itertools.combinations(range(6), 2)]
    value, ga, gb = _np_contrastive(x, x, pairs, 2.0)
    assert loss.item() == pytest.approx(value, rel=1e-9)
    assert np.allclose(tx.grad.numpy(), ga + gb, rtol=1e-8)
    assert stats["pairs"] == 15 and stats["positives"] == 4


def test_batch_contrastive_cross_domain_counts_i_equal_j():
    rng = np.random.default_rng(4)
    xa, xb = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    la, lb = [0, 1, 2], [0, 1, 1]
    ta, tb = _leaf(xa), _leaf(xb)
    loss, stats = batch_contrastive_loss(ta, torch.tensor(la), tb, torch.tensor(lb), margin=1.0)
    loss.backward()
    pairs = [(i, j, int(la[i] == lb[j])) for i in range(3) for j in range(3)]
    value, ga, gb = _np_contrastive(xa, xb, pairs, 1.0)
    assert loss.item() == pytest.approx(value, rel=1e-9)
    assert np.allclose(ta.grad.numpy(), ga, rtol=1e-8) and np.allclose(tb.grad.numpy(), gb, rtol=1e-8)
    assert stats["pairs"] == 9 and stats["positives"] == 3  # (0, 0), (1, 1), (1, 2)


def test_contrastive_miners_on_a_line():
    # one anchor at 0; positives at 0.3 and 1.0, negatives at -0.5 and 2.0
    a, b = _t([[0.0]]), _t([[0.3], [1.0], [-0.5], [2.0]])
    la, lb = torch.tensor([0]), torch.tensor([0, 0, 1, 1])
    pos, neg = la[:, None] == lb[None], la[:, None] != lb[None]
    rows, cols, similar = mine_pairs(pairwise_distances(a, b), pos, neg, "hard")
    assert cols.tolist() == [1, 2] and similar.tolist() == [True, False] and rows.tolist() == [0, 0]
    loss, stats = batch_contrastive_loss(a, la, b, lb, margin=1.0, miner="hard")
    assert loss.item() == pytest.approx((0.5 * 1.0 + 0.5 * 0.5**2) / 2)
    assert stats == dict(pairs=2, positives=1, active=1.0)
    seen = set()
    for seed in range(20):
        rows, cols, similar = mine_pairs(pairwise_distances(a, b), pos, neg, "random",
                                         torch.Generator().manual_seed(seed))
        assert cols[similar].item() in (0, 1) and cols[~similar].item() in (2, 3)
        seen.update(cols.tolist())
    assert seen == {0, 1, 2, 3}


def test_contrastive_hard_miner_within_one_set():
    x = _t([[0.0], [1.0], [3.0], [0.4], [2.5]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    same = labels[:, None] == labels[None]
    eye = torch.eye(5, dtype=torch.bool)
    rows, cols, similar = mine_pairs(pairwise_distances(x), same & ~eye, ~same, "hard")
    hardest_pos = {r: c for r, c, s in zip(rows.tolist(), cols.tolist(), similar.tolist()) if s}
    hardest_neg = {r: c for r, c, s in zip(rows.tolist(), cols.tolist(), similar.tolist()) if not s}
    assert hardest_pos == {0: 2, 1: 2, 2: 0, 3: 4, 4: 3}
    assert hardest_neg == {0: 3, 1: 3, 2: 4, 3: 0, 4: 2}


# ---- triplet loss ----

def test_triplet_loss_and_gradient_match_numpy():
    rng = np.random.default_rng(5)
    a, p, n = rng.normal(size=(3, 10, 4)) * 0.4
    ta, tp, tn = _leaf(a), _leaf(p), _leaf(n)
    loss = triplet_loss(ta, tp, tn, margin=0.3)
    loss.backward()
    z = 0.3 + ((a - p) ** 2).sum(1) - ((a - n) ** 2).sum(1)
    active = (z > 0)[:, None]
    assert 0 < active.sum() < 10  # both sides of the hinge are exercised
    assert loss.item() == pytest.approx(np.mean(0.5 * np.maximum(z, 0)), rel=1e-12)
    assert np.allclose(ta.grad.numpy(), active * (n - p) / 10, rtol=1e-12)
    assert np.allclose(tp.grad.numpy(), active * (p - a) / 10, rtol=1e-12)
    assert np.allclose(tn.grad.numpy(), active * (a - n) / 10, rtol=1e-12)


def test_triplet_exactly_on_the_margin():
    # ||a - n||^2 - ||a - p||^2 = 4 - 1 = 3 = m: on the margin, loss 0 and gradient 0
    a, p, n = _leaf([[0.0]]), _leaf([[1.0]]), _leaf([[2.0]])
    loss = triplet_loss(a, p, n, margin=3.0)
    loss.backward()
    assert loss.item() == 0 and a.grad.item() == 0 and p.grad.item() == 0 and n.grad.item() == 0
    assert triplet_loss(a, p, n, margin=3.5).item() == pytest.approx(0.25)


@pytest.mark.parametrize("cross", [False, True])
def test_batch_triplet_all_matches_numpy(cross):
    rng = np.random.default_rng(6)
    xa, xb = rng.normal(size=(2, 6, 3)) * 0.5
    la, lb = [0, 0, 1, 1, 2, 2], [0, 1, 1, 2, 2, 2]
    ta = _leaf(xa)
    if cross:
        tb = _leaf(xb)
        loss, stats = batch_triplet_loss(ta, torch.tensor(la), tb, torch.tensor(lb), margin=0.5, miner="all")
    else:
        loss, stats = batch_triplet_loss(ta, torch.tensor(la), margin=0.5, miner="all")
        xb, lb = xa, la
    loss.backward()
    triplets = _all_triplets(la, lb, within=not cross)
    value, ga, gb = _np_triplet(xa, xb, triplets, 0.5, over_active=True)
    n_active = sum(0.5 + ((xa[i] - xb[j]) ** 2).sum() - ((xa[i] - xb[k]) ** 2).sum() > 0 for i, j, k in triplets)
    assert 0 < n_active < len(triplets)
    assert stats["triplets"] == len(triplets) and stats["active"] == pytest.approx(n_active / len(triplets))
    assert loss.item() == pytest.approx(value, rel=1e-9)
    if cross:
        assert np.allclose(ta.grad.numpy(), ga, rtol=1e-8) and np.allclose(tb.grad.numpy(), gb, rtol=1e-8)
    else:
        assert np.allclose(ta.grad.numpy(), ga + gb, rtol=1e-8)


def test_cross_domain_triplets_use_i_equal_j_as_positive():
    la, lb = torch.tensor([0, 1]), torch.tensor([0, 1])
    a, b = torch.zeros(2, 1), torch.ones(2, 1)
    _, stats = batch_triplet_loss(a, la, b, lb, miner="all")
    assert stats["triplets"] == 2  # (0, 0, 1) and (1, 1, 0)
    with pytest.raises(UserError, match="no positive pair"):
        batch_triplet_loss(a, la, miner="all")  # within one set, i == j is no pair


def _line_case():
    """One anchor at 0 (label 0) against a set: a positive at 1 (d^2 = 1), a hard negative at
    -0.5 (0.25), semi-hard ones at 1.2 (1.44) and -1.3 (1.69), an easy one at 3 (9); m = 1."""
    a = _t([[0.0]])
    b = _t([[1.0], [-0.5], [1.2], [-1.3], [3.0]])
    return a, torch.tensor([0]), b, torch.tensor([0, 1, 1, 1, 1])


def _mine(a, la, b, lb, miner, margin=1.0, generator=None):
    pos, neg = la[:, None] == lb[None], la[:, None] != lb[None]
    d2 = pairwise_distances(a, b, squared=True)
    return [t.tolist() for t in mine_triplets(d2, pos, neg, miner, margin, generator)]


def test_triplet_miners_on_a_line():
    a, la, b, lb = _line_case()
    assert _mine(a, la, b, lb, "hard") == [[0], [0], [1]]
    assert _mine(a, la, b, lb, "semihard") == [[0], [0], [2]]  # hardest in the band (1, 2)
    assert _mine(a, la, b, lb, "batch-hard") == [[0], [0], [1]]
    assert _mine(a, la, b, lb, "all") == [[0] * 4, [0] * 4, [1, 2, 3, 4]]
    picks = {_mine(a, la, b, lb, "random", generator=torch.Generator().manual_seed(s))[2][0] for s in range(30)}
    assert picks == {1, 2, 3, 4}
    expected = {"hard": 0.5 * (2 - 0.25), "semihard": 0.5 * (2 - 1.44), "batch-hard": 0.5 * (2 - 0.25)}
    for miner, value in expected.items():
        loss, stats = batch_triplet_loss(a, la, b, lb, margin=1.0, miner=miner)
        assert loss.item() == pytest.approx(value) and stats == dict(triplets=1, active=1.0)
    loss, stats = batch_triplet_loss(a, la, b, lb, margin=1.0, miner="all")
    assert loss.item() == pytest.approx((0.5 * 1.75 + 0.5 * 0.56 + 0.5 * 0.31) / 3)  # mean over active
    assert stats == dict(triplets=4, active=0.75)
    g = torch.Generator().manual_seed(0)
    assert batch_triplet_loss(a, la, b, lb, miner="random", generator=g)[0].item() == pytest.approx(
        batch_triplet_loss(a, la, b, lb, miner="random", generator=torch.Generator().manual_seed(0))[0].item())


def test_semihard_picks_per_positive_pair_and_falls_back():
    a, la = _t([[0.0]]), torch.tensor([0])
    # two positives at d^2 = 1 and 4; bands (1, 2) and (4, 5) hold 1.44 and 4.41
    b, lb = _t([[1.0], [2.0], [1.2], [-2.1], [0.1]]), torch.tensor([0, 0, 1, 1, 1])
    assert _mine(a, la, b, lb, "semihard") == [[0, 0], [0, 1], [2, 3]]
    # empty band: the nearest negative beyond the positive (d^2 = 4), whose loss is 0
    b, lb = _t([[1.0], [-0.5], [3.0], [2.0]]), torch.tensor([0, 1, 1, 1])
    assert _mine(a, la, b, lb, "semihard") == [[0], [0], [3]]
    assert batch_triplet_loss(a, la, b, lb, margin=1.0, miner="semihard")[1]["active"] == 0
    # no negative beyond the positive (d^2 = 4): the farthest of the closer ones (d^2 = 2.25)
    b, lb = _t([[2.0], [0.5], [-1.5], [1.0]]), torch.tensor([0, 1, 1, 1])
    assert _mine(a, la, b, lb, "semihard") == [[0], [0], [2]]


def test_batch_hard_within_one_set():
    x = _t([[0.0], [1.0], [3.0], [0.4], [2.5], [6.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    same = labels[:, None] == labels[None]
    pos = same & ~torch.eye(6, dtype=torch.bool)
    anchors, p, n = _mine_masks(x, pos, ~same, "batch-hard")
    # anchor 0 at 0: farthest positive 3.0 (index 2), nearest negative 0.4 (index 3)
    assert (anchors[0], p[0], n[0]) == (0, 2, 3)
    d = _np_dist(x.numpy(), x.numpy())
    assert p == [max((j for j in range(6) if pos[i, j]), key=lambda j: d[i, j]) for i in range(6)]
    assert n == [min((j for j in range(6) if not same[i, j]), key=lambda j: d[i, j]) for i in range(6)]
    # "hard" keeps every positive pair: 6 anchors x 2 positives
    assert len(_mine_masks(x, pos, ~same, "hard")[0]) == 12


def _mine_masks(x, pos, neg, miner):
    return [t.tolist() for t in mine_triplets(pairwise_distances(x, squared=True), pos, neg, miner, 1.0)]


def _np_mined(x, labels, miner):
    """The triplets a miner should choose, written out with loops over squared distances."""
    d2 = _np_dist(x, x) ** 2
    n = range(len(labels))
    out = []
    for i in n:
        pos = [j for j in n if j != i and labels[j] == labels[i]]
        neg = [k for k in n if labels[k] != labels[i]]
        if miner == "batch-hard":
            out.append((i, max(pos, key=lambda j: d2[i, j]), min(neg, key=lambda k: d2[i, k])))
        for j in pos if miner != "batch-hard" else []:
            farther = [k for k in neg if d2[i, k] > d2[i, j]]
            if miner == "hard":
                out.append((i, j, min(neg, key=lambda k: d2[i, k])))
            elif farther:  # semihard
                out.append((i, j, min(farther, key=lambda k: d2[i, k])))
            else:
                out.append((i, j, max(neg, key=lambda k: d2[i, k])))
    return out


@pytest.mark.parametrize("miner", ["hard", "semihard", "batch-hard", "random"])
def test_mined_triplet_loss_matches_numpy(miner):
    rng = np.random.default_rng(7)
    x, labels = rng.normal(size=(9, 3)), [0, 0, 0, 1, 1, 2, 2, 3, 3]
    tx, tl = _leaf(x), torch.tensor(labels)
    loss, stats = batch_triplet_loss(tx, tl, margin=1.0, miner=miner, generator=torch.Generator().manual_seed(0))
    loss.backward()
    same = tl[:, None] == tl[None]
    mined = mine_triplets(pairwise_distances(_t(x), squared=True), same & ~torch.eye(9, dtype=torch.bool), ~same,
                          miner, 1.0, torch.Generator().manual_seed(0))
    triplets = [tuple(t) for t in torch.stack(mined, 1).tolist()]
    if miner == "random":
        assert all(labels[i] == labels[j] != labels[k] and i != j for i, j, k in triplets)
        assert len(triplets) == 12  # one per ordered positive pair
    else:
        assert sorted(triplets) == sorted(_np_mined(x, labels, miner))
    assert stats["triplets"] == len(triplets)
    value, ga, gb = _np_triplet(x, x, triplets, 1.0)
    assert loss.item() == pytest.approx(value, rel=1e-9)
    assert np.allclose(tx.grad.numpy(), ga + gb, rtol=1e-8, atol=1e-12)


def test_batch_losses_gradcheck():
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda e: batch_triplet_loss(e, labels, margin=1.0, miner="batch-hard")[0], (x,))
    assert torch.autograd.gradcheck(lambda e: batch_contrastive_loss(e, labels, margin=2.0, miner="hard")[0], (x,))


# ---- errors ----

def test_batch_without_positive_pair_is_reported():
    x = torch.randn(4, 2)
    for loss_fn in (batch_triplet_loss, batch_contrastive_loss):
        with pytest.raises(UserError, match=r"batch of 4 images has no positive pair \(labels \[0, 1, 2, 3\]\): "
                                            r"use a P x K sampler \(--pk\) or a bigger batch"):
            loss_fn(x, torch.tensor([0, 1, 2, 3]))
        with pytest.raises(UserError, match="batch of 4 \\+ 2 images has no positive pair"):
            loss_fn(x, torch.tensor([0, 1, 0, 1]), torch.randn(2, 2), torch.tensor([2, 3]))
        with pytest.raises(UserError, match="batch of 4 images has no negative pair"):
            loss_fn(x, torch.tensor([5, 5, 5, 5]))
    # cross-domain: positives and negatives exist, but no anchor has both
    with pytest.raises(UserError, match="no valid triplet"):
        batch_triplet_loss(x[:2], torch.tensor([0, 1]), x[2:], torch.tensor([0, 0]))


def test_bad_arguments_are_reported():
    x, labels = torch.randn(4, 2), torch.tensor([0, 0, 1, 1])
    with pytest.raises(UserError, match="Unknown miner 'semi'"):
        batch_triplet_loss(x, labels, miner="semi")
    with pytest.raises(UserError, match="Unknown miner 'semihard' for the contrastive loss"):
        batch_contrastive_loss(x, labels, miner="semihard")
    with pytest.raises(UserError, match="margin=-1"):
        batch_triplet_loss(x, labels, margin=-1)
    with pytest.raises(UserError, match=r"labels of shape \(3,\)"):
        batch_triplet_loss(x, labels[:3])
    with pytest.raises(UserError, match="only one of emb_b and labels_b"):
        batch_contrastive_loss(x, labels, emb_b=x)
    with pytest.raises(UserError, match=r"\(4, 2\) and \(4, 3\)"):
        pairwise_distances(x, torch.randn(4, 3))
    with pytest.raises(UserError, match="values other than 0 and 1"):
        contrastive_loss(torch.ones(2), torch.tensor([0, 2]))
    with pytest.raises(UserError, match="three"):
        triplet_loss(x, x, x[:3])
    assert MINERS == ("all", "random", "hard", "semihard", "batch-hard")
    assert METRIC_LOSSES == ("contrastive", "triplet") and set(CONTRASTIVE_MINERS) <= set(MINERS)
