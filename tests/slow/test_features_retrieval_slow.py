"""CNN features beat raw pixels: (a) a linear SVM on a fovea LeNet-5's pre-logits features of
digits scores at least as well as an RBF SVM on the raw pixels; (b) Fashion-MNIST retrieval mAP
with a fovea CNN's features beats raw-pixel retrieval by more than 0.2."""

import json
import subprocess
import sys

import pytest

from fovea.data.sources import load_data


@pytest.mark.slow
def test_cnn_features_beat_raw_pixels(tmp_path):
    try:
        load_data("fashion-mnist")
    except Exception as e:  # the data set is installed by `make data`
        pytest.skip(f"Fashion-MNIST not available: {e}")
    out = tmp_path / "r.json"
    subprocess.run([sys.executable, "bench/features_retrieval.py", "--json", str(out), "--figures", str(tmp_path)],
                   check=True)
    claims = json.loads(out.read_text())["claims"]
    assert claims["linear_svm_on_cnn_features"] >= claims["rbf_svm_on_pixels"] >= 0.98
    assert claims["cnn_map"] > claims["pixels_map"] + 0.2
    assert (tmp_path / "retrieval-fashion-cnn.png").is_file()
