import math

import numpy as np
import pytest
import torch
from skimage.segmentation import find_boundaries
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassJaccardIndex

from fovea.apps.segmentation_metrics import SegmentationMetrics, class_boundaries, confusion_matrix
from fovea.errors import UserError

K = 4


def _batches(n_batches=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        target = torch.randint(0, K, (2, 16, 16), generator=g)
        noise = torch.randint(0, K, (2, 16, 16), generator=g)
        pred = torch.where(torch.rand(2, 16, 16, generator=g) < 0.6, target, noise)
        target[torch.rand(2, 16, 16, generator=g) < 0.1] = 255
        out.append((pred, target))
    return out


def test_confusion_matrix_matches_sklearn():
    pred, target = _batches(1)[0]
    keep = target != 255
    expected = sk_confusion_matrix(target[keep].numpy(), pred[keep].numpy(), labels=list(range(K)))
    assert np.array_equal(confusion_matrix(pred, target, K).numpy(), expected)


def test_accumulated_metrics_match_torchmetrics():
    metrics = SegmentationMetrics(K, boundary=False)
    acc = MulticlassAccuracy(K, average="micro", ignore_index=255)
    iou = MulticlassJaccardIndex(K, average=None, ignore_index=255)
    f1 = MulticlassF1Score(K, average=None, ignore_index=255, multidim_average="global")
    for pred, target in _batches():
        logits = torch.nn.functional.one_hot(pred, K).permute(0, 3, 1, 2).float()  # scores are accepted too
        metrics.update(logits, target)
        for m in (acc, iou, f1):
            m.update(pred, target)
    out = metrics.compute()
    assert out["pixel_accuracy"] == pytest.approx(acc.compute().item(), abs=1e-6)
    assert torch.allclose(out["iou"].float(), iou.compute(), atol=1e-6)
    assert torch.allclose(out["dice"].float(), f1.compute(), atol=1e-6)  # Dice is the pixel F1 score
    assert out["miou"] == pytest.approx(iou.compute().mean().item(), abs=1e-6)
    assert out["mdice"] == pytest.approx(f1.compute().mean().item(), abs=1e-6)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    target = torch.tensor([[[0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 1, 1, 1]]])
    out = SegmentationMetrics(3, boundary=False)
    out.update(pred, target)
    r = out.compute()
    assert r["iou"][0] == pytest.approx(0.5) and r["iou"][1] == pytest.approx(2 / 3)
    assert math.isnan(r["iou"][2])
    assert r["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert r["dice"][0] == pytest.approx(2 / 3) and r["dice"][1] == pytest.approx(0.8)
    assert r["pixel_accuracy"] == pytest.approx(0.75)


def test_class_boundaries_match_skimage():
    labels = torch.randint(0, K, (2, 12, 12), generator=torch.Generator().manual_seed(3))
    labels = labels.repeat_interleave(2, 1)  # some regions larger than a pixel
    ours = class_boundaries(labels, K)
    for i in range(2):
        inner = find_boundaries(labels[i].numpy() + 1, mode="inner", connectivity=1)  # skimage: 0 is background
        for k in range(K):
            assert np.array_equal(ours[i, k].numpy(), inner & (labels[i].numpy() == k))


def _squares(shift):
    x = torch.zeros(1, 8, 8, dtype=torch.long)
    x[0, 2:6, 2 + shift:6 + shift] = 1
    return x


def test_bf_score_hand_worked_example():
    # true: a 4x4 square at rows 2-5, cols 2-5; predicted: the same square one column to the right.
    # Class 1: both boundaries are 12-pixel rings; exactly the top and bottom rows' 3 shared pixels
    # coincide: P = R = 6/12, BF = 0.5. Class 0: both boundaries are 16 pixels (4-neighbours of the
    # square); 6 coincide (rows 1 and 6, cols 3-5): P = R = 6/16, BF = 0.375.
    m = SegmentationMetrics(2, bf_tolerance=0)
    m.update(_squares(1), _squares(0))
    r = m.compute()
    assert r["bf"][0].item() == pytest.approx(0.375)
    assert r["bf"][1].item() == pytest.approx(0.5)
    assert r["mbf"] == pytest.approx(0.4375)
    # with a 1-pixel tolerance every boundary pixel has a partner: BF = 1 for both classes
    m = SegmentationMetrics(2, bf_tolerance=1)
    m.update(_squares(1), _squares(0))
    assert m.compute()["mbf"] == pytest.approx(1.0)
    # a second image where the prediction misses the square entirely: class 1 gets F = 0 there
    m = SegmentationMetrics(2, bf_tolerance=1)
    m.update(torch.cat([_squares(1), torch.zeros(1, 8, 8, dtype=torch.long)]), torch.cat([_squares(0)] * 2))
    r = m.compute()
    assert r["bf"][1].item() == pytest.approx(0.5)  # mean of 1 and 0 over the two images


def test_perfect_prediction_scores_one():
    pred, target = _batches(1)[0]
    pred = torch.where(target == 255, pred, target)
    m = SegmentationMetrics(K)
    m.update(pred, target)
    r = m.compute()
    for key in ("pixel_accuracy", "miou", "mdice", "mbf"):
        assert r[key] == pytest.approx(1.0)
    m.reset()
    m.update((pred + 1) % K, target)
    assert m.compute()["pixel_accuracy"] == 0.0


def test_bad_input():
    with pytest.raises(UserError):
        SegmentationMetrics(1)
    m = SegmentationMetrics(3)
    with pytest.raises(UserError):
        m.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(UserError):
        m.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.full((1, 4, 4), 3))
