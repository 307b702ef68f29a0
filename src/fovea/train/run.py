"""The run directory: everything one run produced.

    runs/<name>/config.json            the whole configuration (fovea train --config reruns it)
    runs/<name>/metrics.csv            one row per logged point: epoch, step, split, metrics
    runs/<name>/events.out.tfevents.*  TensorBoard events
    runs/<name>/checkpoints/last.ckpt  every epoch and every N steps; best.ckpt by the monitored metric
    runs/<name>/model.safetensors      weights for inference, with model.json describing them
    runs/<name>/plots/*.png, report.html
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from fovea.errors import UserError
from fovea.train.checkpoint import atomic_write

METRIC_COLUMNS = ["epoch", "step", "split", "loss", "acc", "top5", "lr", "images_per_s", "time_s"]


class Run:
    def __init__(self, path: str | Path, is_writer: bool = True, metric_columns: tuple[str, ...] = ()):
        self.path = Path(path)
        self.is_writer = is_writer
        # metrics.csv holds the common columns, then the task's own (mean IoU, PSNR, end-point error ...)
        self.columns = METRIC_COLUMNS + [c for c in metric_columns if c not in METRIC_COLUMNS]
        self.plots = self.path / "plots"
        self.ckpt_dir = self.path / "checkpoints"
        self._tb = None
        if is_writer:
            self.plots.mkdir(parents=True, exist_ok=True)
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def existing(cls, path: str | Path) -> "Run":
        p = Path(path)
        if not (p / "config.json").is_file():
            raise UserError(f"run directory {str(p)!r} not found (expected {str(p / 'config.json')!r})")
        return cls(p, is_writer=False)

    # -- files
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def last_ckpt(self) -> Path:
        return self.ckpt_dir / "last.ckpt"

    @property
    def best_ckpt(self) -> Path:
        return self.ckpt_dir / "best.ckpt"

    def write_json(self, name: str, data: dict) -> Path:
        text = json.dumps(data, indent=2, sort_keys=False) + "\n"
        return atomic_write(self.path / name, lambda f: f.write(text.encode()))

    def read_json(self, name: str) -> dict:
        p = self.path / name
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            raise UserError(f"{str(p)!r} not found; is {str(self.path)!r} a finished fovea run?") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{str(p)!r} is not valid JSON: {e}") from None

    def load_weights(self, model) -> None:
        """Load the run's ``model.safetensors`` into ``model``; a run without it (unfinished, or
        not a run) ends in one line."""
        from safetensors.torch import load_file

        p = self.path / "model.safetensors"
        if not p.is_file():
            raise UserError(f"{str(p)!r} not found; is {str(self.path)!r} a finished fovea run?")
        model.load_state_dict(load_file(str(p)))

    # -- metrics
    def log_metrics(self, row: dict) -> None:
        if not self.is_writer:
            return
        new = not self.metrics_path.exists()
        with open(self.metrics_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: _fmt(v) for k, v in row.items()})
        tb = self.tensorboard()
        if tb is not None:
            for k, v in row.items():
                if k not in ("epoch", "step", "split") and isinstance(v, (int, float)):
                    tb.add_scalar(f"{row['split']}/{k}", v, row["step"])

    def truncate_metrics(self, max_step: int) -> None:
        """Drop rows logged after ``max_step`` (those a killed run wrote after its last checkpoint)."""
        if not self.metrics_path.exists():
            return
        rows = list(csv.DictReader(io.StringIO(self.metrics_path.read_text())))
        keep = [r for r in rows if int(r["step"]) <= max_step]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(keep)
        atomic_write(self.metrics_path, lambda f: f.write(buf.getvalue().encode()))

    def tensorboard(self):
        if self._tb is None and self.is_writer:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.path))
        return self._tb or None

    def close(self) -> None:
        if self._tb:
            self._tb.close()


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def default_run_dir(model: str, data: str) -> Path:
    safe = lambda s: "".join(c if c.isalnum() or c in "-_" else "-" for c in s)[:40].strip("-")  # noqa: E731
    return Path("runs") / f"{safe(model)}-{safe(Path(data).name or data)}-{time.strftime('%Y%m%d-%H%M%S')}"
