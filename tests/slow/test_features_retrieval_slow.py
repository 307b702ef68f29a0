"""CNN features beat raw pixels: (a) a linear SVM on a fovea LeNet-5's pre-logits features of
digits scores at least as well as an RBF SVM on the raw pixels; (b) Fashion-MNIST retrieval mAP
with a fovea CNN's features beats raw-pixel retrieval by more than 0.2."""

import pytest

from benchrun import run_bench


@pytest.mark.slow
def test_cnn_features_beat_raw_pixels(tmp_path):
    out = tmp_path / "r.json"
    claims = run_bench("features_retrieval.py", out, "--figures", str(tmp_path))["claims"]
    assert claims["linear_svm_on_cnn_features"] >= claims["rbf_svm_on_pixels"] >= 0.98
    assert claims["cnn_map"] > claims["pixels_map"] + 0.2
    assert (tmp_path / "retrieval-fashion-cnn.png").is_file()
