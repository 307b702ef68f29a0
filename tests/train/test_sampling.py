"""P x K ordering: block structure, determinism, coverage, small classes and bad arguments."""

import random
from collections import Counter

import pytest
import torch

from fovea.errors import UserError
from fovea.train.sampling import _Cycle, pk_order

SIZES = (9, 6, 5, 4, 3, 2, 1)  # classes 0..6, interleaved; classes 5 and 6 have fewer than k = 3
LABELS = torch.tensor([c for n in range(max(SIZES)) for c in range(len(SIZES)) if n < SIZES[c]])


def _blocks(order, p, k):
    assert len(order) % (p * k) == 0
    return order.view(-1, p * k)


@pytest.mark.parametrize("p,k", [(3, 2), (2, 4), (7, 3)])
def test_every_block_holds_p_classes_of_k_images(p, k):
    order = pk_order(LABELS, p, k, seed=0, epoch=0)
    assert order.dtype == torch.int64
    blocks = _blocks(order, p, k)
    assert len(blocks) == max(1, len(LABELS) // (p * k))
    for block in blocks:
        counts = Counter(LABELS[block].tolist())
        assert len(counts) == p and set(counts.values()) == {k}
        for c in counts:
            members = block[LABELS[block] == c].tolist()
            if (LABELS == c).sum() >= k:  # without replacement within the class
                assert len(set(members)) == k
            else:  # all of its images, then repeats
                assert set(members) == set((LABELS == c).nonzero().flatten().tolist())


def test_deterministic_and_epochs_differ():
    first = pk_order(LABELS, 3, 2, seed=5, epoch=0)
    assert torch.equal(first, pk_order(LABELS, 3, 2, seed=5, epoch=0))
    assert not torch.equal(first, pk_order(LABELS, 3, 2, seed=5, epoch=1))
    assert not torch.equal(first, pk_order(LABELS, 3, 2, seed=6, epoch=0))


def test_classes_and_images_take_turns():
    labels = torch.arange(10).repeat_interleave(6)  # 10 classes x 6 images
    order = pk_order(labels, 2, 3, seed=1, epoch=0)
    assert len(order) == 60
    # each class is drawn twice and each image once per epoch: the epoch covers the data
    assert set(Counter(labels[order].tolist()).values()) == {6}
    assert sorted(order.tolist()) == list(range(60))


def test_cycle_draws_are_distinct_and_cover_items_evenly():
    cycle = _Cycle(list(range(5)), random.Random(0))
    draws = [cycle.draw(2) for _ in range(50)]  # 2 does not divide 5: draws cross reshuffles
    assert all(len(set(d)) == 2 for d in draws)
    flat = [x for d in draws for x in d]
    assert all(sorted(flat[i:i + 5]) == list(range(5)) for i in range(0, 100, 5))


def test_bad_arguments_are_reported():
    with pytest.raises(UserError, match="p=8 classes per batch, but the labels hold 7"):
        pk_order(LABELS, 8, 2, seed=0, epoch=0)
    with pytest.raises(UserError, match="k=1"):
        pk_order(LABELS, 2, 1, seed=0, epoch=0)
    with pytest.raises(UserError, match="p=0"):
        pk_order(LABELS, 0, 2, seed=0, epoch=0)
    with pytest.raises(UserError, match=r"shape \(2, 15\)"):
        pk_order(LABELS[:30].view(2, 15), 2, 2, seed=0, epoch=0)
