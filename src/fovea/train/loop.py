"""The training loop: query the model, compute the loss and its gradient, step the optimizer,
repeat. Lightning Fabric supplies devices, precision and data parallelism; the task decides what
a step, an evaluation and a report mean; everything else is here, in reading order."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import torch
from torch import nn

from fovea.errors import UserError
from fovea.train.checkpoint import load_checkpoint, save_checkpoint
from fovea.train.config import TrainConfig
from fovea.train.data import Batches
from fovea.train.run import Run, default_run_dir

RUN_DIR_ENV = "FOVEA_RUN_DIR"  # fixes the run directory for every process of a multi-process run


class TrainingDiverged(UserError):
    """The loss became NaN or Inf; the run stops, keeping its last good checkpoint."""

    exit_code = 3


def make_fabric(cfg: TrainConfig):
    from lightning.fabric import Fabric

    precision = cfg.precision
    if precision == "auto":  # mixed precision only where the device gains from it
        precision = "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    strategy = cfg.strategy
    if strategy == "auto" and cfg.devices * cfg.num_nodes > 1:
        strategy = "ddp"
    try:
        return Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                      strategy=strategy, precision=precision)
    except (ValueError, RuntimeError, TypeError) as e:
        raise UserError(f"cannot set up devices/precision ({cfg.accelerator}, devices={cfg.devices}, "
                        f"precision={precision}, strategy={strategy}): {str(e).splitlines()[0]}") from None


def get_lr(optimizer) -> float:
    return optimizer.param_groups[0]["lr"]


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: str | Path | None = None):
        self.cfg = cfg
        self.resume_from = Path(resume) if resume else None

    # ------------------------------------------------------------------ set-up
    def _setup(self):
        from fovea.data.sources import load_data
        from fovea.data.transforms import BatchAugment
        from fovea.tasks import get_task
        from fovea.train.optim import Schedule, build_optimizer, linear_scaled_lr

        cfg = self.cfg
        self.task = get_task(cfg.task)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=False)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        run_dir = Path(self.resume_from or cfg.out or os.environ.get(RUN_DIR_ENV)
                       or default_run_dir(self.task.label(cfg), cfg.data))
        if cfg.devices * cfg.num_nodes > 1:  # processes started by Fabric inherit the environment
            os.environ[RUN_DIR_ENV] = str(run_dir)
        self.fabric = fabric = make_fabric(cfg)
        fabric.launch()
        fabric.seed_everything(cfg.seed, verbose=False)
        size = (cfg.image_size, cfg.image_size) if cfg.image_size else None
        data = self.task.load_data(cfg)
        if data is None:
            data = load_data(cfg.data, root=cfg.data_root, image_size=size, val_fraction=cfg.val_fraction,
                             seed=cfg.seed, on_bad_image=cfg.on_bad_image, in_memory=cfg.in_memory)
        self.data = data
        if cfg.classes:
            from fovea.data.subset import parse_classes, select_classes

            data = self.data = select_classes(data, parse_classes(cfg.classes, data.classes))
        if cfg.train_fraction != 1.0:
            from fovea.data.subset import subsample_train

            data = self.data = subsample_train(data, cfg.train_fraction, cfg.seed)
        data = self.data = self.task.prepare_data(cfg, data)
        self.image_size = size or data.image_size
        mk = lambda split, train: Batches(split, cfg.batch_size, fabric.device, shuffle=train, seed=cfg.seed,  # noqa: E731
                                          drop_last=train, rank=fabric.global_rank, world=fabric.world_size,
                                          num_workers=cfg.num_workers, image_size=self.image_size,
                                          order_fn=order_fn if train else None)
        order_fn = self.task.batch_order(cfg)
        if order_fn is not None and cfg.pk:  # a P x K batch is the batch
            from fovea.tasks.metric import parse_pk

            p, k = parse_pk(cfg.pk)
            cfg.batch_size = p * k
        self.train_batches = mk(data.train, True)
        self.batches_for = lambda split: mk(split, False) if split is not None else None  # noqa: E731
        # the whole split in one process, for reports
        self.full_batches = lambda split: Batches(split, cfg.batch_size, fabric.device, shuffle=False,  # noqa: E731
                                                  num_workers=cfg.num_workers, image_size=self.image_size)
        self.val_batches = self.batches_for(data.val)
        if len(self.train_batches) == 0:
            raise UserError(f"training split of {cfg.data!r} has {len(data.train)} images, fewer than one batch "
                            f"of {cfg.batch_size}; lower --batch-size")

        model = self.task.build_model(cfg, data, self.image_size)
        fit_images = self.train_batches.images if self.train_batches.in_memory else self.train_batches.sample(2000)
        if hasattr(model, "preprocess"):
            model.preprocess.fit(fit_images)
        self.augment = BatchAugment(cfg.augment).to(fabric.device)
        self.augment.fit(fit_images)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)

        lr = linear_scaled_lr(cfg.lr, cfg.batch_size) if cfg.scale_lr else cfg.lr
        if self.task.manual and cfg.accumulate > 1:
            raise UserError(f"--accumulate {cfg.accumulate}: task {cfg.task!r} steps its own optimizers; use 1")
        self.steps_per_epoch = len(self.train_batches) // cfg.accumulate
        if self.steps_per_epoch == 0:
            raise UserError(f"--accumulate {cfg.accumulate} is more than the {len(self.train_batches)} batches of an epoch")
        self.optimizers, self.schedules = {}, {}
        for name, spec in self.task.optimizers(model, cfg, lr).items():
            opt_lr = spec.get("lr", lr)
            opt = build_optimizer(spec["params"], spec.get("optimizer", cfg.optimizer), lr=opt_lr,
                                  momentum=cfg.momentum, weight_decay=cfg.weight_decay, **spec.get("kwargs", {}))
            self.optimizers[name] = opt
            self.schedules[name] = Schedule(opt, cfg.schedule, total_steps=cfg.epochs * self.steps_per_epoch,
                                            steps_per_epoch=self.steps_per_epoch,
                                            warmup_steps=round(cfg.warmup_epochs * self.steps_per_epoch),
                                            milestones=tuple(cfg.milestones), gamma=cfg.gamma, min_lr=cfg.min_lr,
                                            patience=cfg.patience)
        self.optimizer, self.schedule = next(iter(self.optimizers.values())), next(iter(self.schedules.values()))
        self.ema = None
        if cfg.ema:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
        self.raw_model = model
        # the run directory is made only once data and model are known to be good
        self.run = Run(run_dir, is_writer=fabric.is_global_zero, metric_columns=self.task.metric_columns)
        if fabric.is_global_zero and self.resume_from is None:
            self.run.write_json("config.json", cfg.to_dict())
        fabric.barrier()
        model, *optimizers = fabric.setup(model, *self.optimizers.values())
        self.model = model
        self.optimizers = dict(zip(self.optimizers, optimizers))
        self.optimizer = optimizers[0]
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.state = dict(epoch=0, batch=0, step=0, best=None, bad_epochs=0)
        self.epoch_sums: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self) -> dict:
        return dict(model=self.raw_model.state_dict(),
                    optimizers={k: o.state_dict() for k, o in self.optimizers.items()},
                    schedules={k: s.state_dict() for k, s in self.schedules.items()}, ema=self.ema.state_dict() if self.ema else None,
                    state=dict(self.state), epoch_sums={k: torch.as_tensor(v).cpu() for k, v in self.epoch_sums.items()},
                    rng=torch.get_rng_state(), config=self.cfg.to_dict())

    def save(self, which: str = "last") -> None:
        """Save, unless the weights went non-finite: the last good checkpoint is never replaced."""
        finite = torch.stack([torch.isfinite(p).all() for p in self.raw_model.parameters()]).all()
        if not bool(finite):
            ck = self.run.last_ckpt if self.run.last_ckpt.exists() else None
            raise TrainingDiverged(f"weights became NaN or Inf by step {self.state['step']} (epoch "
                                   f"{self.state['epoch'] + 1}); stopped. Last good checkpoint: {ck or 'none yet'}")
        ckpt = self._checkpoint()  # every rank builds it (collectives may be needed); rank 0 writes
        if self.fabric.is_global_zero:
            save_checkpoint(ckpt, self.run.ckpt_dir / f"{which}.ckpt")
        self.fabric.barrier()

    def _restore(self) -> None:
        ckpt = load_checkpoint(self.run.last_ckpt)
        self.raw_model.load_state_dict(ckpt["model"])
        # checkpoints from before several optimizers were possible hold one, under "optimizer"
        optimizers = ckpt.get("optimizers") or {"main": ckpt["optimizer"]}
        schedules = ckpt.get("schedules") or {"main": ckpt["schedule"]}
        if set(optimizers) != set(self.optimizers):
            raise UserError(f"checkpoint {str(self.run.last_ckpt)!r} holds optimizers {sorted(optimizers)}, "
                            f"but task {self.cfg.task!r} uses {sorted(self.optimizers)}")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(optimizers[name])
            self.schedules[name].load_state_dict(schedules[name])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.state = dict(ckpt["state"])
        self.epoch_sums = {k: v.to(self.fabric.device) for k, v in ckpt.get("epoch_sums", {}).items()}
        torch.set_rng_state(ckpt["rng"])
        if self.fabric.is_global_zero:
            self.run.truncate_metrics(self.state["step"])
        self.log(f"resumed {self.run.path} from step {self.state['step']} "
                 f"(epoch {self.state['epoch'] + 1}, batch {self.state['batch']})")

    # ------------------------------------------------------------------ helpers
    def log(self, msg: str) -> None:
        if self.fabric.is_global_zero:
            print(msg, flush=True)

    def _diverged(self, bad_step: torch.Tensor) -> None:
        """Checked at logging and saving points only: the step-level flag stays on the device."""
        step = int(bad_step.item())
        if step >= 0:
            ck = self.run.last_ckpt if self.run.last_ckpt.exists() else None
            raise TrainingDiverged(f"loss became NaN or Inf at step {step} (epoch {self.state['epoch'] + 1}); "
                                   f"stopped. Last good checkpoint: {ck or 'none yet'}. Try a lower --lr or --clip-norm")

    def _aug_generator(self, step: int) -> torch.Generator:
        # one generator per step, seeded from (seed, step): a resumed run replays the same augmentations
        g = torch.Generator(device=self.fabric.device)
        g.manual_seed(self.cfg.seed * 7919 + step * 104729 + self.fabric.global_rank)
        return g

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        self._setup()
        cfg, fabric, task = self.cfg, self.fabric, self.task
        if self.resume_from is not None:
            self._restore()
        self.log(f"run: {self.run.path}  data: {self.data.name} ({len(self.data.train)} train"
                 f"{f', {len(self.data.val)} val' if self.data.val else ''}"
                 f"{f', {len(self.data.test)} test' if self.data.test else ''})  model: {task.label(cfg)}  "
                 f"device: {fabric.device} x{fabric.world_size}")
        bad_step = torch.full((), -1, dtype=torch.long, device=fabric.device)
        tty = sys.stdout.isatty() and fabric.is_global_zero
        try:
            while self.state["epoch"] < cfg.epochs:
                epoch = self.state["epoch"]
                self.model.train()
                self.augment.train()
                # per-epoch sums survive a mid-epoch checkpoint, so a resumed epoch reports the same means
                sums: dict[str, torch.Tensor] = self.epoch_sums
                t0, seen = time.perf_counter(), 0
                bar = None
                if tty:
                    from tqdm import tqdm

                    bar = tqdm(total=self.steps_per_epoch * cfg.accumulate, initial=self.state["batch"], unit="batch",
                               desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True)
                micro_batches = self.steps_per_epoch * cfg.accumulate  # a tail shorter than --accumulate is left out
                for i, (xb, yb, _) in enumerate(self.train_batches.epoch(epoch, self.state["batch"]),
                                                start=self.state["batch"]):
                    if i >= micro_batches:
                        break
                    step = self.state["step"]
                    x, yb = task.augment_batch(self.augment, xb.float().div_(255), yb, self._aug_generator(step))
                    if cfg.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    last_micro = (i + 1) % cfg.accumulate == 0
                    if task.manual:  # forward passes in the run's precision, as _FabricModule.forward gives others
                        with fabric.autocast():
                            loss, stats = task.manual_step(self.model, x, yb, self._manual_step, step)
                    else:
                        with fabric.no_backward_sync(self.model, enabled=not last_micro):
                            loss, stats = task.training_step(self.model, x, yb)
                            fabric.backward(loss / cfg.accumulate if cfg.accumulate > 1 else loss)
                    bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss.detach()),
                                           torch.full_like(bad_step, step), bad_step)
                    for k, v in stats.items():
                        sums[k] = sums[k] + v if k in sums else v
                    seen += len(yb)
                    self.state["batch"] = i + 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(img_s=f"{seen * fabric.world_size / (time.perf_counter() - t0):.0f}",
                                        refresh=False)
                    if not last_micro:
                        continue
                    if not task.manual:
                        self._optimizer_step(self.optimizer, self.schedule)
                    if self.ema is not None:
                        self.ema.update_parameters(self.raw_model)
                    self.state["step"] = step = step + 1
                    if step % cfg.log_every_steps == 0:
                        self._diverged(bad_step)
                    if cfg.save_every_steps and step % cfg.save_every_steps == 0 and self.state["batch"] < micro_batches:
                        self._diverged(bad_step)
                        self.save("last")
                if bar is not None:
                    bar.close()
                self._diverged(bad_step)
                elapsed = time.perf_counter() - t0
                n = float(sums.pop("count"))
                train_row = dict(epoch=epoch + 1, step=self.state["step"], split="train",
                                 lr=get_lr(self.optimizer), time_s=elapsed,
                                 images_per_s=seen * fabric.world_size / max(elapsed, 1e-9),
                                 **task.summarize({k: v.item() / max(n, 1) for k, v in sums.items()}))
                self.run.log_metrics(train_row)
                val = self.evaluate(self.val_batches) if self.val_batches is not None else None
                if val is not None:
                    self.run.log_metrics(dict(epoch=epoch + 1, step=self.state["step"], split="val", **val))
                monitored = (val or train_row).get(task.monitor, train_row["loss"]) if task.monitor else None
                for schedule in self.schedules.values():
                    schedule.epoch_end(val["loss"] if val else train_row["loss"])
                self.state["epoch"], self.state["batch"] = epoch + 1, 0
                self.epoch_sums = {}
                improved = self._improved(monitored)
                self.log(self._epoch_line(train_row, val))
                if fabric.is_global_zero:
                    task.epoch_end(self.run, self.eval_model(), epoch + 1)
                self.save("last")
                if improved:
                    self.save("best")
                if cfg.early_stop and self.state["bad_epochs"] >= cfg.early_stop:
                    self.log(f"early stop: no improvement of val {task.monitor} in {cfg.early_stop} epochs")
                    break
        finally:
            self.run.close()
        return self.finish()

    def _optimizer_step(self, optimizer, schedule) -> None:
        cfg = self.cfg
        if cfg.clip_norm is not None:
            self.fabric.clip_gradients(self.model, optimizer, max_norm=cfg.clip_norm, error_if_nonfinite=False)
        if cfg.clip_value is not None:
            self.fabric.clip_gradients(self.model, optimizer, clip_val=cfg.clip_value)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()

    def _manual_step(self, name: str, loss: torch.Tensor) -> None:
        """What a manual task calls for each of its optimizers: fresh gradients, backward, step."""
        self.model.zero_grad(set_to_none=True)
        with torch.autocast(self.fabric.device.type, enabled=False):  # backward outside autocast
            self.fabric.backward(loss)
        self._optimizer_step(self.optimizers[name], self.schedules[name])

    def _improved(self, value: float | None) -> bool:
        best, mode = self.state["best"], self.task.monitor_mode
        if self.task.monitor is None:  # nothing to compare: the latest epoch is the best
            return True
        if best is None or (value > best if mode == "max" else value < best):
            self.state["best"], self.state["bad_epochs"] = value, 0
            return True
        self.state["bad_epochs"] += 1
        return False

    def _epoch_line(self, tr: dict, val: dict | None) -> str:
        parts = [f"epoch {tr['epoch']}/{self.cfg.epochs}", f"loss {tr['loss']:.4f}"]
        if "acc" in tr:
            parts.append(f"acc {tr['acc']:.4f}")
        if val:
            parts += [f"val_loss {val['loss']:.4f}"] + ([f"val_acc {val['acc']:.4f}"] if "acc" in val else [])
            monitor = self.task.monitor
            if monitor not in (None, "loss", "acc") and monitor in val:
                parts.append(f"val_{monitor} {val[monitor]:.4f}")
        parts += [f"lr {tr['lr']:.3g}", f"{tr['images_per_s']:.0f} img/s", f"{tr['time_s']:.1f}s"]
        return "  ".join(parts)

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    @torch.no_grad()
    def evaluate(self, batches) -> dict:
        """Mean of the task's per-batch sums over a split, summed across processes."""
        model = self.eval_model()
        model.eval()
        sums: dict[str, torch.Tensor] = {}
        for xb, yb, _ in batches.epoch(0):
            for k, v in self.task.eval_step(model, xb.float().div_(255), yb).items():
                sums[k] = sums[k] + v if k in sums else v
        if self.fabric.world_size > 1:
            sums = {k: self.fabric.all_reduce(torch.as_tensor(v, dtype=torch.float, device=self.fabric.device),
                                              reduce_op="sum") for k, v in sums.items()}
        n = float(sums.pop("count"))
        return self.task.summarize({k: v.item() / max(n, 1) for k, v in sums.items()})

    # ------------------------------------------------------------------ the end
    def finish(self) -> dict:
        from safetensors.torch import save_file

        fabric, cfg = self.fabric, self.cfg
        result: dict = dict(run=str(self.run.path))
        test = self.batches_for(self.data.test) if self.data.test is not None else None
        if test is not None:
            metrics = self.evaluate(test)
            result["test"] = metrics
            self.run.log_metrics(dict(epoch=self.state["epoch"], step=self.state["step"], split="test", **metrics))
        if fabric.is_global_zero:
            model = self.ema.module if self.ema is not None else self.raw_model
            state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
            info = dict(task=self.cfg.task, **self.task.export_info(cfg, self.data, self.image_size))
            self.run.write_json("model.json", info)
            save_file(state, str(self.run.path / "model.safetensors"), metadata={"format": "pt"})
            if not self.run.best_ckpt.exists() and self.run.last_ckpt.exists():
                shutil.copyfile(self.run.last_ckpt, self.run.best_ckpt)
            result.update(self.task.report(self.run, self.eval_model(), self.data, self.full_batches))
            if self.data.skipped:
                shown = "; ".join(f"{p} ({why})" for p, why in self.data.skipped[:3])
                self.log(f"skipped {len(self.data.skipped)} unreadable file(s): {shown}"
                         f"{' ...' if len(self.data.skipped) > 3 else ''}")
        fabric.barrier()
        return result


def train(cfg: TrainConfig, resume: str | Path | None = None) -> dict:
    return Trainer(cfg, resume).fit()


