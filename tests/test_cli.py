import json
import subprocess
import sys

import pytest

from fovea.cli.main import main

EXAMPLE = "conv5x5-10,relu,maxpool4,conv3x3-20,relu,conv1x1-40,relu,maxpool4,fc32,relu,fc5"


def run(*args):
    """The installed console script, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "fovea.cli.main", *args], capture_output=True, text=True)


def test_summary_of_the_worked_example(capsys):
    assert main(["summary", EXAMPLE, "--input", "3x64x64"]) == 0
    out = capsys.readouterr().out
    assert "total params: 24,097" in out
    assert "features.conv1" in out and "10x64x64" in out


def test_summary_json_of_resnet50(tmp_path):
    path = tmp_path / "r50.json"
    assert main(["summary", "resnet50", "--input", "3x224x224", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["total_params"] == 25_557_032
    assert data["total_macs"] == pytest.approx(4.09e9, rel=0.01)
    assert {"name", "type", "output_shape", "params", "macs", "receptive_field"} <= set(data["layers"][0])


def test_summary_vgg16_shows_receptive_fields(capsys):
    assert main(["summary", "vgg16", "--input", "3x224x224"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert rows["conv5_3"][-1] == "196" and rows["pool5"][-1] == "212"


def test_models_lists_and_filters(capsys):
    assert main(["models", "densenet*"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"densenet121", "densenet161", "densenet169", "densenet201"} <= set(names)
    assert all(n.startswith("densenet") for n in names)


@pytest.mark.parametrize("args,needle", [
    (["summary", "resnet05"], "did you mean"),
    (["summary", "conv3x3-8,rleu,fc2", "--input", "3x8x8"], "token 2 'rleu'"),
    (["summary", "resnet18", "--input", "3x8"], "expects CxHxW"),
    (["summary", "lenet5", "--input", "1x20x20"], "at layer 'c5'"),
    (["summary", "lenet5", "--bogus"], "unrecognized arguments: --bogus"),
    (["models", "nothing*"], "no model matches"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    res = run(*args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr
