"""Fine-tuning a fovea network with a frozen backbone beats training from scratch on few labels:
Fashion-MNIST classes 0-4 -> 5-9 with 5% of the labels, mean test accuracy over three seeds
(bench/transfer.py, about 17 minutes on 2 CPU cores)."""

import pytest

from benchrun import run_bench


@pytest.mark.slow
def test_finetuned_beats_scratch_on_few_labels(tmp_path):
    out = tmp_path / "t.json"
    r = run_bench("transfer.py", out)
    assert r["finetuned_frozen_backbone_test_acc"] > r["scratch_test_acc"]
    assert len(r["finetuned_frozen_backbone"]) == len(r["seeds"]) == 3
    assert r["source_classes_0_4_test_acc"] > 0.9
