"""Adversarial examples on Fashion-MNIST (bench/adversarial.py): FGSM at eps 0.1 costs a fovea CNN
>= 50 points of accuracy, PGD at least as much, adversarial training buys back >= 20 points under
FGSM, and noise grows into a >= 99%-confident fooling image of every class."""

import json
import subprocess
import sys

import pytest

from fovea.data.sources import load_data


@pytest.mark.slow
def test_adversarial_examples_on_fashion_mnist(tmp_path):
    try:
        load_data("fashion-mnist")
    except Exception as e:  # the data set is installed by `make data`
        pytest.skip(f"Fashion-MNIST not available: {e}")
    out = tmp_path / "adv.json"
    subprocess.run([sys.executable, "bench/adversarial.py", "--json", str(out)], check=True)
    r = json.loads(out.read_text())
    assert r["plain"]["clean"] >= 0.85
    assert r["fgsm_drop_points"] >= 50
    assert r["plain"]["pgd"] <= r["plain"]["fgsm"]
    assert r["adv_training_gain_points"] >= 20
    assert r["fooling_min_confidence"] >= 0.99
    assert all(r["checks"].values())
