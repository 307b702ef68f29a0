"""Adversarial examples on Fashion-MNIST (bench/adversarial.py): FGSM at eps 0.1 costs a fovea CNN
>= 50 points of accuracy, PGD at least as much, adversarial training buys back >= 20 points under
FGSM, and noise grows into a >= 99%-confident fooling image of every class."""

import pytest

from benchrun import run_bench


@pytest.mark.slow
def test_adversarial_examples_on_fashion_mnist(tmp_path):
    out = tmp_path / "adv.json"
    r = run_bench("adversarial.py", out)
    assert r["plain"]["clean"] >= 0.85
    assert r["fgsm_drop_points"] >= 50
    assert r["plain"]["pgd"] <= r["plain"]["fgsm"]
    assert r["adv_training_gain_points"] >= 20
    assert r["fooling_min_confidence"] >= 0.99
    assert all(r["checks"].values())
