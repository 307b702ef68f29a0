"""Super-resolution and denoising on held-out photographs (bench/restore.py): SRCNN x3 beats
bicubic PSNR, and the denoiser beats Gaussian and median filtering at sigma 25."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_srcnn_beats_bicubic_and_dncnn_beats_filters(tmp_path):
    out = tmp_path / "restore.json"
    subprocess.run([sys.executable, "bench/restore.py", "--json", str(out), "--figures", str(tmp_path / "img")],
                   check=True)
    r = json.loads(out.read_text())
    sr, dn = r["superres"]["mean"], r["denoise"]["mean"]
    assert r["superres"]["scale"] == 3 and r["denoise"]["sigma"] == 25
    assert sr["psnr"] > sr["bicubic_psnr"]
    assert dn["psnr"] > dn["gaussian_psnr"] and dn["psnr"] > dn["median_psnr"]
    # and against the filters tuned on the test images themselves
    assert dn["psnr"] > max(r["denoise"]["test_best_filters"]["gaussian_psnr"],
                            r["denoise"]["test_best_filters"]["median_psnr"])
    assert all(r["checks"].values())
    assert all((tmp_path / "img" / name).is_file() for name in ("restore-superres.png", "restore-denoise.png"))
