"""The training loop end to end, through the `fovea` command as a user runs it."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FOVEA = [sys.executable, "-m", "fovea.cli.main"]
QUICK = ["classify", "--data", "digits", "--model", "lenet5_relu", "--image-size", "32", "--batch-size", "32",
         "--optimizer", "momentum", "--lr", "0.05", "--val-fraction", "0.1"]


def fovea(*args, env=None, check=True):
    res = subprocess.run([*FOVEA, *args], capture_output=True, text=True, env=env)
    if check and res.returncode != 0:
        raise AssertionError(f"fovea {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def metric_rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_a_run_writes_its_directory(tmp_path):
    run = tmp_path / "r"
    fovea("train", *QUICK, "--epochs", "2", "--augment", "translate:0.05", "--out", str(run))
    for name in ("config.json", "metrics.csv", "model.safetensors", "model.json", "report.html",
                 "checkpoints/last.ckpt", "checkpoints/best.ckpt", "plots/loss.png", "plots/confusion.png"):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*")), "TensorBoard events"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state"]["epoch"] == 2
    rows = metric_rows(run)
    assert [r["split"] for r in rows] == ["train", "val", "train", "val", "test"]
    assert float(rows[-1]["acc"]) > 0.8
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "lenet5_relu" and cfg["epochs"] == 2
    # `fovea train --config` reruns it to the same result
    cfg["out"] = str(tmp_path / "again")
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    fovea("train", "--config", str(tmp_path / "c.json"))
    assert metric_rows(tmp_path / "again")[-1]["acc"] == rows[-1]["acc"]


def test_resume_after_sigkill_mid_epoch_matches_an_uninterrupted_run(tmp_path):
    args = [*QUICK, "--epochs", "4", "--deterministic", "--save-every-steps", "7", "--augment", "translate:0.1,noise:0.02"]
    fovea("train", *args, "--out", str(tmp_path / "full"))

    run = tmp_path / "killed"
    proc = subprocess.Popen([*FOVEA, "train", *args, "--out", str(run)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    steps_per_epoch = (1437 - 144) // 32
    ckpt = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                state = torch.load(ckpt, weights_only=True)["state"]
            except Exception:  # never half-written (atomic), but may vanish between exists() and open
                continue
            if state["epoch"] >= 1 and 0 < state["batch"] < steps_per_epoch:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_at = state
                break
        time.sleep(0.01)
    assert killed_at is not None, "could not catch the run mid-epoch"
    res = fovea("train", "--resume", str(run))
    assert f"from step {killed_at['step']}" in res.stdout

    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(run / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    keep = ("epoch", "step", "split", "loss", "acc", "top5", "lr")
    full = [{k: r[k] for k in keep} for r in metric_rows(tmp_path / "full")]
    resumed = [{k: r[k] for k in keep} for r in metric_rows(run)]
    assert resumed == full


def test_divergence_stops_naming_the_step_and_keeps_a_good_checkpoint(tmp_path):
    run = tmp_path / "nan"
    res = fovea("train", *QUICK, "--optimizer", "sgd", "--lr", "1e6", "--epochs", "3", "--save-every-steps", "1",
                "--log-every-steps", "1", "--out", str(run), check=False)
    assert res.returncode == 3, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert "NaN or Inf at step" in line and "Traceback" not in res.stderr
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_two_processes_match_one_process(tmp_path):
    common = [*QUICK, "--epochs", "1", "--optimizer", "sgd", "--lr", "0.1", "--val-fraction", "0", "--accelerator", "cpu"]
    fovea("train", *common, "--out", str(tmp_path / "one"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    fovea("train", *common, "--devices", "2", "--strategy", "ddp", "--out", str(tmp_path / "two"), env=env)
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("args,needle", [
    (["train", "classify", "--data", "digts"], "did you mean 'digits'"),
    (["train", "--resume", "/nonexistent/run"], "not found"),
    (["evaluate", "/nonexistent/run"], "not found"),
    (["train", "classify", "--model", "resnet05"], "did you mean"),
    (["train", "classify", "--recipe", "nope"], "unknown recipe"),
    (["train", "classify", "--epochs", "zero"], "invalid int value"),
])
def test_bad_input_is_one_line_exit_2(args, needle):
    res = fovea(*args, check=False)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr


def test_unreadable_config_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text("{not json")
    res = fovea("train", "--config", str(bad), check=False)
    assert res.returncode == 2 and "unreadable" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    bad.write_text(json.dumps({"epochz": 3}))
    res = fovea("train", "--config", str(bad), check=False)
    assert res.returncode == 2 and "unknown keys epochz" in res.stderr


def test_a_checkpoint_needing_pickled_code_is_refused(tmp_path):
    from fovea.errors import UserError
    from fovea.train.checkpoint import load_checkpoint

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.ckpt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(UserError, match="weights_only"):
        load_checkpoint(path)


def test_gradient_accumulation_equals_the_bigger_batch(tmp_path):
    common = [*QUICK, "--epochs", "2", "--optimizer", "sgd", "--lr", "0.1", "--val-fraction", "0"]
    fovea("train", *common, "--batch-size", "32", "--out", str(tmp_path / "big"))
    fovea("train", *common, "--batch-size", "16", "--accumulate", "2", "--out", str(tmp_path / "acc"))
    a, b = load_file(tmp_path / "big" / "model.safetensors"), load_file(tmp_path / "acc" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_ema_early_stop_clipping_and_label_smoothing_run_together(tmp_path):
    run = tmp_path / "r"
    res = fovea("train", *QUICK, "--epochs", "30", "--ema", "0.9", "--early-stop", "2", "--clip-norm", "0.5",
                "--clip-value", "1.0", "--loss", "label-smoothing", "--schedule", "plateau", "--patience", "1",
                "--lr", "0.5", "--out", str(run))
    epochs = [r for r in metric_rows(run) if r["split"] == "train"]
    assert "early stop" in res.stdout and len(epochs) < 30
    assert float([r for r in metric_rows(run) if r["split"] == "test"][0]["acc"]) > 0.5


def test_atomic_write_gives_the_mode_open_would(tmp_path):
    from fovea.train.checkpoint import atomic_write

    plain, atomic = tmp_path / "plain.bin", tmp_path / "atomic.bin"
    plain.write_bytes(b"x")
    atomic_write(atomic, lambda f: f.write(b"x"))
    assert atomic.read_bytes() == b"x"
    assert (atomic.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777) != 0o600
