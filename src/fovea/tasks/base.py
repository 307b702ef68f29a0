"""The task interface the trainer drives."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from fovea.errors import UserError

if TYPE_CHECKING:
    from fovea.data.sources import DataBundle
    from fovea.train.config import TrainConfig
    from fovea.train.run import Run


class Task:
    """One kind of problem. The trainer calls, in order: ``build_model`` once; ``training_step``
    for every batch; ``eval_step`` on every validation batch after each epoch; ``report`` once at
    the end. Both steps return per-batch sums as tensors, with the sample ``count``; the trainer
    adds them up (across processes too) and divides. ``count`` may be a plain int. ``monitor`` names the validation metric
    that picks ``best.ckpt``."""

    name: str = ""
    monitor: str | None = "loss"  # None: no validation metric picks a best epoch (best.ckpt is the last)
    monitor_mode: str = "min"
    metric_columns: tuple[str, ...] = ()  # columns of metrics.csv besides loss, acc and top5
    manual: bool = False  # True: ``manual_step`` backpropagates and steps the optimizers itself (GANs)

    def label(self, cfg: "TrainConfig") -> str:
        """What the default run directory is named after."""
        return cfg.model

    def batch_order(self, cfg: "TrainConfig"):
        """None (shuffled batches), or ``f(labels, epoch) -> indices`` giving the order of the
        training samples in an epoch, cut into batches in turn (P x K batches for metric learning)."""
        return None

    def load_data(self, cfg: "TrainConfig") -> "DataBundle | None":
        """The task's own data (images with masks, frame pairs with flow, ...), or None for the
        image-label sources of :func:`fovea.data.sources.load_data`. Dense tasks put their targets
        (masks, flow fields) in ``Split.labels``, one per image, so batching indexes both alike."""
        return None

    def augment_batch(self, augment: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a float training batch in [0, 1]. Dense tasks override this to move their
        targets with the images (the same crop, flip and rotation for an image and its mask)."""
        return augment(x, generator=generator), y

    def prepare_data(self, cfg: "TrainConfig", data: "DataBundle") -> "DataBundle":
        """The data the task trains on (for example only the normal classes, for anomaly detection)."""
        return data

    def build_model(self, cfg: "TrainConfig", data: "DataBundle", image_size: tuple[int, int]) -> nn.Module:
        raise NotImplementedError

    def param_groups(self, model: nn.Module, cfg: "TrainConfig", lr: float) -> list[dict]:
        return [dict(params=[p for p in model.parameters() if p.requires_grad])]

    def optimizers(self, model: nn.Module, cfg: "TrainConfig", lr: float) -> dict[str, dict]:
        """Optimizer name -> ``dict(params=param groups, lr=..., kwargs=build_optimizer kwargs)``;
        each gets its own learning-rate schedule. One optimizer, ``main``, unless overridden."""
        return {"main": dict(params=self.param_groups(model, cfg, lr))}

    def manual_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step, index: int) -> tuple[torch.Tensor, dict]:
        """For ``manual`` tasks: one training step on a batch. ``step(name, loss)`` zeroes the
        gradients, backpropagates ``loss`` and steps optimizer ``name`` (with clipping and its
        schedule); ``index`` counts batches from the start of training. Return a loss to watch
        for divergence and per-batch sums, as ``training_step`` does."""
        raise NotImplementedError

    def epoch_end(self, run: "Run", model: nn.Module, epoch: int) -> None:
        """Called on the main process after each epoch is logged (sample grids and the like)."""

    def training_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Return the loss and per-batch sums as tensors (never synchronised inside the step)."""
        raise NotImplementedError

    def eval_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
        raise NotImplementedError

    def summarize(self, means: dict[str, float]) -> dict[str, float]:
        """Metrics that are not means over samples, from the means of the per-batch sums (for
        example mean IoU from per-class intersections and unions): called on every train and
        validation row before it is logged or monitored."""
        return means

    def report(self, run: "Run", model: nn.Module, data: "DataBundle", batches_for) -> dict:
        return {}

    def export_info(self, cfg: "TrainConfig", data: "DataBundle", image_size: tuple[int, int]) -> dict:
        return {}


TASKS: dict[str, type[Task]] = {}

# task name -> the module that registers it (imported on first use)
TASK_MODULES: dict[str, str] = {
    "classify": "fovea.tasks.classify",
    "autoencoder": "fovea.tasks.autoencode",
    "gan": "fovea.tasks.gan",
    "metric": "fovea.tasks.metric",
    "segment": "fovea.tasks.segment",
    "superres": "fovea.tasks.restore",
    "denoise": "fovea.tasks.restore",
    "flow": "fovea.tasks.flow",
    "depth": "fovea.tasks.depth",
    "video": "fovea.tasks.video",
    "stylenet": "fovea.tasks.stylenet",
}


def register_task(cls: type[Task]) -> type[Task]:
    if cls.name in TASKS:
        raise ValueError(f"task {cls.name!r} is already registered")
    TASKS[cls.name] = cls
    return cls


def get_task(name: str) -> Task:
    import importlib

    if name not in TASK_MODULES:
        raise UserError(f"unknown task {name!r}; expected one of {', '.join(sorted(TASK_MODULES))}")
    importlib.import_module(TASK_MODULES[name])  # the module registers its tasks
    return TASKS[name]()
