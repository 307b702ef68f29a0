"""`fovea demo`: LeNet-5 on scikit-learn's digits with the default recipe."""

import re
import subprocess
import sys


def test_demo_reaches_99_percent_on_digits(tmp_path):
    res = subprocess.run([sys.executable, "-m", "fovea.cli.main", "demo", "--out", str(tmp_path / "demo")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    acc = float(re.search(r"test accuracy ([\d.]+)%", res.stdout).group(1))
    assert acc >= 99.0, res.stdout
    assert (tmp_path / "demo" / "report.html").is_file()
