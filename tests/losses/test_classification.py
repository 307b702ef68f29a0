import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import UserError
from fovea.losses import (
    LOSSES,
    LabelSmoothingCrossEntropy,
    MulticlassHinge,
    build_loss,
    l2_regularization,
)


def _batch(n=6, k=5):
    return torch.randn(n, k, dtype=torch.float64), torch.randint(0, k, (n,))


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.3, 1.0])
def test_label_smoothing_equals_torch(gamma):
    logits, y = _batch()
    got = LabelSmoothingCrossEntropy(gamma)(logits, y)
    torch.testing.assert_close(got, F.cross_entropy(logits, y, label_smoothing=gamma))


def test_label_smoothing_equals_explicit_formula():
    gamma = 0.1
    logits, y = _batch(n=4, k=3)
    k = logits.shape[1]
    q = F.one_hot(y, k).double()
    q_smooth = (1 - gamma) * q + gamma / k  # uniform prior u(k) = 1/K
    expected = -(q_smooth * torch.log(torch.softmax(logits, 1))).sum(1).mean()
    torch.testing.assert_close(LabelSmoothingCrossEntropy(gamma)(logits, y), expected)


def test_hinge_worked_example():
    # scores for the classes (cat, car, frog), the true class is cat:
    # max(0, 5.1 - 3.2 + 1) + max(0, -1.7 - 3.2 + 1) = 2.9 + 0
    scores = torch.tensor([[3.2, 5.1, -1.7]])
    y = torch.tensor([0])
    torch.testing.assert_close(MulticlassHinge(1.0)(scores, y), torch.tensor(2.9))
    torch.testing.assert_close(MulticlassHinge(1.0, squared=True)(scores, y), torch.tensor(2.9 ** 2))


def test_hinge_worked_batch_mean():
    scores = torch.tensor([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])
    y = torch.tensor([0, 1, 2])
    # per-example losses 2.9, 0, 12.9 -> mean 5.27
    torch.testing.assert_close(MulticlassHinge(1.0)(scores, y), torch.tensor((2.9 + 0.0 + 12.9) / 3))


@pytest.mark.parametrize("margin", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("squared,p", [(False, 1), (True, 2)])
def test_hinge_equals_multimargin_times_k(margin, squared, p):
    logits, y = _batch(n=8, k=7)
    got = MulticlassHinge(margin, squared=squared)(logits, y)
    expected = nn.MultiMarginLoss(p=p, margin=margin)(logits, y) * logits.shape[1]
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("name", LOSSES)
def test_build_loss_gradients_finite(name):
    logits = (torch.randn(5, 4) * 10).requires_grad_()
    y = torch.randint(0, 4, (5,))
    loss = build_loss(name)(logits, y)
    assert loss.ndim == 0
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_hinge_gradient_matches_multimargin():
    logits, y = _batch(n=5, k=4)
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    MulticlassHinge(1.0, squared=True)(a, y).backward()
    (nn.MultiMarginLoss(p=2)(b, y) * 4).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_build_loss_kinds_and_settings():
    assert isinstance(build_loss("ce"), nn.CrossEntropyLoss)
    assert build_loss("label-smoothing", smoothing=0.2).smoothing == 0.2
    h = build_loss("squared-hinge", margin=2.0)
    assert isinstance(h, MulticlassHinge) and h.squared and h.margin == 2.0


def test_unknown_loss_names_value_and_choices():
    with pytest.raises(UserError, match=r"'nope'.*label-smoothing"):
        build_loss("nope")
    with pytest.raises(UserError, match="smoothing=1.5"):
        LabelSmoothingCrossEntropy(1.5)


def test_l2_regularization_gradient_is_weight_decay_2lambda():
    w = torch.randn(3, 4, requires_grad=True)
    lam = 0.01
    penalty = l2_regularization([w], lam)
    torch.testing.assert_close(penalty, lam * (w ** 2).sum())
    penalty.backward()
    torch.testing.assert_close(w.grad, 2 * lam * w.detach())
