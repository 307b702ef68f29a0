"""Optimizers, learning-rate schedules with warm-up, the linear scaling rule and gradient clipping.

The update rules are PyTorch's (``torch.optim``), picked by name. Where the tutorial's
formulas differ from PyTorch's, the difference is stated here and checked in the tests:

- ``"momentum"`` is PyTorch's undampened heavy ball, v <- a v + g, W <- W - lr v.
  The tutorial's form, W_{t+1} = W_t + a (W_t - W_{t-1}) + (1 - a)(-lr grad), dampens the
  gradient by (1 - a); it is ``"tutorial-momentum"``, whose steps at lr equal those of
  ``"momentum"`` at lr (1 - a).
- AdaGrad: the tutorial writes the numerator as lr * grad**2; Duchi et al. (2011) and
  PyTorch use lr * grad. The tutorial puts eps inside the square root, sqrt(g + eps);
  PyTorch adds it outside, sqrt(g) + eps (default eps 1e-10).
- RMSProp with momentum: the tutorial dampens the step by (1 - a),
  W_{t+1} = W_t + a (W_t - W_{t-1}) - (1 - a) lr grad / sqrt(g + eps); PyTorch does not
  (buf <- a buf + grad / (sqrt(g) + eps), W <- W - lr buf), so the tutorial's rule is
  PyTorch's with lr (1 - a), and eps again sits outside the square root.
- Adam: the tutorial's denominator is sqrt(g_hat + eps); Kingma & Ba (2015) and PyTorch
  use sqrt(g_hat) + eps. Both correct the moments for bias, m_hat = m / (1 - beta1**t).
- L2 regularization: the penalty lambda * sum(W**2) has gradient 2 lambda W, while
  ``weight_decay`` adds weight_decay * W to the gradient, so weight_decay = 2 lambda.
  ``"adamw"`` instead decays the weights directly (Loshchilov & Hutter 2019).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn

from fovea.errors import UserError

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "Schedule",
    "TutorialMomentum",
    "build_optimizer",
    "clip_gradients",
    "linear_scaled_lr",
]

OPTIMIZERS = ("sgd", "momentum", "tutorial-momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "step", "exponential", "cosine", "onecycle", "plateau")


class TutorialMomentum(torch.optim.SGD):
    """Momentum in the tutorial's dampened form:

        W_{t+1} = W_t + a (W_t - W_{t-1}) + (1 - a) (-lr grad L(W_t)),   W_{-1} = W_0.

    With v_t = (W_t - W_{t-1}) / -lr this is v_{t+1} = a v_t + (1 - a) grad, v_0 = 0: PyTorch's
    SGD with dampening equal to momentum. PyTorch's SGD starts its buffer at the first
    gradient instead of at zero, so the buffer is seeded with zeros here to make the first
    step, -(1 - a) lr grad, match the formula too.
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, momentum=momentum, dampening=momentum, weight_decay=weight_decay)
        # A pre-step hook rather than a step override, so that step hooks fire once per step.
        self.register_step_pre_hook(TutorialMomentum._prepare)

    @staticmethod
    @torch.no_grad()
    def _prepare(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for group in optimizer.param_groups:
            group["dampening"] = group["momentum"]  # per-group (or changed) momentum stays dampened
            for p in group["params"]:
                # all trainable params, not only those with a gradient yet: a closure makes them later
                if p.requires_grad and "momentum_buffer" not in optimizer.state[p]:
                    optimizer.state[p]["momentum_buffer"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format)


def _unknown(kind: str, value: str, valid: tuple[str, ...]) -> UserError:
    return UserError(f"Unknown {kind} {value!r}; expected one of: {', '.join(valid)}.")


def build_optimizer(params: Iterable[Any], name: str = "sgd", lr: float = 0.01, momentum: float = 0.9,
                    weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                    eps: float | None = None, alpha: float = 0.99) -> torch.optim.Optimizer:
    """Build an optimizer by name (one of ``OPTIMIZERS``).

    ``params`` is an iterable of tensors or of param-group dicts (per-group ``lr`` and so on).
    ``momentum`` is used by "momentum", "tutorial-momentum", "nesterov" and "rmsprop";
    ``betas`` by "adam" and "adamw"; ``alpha`` is RMSProp's smoothing constant (the tutorial's
    gamma); ``eps`` of None keeps PyTorch's default for the chosen method. ``weight_decay``
    adds weight_decay * W to the gradient (L2), except for "adamw", which decouples it.
    """
    if name not in OPTIMIZERS:
        raise _unknown("optimizer", name, OPTIMIZERS)
    if lr <= 0:
        raise UserError(f"Received lr={lr}, but the learning rate must be positive.")
    if weight_decay < 0:
        raise UserError(f"Received weight_decay={weight_decay}, but it must be >= 0.")
    if name in ("momentum", "tutorial-momentum", "nesterov") and not 0.0 < momentum < 1.0:
        raise UserError(f"Received momentum={momentum} for {name!r}; expected 0 < momentum < 1.")
    if name == "rmsprop" and not 0.0 <= momentum < 1.0:
        raise UserError(f"Received momentum={momentum} for 'rmsprop'; expected 0 <= momentum < 1.")
    extra = {} if eps is None else {"eps": eps}
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=weight_decay)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "tutorial-momentum":
        return TutorialMomentum(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay, **extra)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=alpha, momentum=momentum,
                                   weight_decay=weight_decay, **extra)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, **extra)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, **extra)


def linear_scaled_lr(lr: float, batch_size: int, base_batch: int = 256) -> float:
    """The linear scaling rule (Goyal et al. 2017): multiply the learning rate by k when the
    mini-batch grows k-fold, lr * batch_size / base_batch (reference lr 0.1 for 256 images)."""
    if batch_size < 1 or base_batch < 1:
        raise UserError(f"Received batch_size={batch_size}, base_batch={base_batch}; both must be >= 1.")
    return lr * batch_size / base_batch


class Schedule:
    """Per-step learning-rate control: linear warm-up over `warmup_steps` from
    lr*warmup_start_factor to lr, then the chosen decay.

    The base lr of each param group is its lr when the schedule is made. Decays:

    - "constant": the base lr.
    - "step": divide by 1/gamma (10 by default) at each of the ``milestones`` epochs, counted
      from the start of training as in Goyal et al. (warm-up 5 epochs, steps at 30, 60, 80).
    - "exponential": lr * gamma**e, e the (fractional) epochs since the end of warm-up, so
      the hand-over from warm-up is continuous.
    - "cosine": half a cosine from lr at the end of warm-up to ``min_lr`` at ``total_steps``.
    - "onecycle": PyTorch's OneCycleLR (cosine annealing, div_factor 25, final_div_factor 1e4)
      with max lr = base lr; its rising phase is the warm-up: pct_start is
      warmup_steps / total_steps when warmup_steps > 0, else 0.3. Only the lr is cycled,
      not the momentum (cycle_momentum=False); ``min_lr`` and ``warmup_start_factor`` are unused.
    - "plateau": PyTorch's ReduceLROnPlateau in "min" mode (relative threshold 1e-4): multiply
      by gamma once the metric given to ``epoch_end`` has not improved for more than
      ``patience`` epochs in a row.

    ``min_lr`` is also the floor for "step", "exponential" and "plateau". Past ``total_steps``
    the lr stays at its final value.
    """

    _PLATEAU_THRESHOLD = 1e-4

    def __init__(self, optimizer: torch.optim.Optimizer, name: str = "constant", *, total_steps: int,
                 steps_per_epoch: int, warmup_steps: int = 0, milestones: tuple[int, ...] = (),
                 gamma: float = 0.1, min_lr: float = 0.0, patience: int = 5,
                 warmup_start_factor: float = 0.1) -> None:
        if name not in SCHEDULES:
            raise _unknown("learning-rate schedule", name, SCHEDULES)
        if total_steps < 1 or steps_per_epoch < 1:
            raise UserError(f"Received total_steps={total_steps}, steps_per_epoch={steps_per_epoch}; "
                            "both must be >= 1.")
        if not 0 <= warmup_steps <= total_steps:
            raise UserError(f"Received warmup_steps={warmup_steps}; expected 0 <= warmup_steps <= "
                            f"total_steps ({total_steps}).")
        if not 0.0 <= warmup_start_factor <= 1.0:
            raise UserError(f"Received warmup_start_factor={warmup_start_factor}; expected a value in [0, 1].")
        if not gamma > 0.0:
            raise UserError(f"Received gamma={gamma}; the decay factor must be positive.")
        if min_lr < 0.0 or patience < 0:
            raise UserError(f"Received min_lr={min_lr}, patience={patience}; both must be >= 0.")
        if any(m < 0 for m in milestones):
            raise UserError(f"Received milestones={tuple(milestones)}; milestone epochs must be >= 0.")
        self.optimizer = optimizer
        self.name = name
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.warmup_steps = warmup_steps
        self.milestones = tuple(sorted(milestones))
        self.gamma = gamma
        self.min_lr = min_lr
        self.patience = patience
        self.warmup_start_factor = warmup_start_factor
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.last_step = 0  # optimizer steps taken; the current lr is the one for step `last_step`
        self.epoch = 0
        self._plateau_scale = 1.0
        self._best = math.inf
        self._bad_epochs = 0
        self._apply()

    # -- the learning rate as a function of the step ------------------------------------------
    def _lr_at(self, base: float, s: int) -> float:
        if self.name == "onecycle":
            return self._onecycle(base, s)
        if s < self.warmup_steps:
            f = self.warmup_start_factor
            return base * (f + (1.0 - f) * s / self.warmup_steps)
        after = s - self.warmup_steps
        if self.name == "constant":
            return base
        if self.name == "step":
            epoch = s // self.steps_per_epoch
            return max(base * self.gamma ** sum(epoch >= m for m in self.milestones), self.min_lr)
        if self.name == "exponential":
            return max(base * self.gamma ** (after / self.steps_per_epoch), self.min_lr)
        if self.name == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            t = min(after, span) / span
            return self.min_lr + (base - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
        return max(base * self._plateau_scale, self.min_lr)  # plateau

    def _onecycle(self, max_lr: float, s: int) -> float:
        # Smith & Topin (2019), as torch.optim.lr_scheduler.OneCycleLR computes it.
        pct_start = self.warmup_steps / self.total_steps if self.warmup_steps else 0.3
        initial = max_lr / 25.0
        phases = ((float(pct_start * self.total_steps) - 1, initial, max_lr),
                  (self.total_steps - 1, max_lr, initial / 1e4))
        s = min(s, self.total_steps - 1)
        start = 0.0
        for i, (end, lr_from, lr_to) in enumerate(phases):
            if s <= end or i == len(phases) - 1:
                pct = (s - start) / (end - start) if end > start else 1.0
                return lr_to + (lr_from - lr_to) / 2.0 * (math.cos(math.pi * pct) + 1)
            start = end
        raise AssertionError("unreachable")

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            lr = self._lr_at(base, self.last_step)
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    # -- the loop's calls ------------------------------------------------------------------------
    def step(self) -> None:
        """Advance one optimizer step; call after every ``optimizer.step()``."""
        self.last_step += 1
        self._apply()

    def epoch_end(self, metric: float | None = None) -> None:
        """Close an epoch. "plateau" needs ``metric`` (lower is better, e.g. the validation loss)."""
        self.epoch += 1
        if self.name != "plateau":
            return
        if metric is None:
            raise UserError("The 'plateau' learning-rate schedule needs a validation metric at each "
                            "epoch end, but received metric=None; give the run validation data or "
                            f"pick another schedule ({', '.join(SCHEDULES)}).")
        value = float(metric)
        if value < self._best * (1.0 - self._PLATEAU_THRESHOLD):
            self._best = value
            self._bad_epochs = 0
        else:  # NaN counts as a bad epoch, as in PyTorch
            self._bad_epochs += 1
        if self._bad_epochs > self.patience:
            self._plateau_scale *= self.gamma
            self._bad_epochs = 0
        self._apply()

    def get_lr(self) -> list[float]:
        """The learning rate of each param group for the next optimizer step."""
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"name": self.name, "last_step": self.last_step, "epoch": self.epoch,
                "base_lrs": list(self.base_lrs), "plateau_scale": self._plateau_scale,
                "best": self._best, "bad_epochs": self._bad_epochs}

    def load_state_dict(self, d: dict) -> None:
        if d["name"] != self.name:
            raise UserError(f"Cannot resume a {d['name']!r} learning-rate schedule as {self.name!r}.")
        if len(d["base_lrs"]) != len(self.optimizer.param_groups):
            raise UserError(f"The saved schedule has {len(d['base_lrs'])} param groups, but the "
                            f"optimizer has {len(self.optimizer.param_groups)}.")
        self.last_step = int(d["last_step"])
        self.epoch = int(d["epoch"])
        self.base_lrs = [float(x) for x in d["base_lrs"]]
        self._plateau_scale = float(d["plateau_scale"])
        self._best = float(d["best"])
        self._bad_epochs = int(d["bad_epochs"])
        self._apply()


def clip_gradients(parameters: Iterable[torch.Tensor] | torch.Tensor, max_norm: float | None = None,
                   max_value: float | None = None) -> torch.Tensor | None:
    """Clip gradients in place: first each element to [-max_value, max_value], then the global
    L2 norm to ``max_norm`` (rescaling every gradient by max_norm / norm when the norm is larger).

    Returns the total gradient norm measured before norm clipping, as a tensor (no host sync),
    or None when ``max_norm`` is None.
    """
    if max_norm is not None and max_norm <= 0:
        raise UserError(f"Received max_norm={max_norm}; the gradient-norm limit must be positive.")
    if max_value is not None and max_value <= 0:
        raise UserError(f"Received max_value={max_value}; the gradient-value limit must be positive.")
    params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    if max_value is not None:
        nn.utils.clip_grad_value_(params, max_value)
    if max_norm is None:
        return None
    return nn.utils.clip_grad_norm_(params, max_norm)
