"""`fovea scratch check` and `fovea scratch train`."""

import json

from fovea.cli.main import main


def test_check_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "sub" / "check.json"
    assert main(["scratch", "check", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| layer | forward vs torch |" in text and "conv2d direct" in text and "passed" in text
    data = json.loads(out.read_text())
    assert data["passed"] and all(r["passed"] for r in data["rows"])
    names = " ".join(r["layer"] for r in data["rows"])
    for layer in ("conv2d im2col", "conv2d direct", "conv as matrix", "flipped filter", "max pool", "avg pool",
                  "global avg pool", "relu", "leaky relu", "prelu", "sigmoid", "tanh", "linear", "flatten", "dropout",
                  "batch norm 2d train", "batch norm 2d eval", "lrn", "softmax cross-entropy", "multiclass hinge"):
        assert layer in names, layer
    assert not list(out.parent.glob(".*.tmp"))


def test_train_a_tiny_run(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert main(["scratch", "train", "--epochs", "1", "--limit", "64", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["n_train"] == 64 and data["n_test"] == 450 and 0 <= data["test_accuracy"] <= 1
    assert len(data["history"]) == 1 and "test accuracy" in capsys.readouterr().out


def test_bad_values_end_in_one_line(capsys):
    assert main(["scratch", "train", "--epochs", "0"]) == 2
    assert "--epochs 0" in capsys.readouterr().err
    assert main(["scratch"]) == 2
