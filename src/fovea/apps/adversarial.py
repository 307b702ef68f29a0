"""Adversarial examples, fooling images and adversarial training: the limits of a trained classifier.

Every attack works on pixels in [0, 1]. A fovea classifier carries its own normalization
(:class:`~fovea.tasks.classify.ImageClassifier`), so gradients are taken with respect to the
pixels themselves and every result is clamped back to [0, 1], i.e. it is an image a file can hold.

- **FGSM**, the fast gradient sign method (Goodfellow, Shlens & Szegedy 2015, "Explaining and
  Harnessing Adversarial Examples"): ``x' = clip(x + eps * sign(grad_x J(x, y)))``, one gradient,
  an L-inf perturbation of exactly ``eps``. With ``norm="l2"`` it is the fast gradient method,
  ``x' = clip(x + eps * g / ||g||_2)``.
- **PGD**, projected gradient descent (iterated FGSM, Kurakin, Goodfellow & Bengio 2017; with a
  random start, Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial
  Attacks"): ``x <- Proj_{B(x0, eps) & [0,1]^n}(x + alpha * step(grad_x J))`` where ``step`` is
  ``sign(g)`` for L-inf and ``g / ||g||_2`` for L2; ``alpha`` defaults to ``2.5 * eps / steps``.
- **Targeted** attacks descend ``J(x, t)`` instead of ascending ``J(x, y)``: they move the image
  toward a chosen class ``t`` (the owl that becomes a cheetah).
- **Fooling images** (Nguyen, Yosinski & Clune 2015, "Deep Neural Networks are Easily Fooled"):
  start from noise or grey and ascend ``log p(t | x)`` with no bound on the change until the model
  is at least 99% sure that the image shows class ``t``.
- **Adversarial training** (Goodfellow et al. 2015): ``J~ = a J(x, y) + (1 - a) J(x_adv, y)``
  with ``a = 0.5``; :func:`adversarial_batch` makes ``x_adv`` inside a training step.

Attacks run the model in eval mode (batch norm on its running statistics, no dropout) and put
every module back in the mode it was in. Gradients are taken with ``torch.autograd.grad`` with
respect to the input only, so no parameter's ``.grad`` is touched.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fovea.errors import UserError
from fovea.models.base import eval_mode
from fovea.models.base import model_logits as _logits

__all__ = [
    "ATTACKS",
    "NORMS",
    "accuracy_under_attack",
    "adversarial_batch",
    "attack",
    "fgsm",
    "fooling_image",
    "pgd",
    "plot_attack_curve",
    "quantize",
]

ATTACKS = ("fgsm", "pgd")
NORMS = ("linf", "l2")
_TINY = 1e-12  # keeps a zero gradient or a zero perturbation from dividing by zero


# ---------------------------------------------------------------------------- helpers


def _pixels(x: Tensor) -> Tensor:
    """A detached float copy of a batch in [0, 1] (uint8 images are scaled by 1/255)."""
    if not isinstance(x, Tensor):
        raise UserError(f"Received images of type {type(x).__name__}, expected a torch.Tensor.")
    if not x.is_floating_point():
        return x.detach().float().div(255)
    return x.detach().clone()


def _check(eps: float, norm: str, steps: int = 1) -> None:
    try:
        ok = math.isfinite(float(eps)) and float(eps) >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"Received eps={eps!r}, expected a finite number >= 0.")
    if norm not in NORMS:
        raise UserError(f"Received norm={norm!r}, expected one of {', '.join(NORMS)}.")
    if not (isinstance(steps, int) and steps >= 1):
        raise UserError(f"Received steps={steps!r}, expected an integer >= 1.")


def _as_target(target, x: Tensor) -> Tensor | None:
    if target is None:
        return None
    t = torch.as_tensor(target, dtype=torch.long, device=x.device)
    return t.expand(len(x)) if t.dim() == 0 else t


def _objective(logits: Tensor, y: Tensor | None, target: Tensor | None) -> Tensor:
    """Per-example quantity the attack ascends: the loss of the true class, or minus the loss of
    the target class."""
    if target is not None:
        return -F.cross_entropy(logits, target, reduction="none")
    if y is None:
        raise UserError("An untargeted attack needs the labels y (or give a target).")
    return F.cross_entropy(logits, y, reduction="none")


def _input_grad(model: nn.Module, x: Tensor, y: Tensor | None, target: Tensor | None):
    """``(grad_x objective, objective, logits)``, all detached; parameter grads untouched."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = _logits(model, x)
        obj = _objective(logits, y, target)
        (grad,) = torch.autograd.grad(obj.sum(), x)
    return grad, obj.detach(), logits.detach()


def _flat_norm(t: Tensor) -> Tensor:
    """Per-example L2 norm, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _direction(grad: Tensor, norm: str) -> Tensor:
    """The steepest-ascent direction of unit size in the given norm."""
    if norm == "linf":
        return grad.sign()
    return grad / (_flat_norm(grad) + _TINY)


def _project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """Nearest point of the eps-ball around 0."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / (_flat_norm(delta) + _TINY)).clamp(max=1.0)


def _random_start(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A point drawn uniformly from the eps-ball (L-inf: a cube; L2: direction from a Gaussian,
    radius ``eps * u ** (1 / d)``)."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * eps
    d = x[0].numel()
    g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    r = torch.rand((len(x),) + (1,) * (x.dim() - 1), generator=generator, device=x.device, dtype=x.dtype)
    return g / (_flat_norm(g) + _TINY) * eps * r.pow(1.0 / d)


def quantize(x: Tensor, reference: Tensor | None = None) -> Tensor:
    """Round pixels to the 256 levels an 8-bit file holds, so what is reported is what is saved.

    With ``reference`` (the 8-bit original), the change from it is rounded toward zero instead,
    so the saved image stays inside any L-inf or L2 ball the float one was in.
    """
    if reference is None:
        return x.clamp(0, 1).mul(255).round().div(255)
    levels = (x - reference).mul(255)
    levels = torch.trunc(levels + levels.sign() * 1e-3)  # 24.9999 is 25 levels, not 24
    return (reference + levels / 255).clamp(0, 1)


def default_alpha(eps: float, steps: int) -> float:
    """Madry et al.'s step size: 2.5 * eps / steps, enough to cross the ball and come back."""
    return 2.5 * eps / steps


# ---------------------------------------------------------------------------- attacks


def fgsm(model: nn.Module, x: Tensor, y: Tensor | None, eps: float, target=None, norm: str = "linf") -> Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): ``clip(x + eps * sign(grad_x J(x, y)))``.

    ``x`` holds pixels in [0, 1] (uint8 is scaled); ``y`` the labels to move away from. With
    ``target`` (a class index, or one per image) the step instead descends ``J(x, target)``.
    ``norm="l2"`` takes the fast gradient method step ``eps * g / ||g||_2``. Returns the
    adversarial batch, detached, in [0, 1].
    """
    _check(eps, norm)
    x0 = _pixels(x)
    with eval_mode(model):
        grad, _, _ = _input_grad(model, x0, y, _as_target(target, x0))
    return (x0 + eps * _direction(grad, norm)).clamp_(0, 1)


def _pgd(model, x0, y, eps, steps, alpha, norm, random_start, target, keep_best, generator) -> Tensor:
    x_adv = x0 + _random_start(x0, eps, norm, generator) if random_start else x0.clone()
    x_adv = x_adv.clamp_(0, 1)
    best, best_obj = None, None
    for _ in range(steps):
        grad, obj, _ = _input_grad(model, x_adv, y, target)
        if keep_best:  # obj belongs to the current iterate, before this step
            best, best_obj = _keep_better(best, best_obj, x_adv, obj)
        x_adv = x_adv + alpha * _direction(grad, norm)
        x_adv = (x0 + _project(x_adv - x0, eps, norm)).clamp_(0, 1)
    if not keep_best:
        return x_adv.detach()
    with torch.no_grad():
        obj = _objective(_logits(model, x_adv), y, target)
    best, _ = _keep_better(best, best_obj, x_adv, obj)
    return best


def _keep_better(best, best_obj, x, obj):
    if best is None:
        return x.detach().clone(), obj
    better = obj > best_obj
    best[better] = x[better].detach()
    return best, torch.where(better, obj, best_obj)


def pgd(model: nn.Module, x: Tensor, y: Tensor | None, eps: float, steps: int = 10, alpha: float | None = None,
        norm: str = "linf", random_start: bool = True, target=None, keep_best: bool = True,
        generator: torch.Generator | None = None) -> Tensor:
    """Projected gradient descent (Kurakin et al. 2017; Madry et al. 2018).

    ``steps`` signed (L-inf) or L2-normalized gradient steps of size ``alpha`` (default
    ``2.5 * eps / steps``), each followed by projection onto the eps-ball around ``x`` and onto
    [0, 1]. ``random_start`` begins at a uniform point of the ball (``generator`` seeds it).
    ``target`` makes it targeted. With ``keep_best`` each image ends at the iterate with the
    highest loss seen (for a targeted attack: the lowest loss of the target), so more steps never
    make the attack weaker. Returns the adversarial batch, detached, in [0, 1].
    """
    _check(eps, norm, steps)
    if alpha is not None and not alpha > 0:
        raise UserError(f"Received alpha={alpha!r}, expected a step size > 0.")
    x0 = _pixels(x)
    alpha = default_alpha(eps, steps) if alpha is None else alpha
    with eval_mode(model):
        return _pgd(model, x0, y, eps, steps, alpha, norm, random_start, _as_target(target, x0), keep_best, generator)


def attack(model: nn.Module, x: Tensor, y: Tensor | None, method: str, eps: float, **kwargs) -> Tensor:
    """Dispatch by name: ``"fgsm"`` or ``"pgd"`` with their keyword arguments."""
    if method == "fgsm":
        return fgsm(model, x, y, eps, **{k: v for k, v in kwargs.items() if k in ("target", "norm")})
    if method == "pgd":
        return pgd(model, x, y, eps, **kwargs)
    raise UserError(f"Received method={method!r}, expected one of {', '.join(ATTACKS)}.")


def adversarial_batch(model: nn.Module, x: Tensor, y: Tensor, method: str, eps: float, steps: int = 7,
                      alpha: float | None = None, norm: str = "linf") -> Tensor:
    """Adversarial copies of a training batch, for adversarial training (Goodfellow et al. 2015:
    ``J~ = 0.5 J(x, y) + 0.5 J(x_adv, y)``; Madry et al. 2018 with ``method="pgd"``).

    ``"fgsm"``: one signed step of ``eps``. ``"pgd"``: ``steps`` steps of ``alpha`` (default
    ``2.5 * eps / steps``) from a random start, returning the last iterate. The model may be in
    train mode: the attack runs in eval mode (batch-norm statistics are not updated) and every
    module's mode is restored; only the input gradient is computed, no parameter ``.grad`` is
    written. Returns a detached tensor like ``x``.
    """
    if method == "fgsm":
        return fgsm(model, x, y, eps, norm=norm)
    if method == "pgd":
        return pgd(model, x, y, eps, steps=steps, alpha=alpha, norm=norm, random_start=True, keep_best=False)
    raise UserError(f"Received adversarial training method={method!r}, expected one of {', '.join(ATTACKS)}.")


def fooling_image(model: nn.Module, target: int, shape: Sequence[int], steps: int = 500, lr: float = 0.01,
                  confidence: float = 0.99, generator: torch.Generator | None = None, start: str | Tensor = "noise",
                  ) -> tuple[Tensor, float, int]:
    """An image the model assigns to class ``target`` with probability >= ``confidence``, grown
    from noise (Nguyen, Yosinski & Clune 2015).

    Starts from uniform noise (``start="noise"``, seeded by ``generator``), mid-grey
    (``"grey"``) or a given ``(C, H, W)`` image in [0, 1], and takes signed steps of ``lr`` up
    ``grad_x log p(target | x)``, clamped to [0, 1]. The confidence is measured on the image
    rounded to 8 bits, the one a PNG holds. Stops as soon as it is reached or after ``steps``
    steps. Returns ``(image (C, H, W) in [0, 1], its confidence, steps taken)``.
    """
    c, h, w = (int(s) for s in shape[-3:])
    params = list(model.parameters()) or list(model.buffers())
    device = params[0].device if params else torch.device("cpu")
    if isinstance(start, Tensor):
        x = _pixels(start).to(device).reshape(1, c, h, w)
    elif start == "noise":
        x = torch.rand((1, c, h, w), generator=generator, device=device)
    elif start == "grey":
        x = torch.full((1, c, h, w), 0.5, device=device)
    else:
        raise UserError(f"Received start={start!r}, expected 'noise', 'grey' or an image tensor.")
    if not 0 < confidence < 1:
        raise UserError(f"Received confidence={confidence!r}, expected a probability in (0, 1).")
    t = _as_target(target, x)
    with eval_mode(model):
        with torch.no_grad():
            k = _logits(model, x).shape[1]
        if not 0 <= int(t[0]) < k:
            raise UserError(f"Received target={int(t[0])}, expected a class index in 0..{k - 1}.")
        for step in range(steps + 1):
            q = quantize(x)
            grad, _, logits = _input_grad(model, q, None, t)
            p = float(logits.softmax(1)[0, t[0]])
            if p >= confidence or step == steps:
                return q[0], p, step
            x = (x + lr * grad.sign()).clamp_(0, 1)  # gradient of the rounded image, applied to x
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- evaluation


def _iter_batches(data, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    if hasattr(data, "epoch"):  # fovea.train.data.Batches
        for xb, yb, *_ in data.epoch(0):
            yield xb, yb
    elif isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
        x, y = data
        for i in range(0, len(y), batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
    else:
        for item in data:
            yield item[0], item[1]


def accuracy_under_attack(model: nn.Module, data: Iterable | tuple[Tensor, Tensor], method: str,
                          eps_list: Sequence[float], batch_size: int = 256, **kwargs) -> dict[float, float]:
    """Accuracy of ``model`` on adversarial copies of ``data`` for each eps: ``{eps: accuracy}``.

    ``data`` is a :class:`~fovea.train.data.Batches`, an ``(images, labels)`` pair of tensors
    (split into ``batch_size`` chunks) or an iterable of ``(images, labels, ...)`` batches;
    images are uint8 or float in [0, 1]. ``eps = 0`` is the clean accuracy. ``kwargs`` go to the
    attack (``steps``, ``alpha``, ``norm``, ``random_start``, ``generator`` for PGD; ``norm`` for
    FGSM).
    """
    if method not in ATTACKS:
        raise UserError(f"Received method={method!r}, expected one of {', '.join(ATTACKS)}.")
    for eps in eps_list:
        _check(eps, kwargs.get("norm", "linf"))
    correct = {float(e): 0 for e in eps_list}
    n = 0
    with eval_mode(model):
        for xb, yb in _iter_batches(data, batch_size):
            x = _pixels(xb)
            n += len(yb)
            for eps in correct:
                x_adv = x if eps == 0 else attack(model, x, yb, method, eps, **kwargs)
                with torch.no_grad():
                    correct[eps] += int((_logits(model, x_adv).argmax(1) == yb).sum())
    if n == 0:
        raise UserError("No images to attack: the data are empty.")
    return {eps: c / n for eps, c in correct.items()}


def plot_attack_curve(curves: dict[str, dict[float, float]], path: str | Path, title: str | None = None) -> Path:
    """Accuracy against eps, one line per entry of ``curves`` (``{label: {eps: accuracy}}``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (label, curve) in enumerate(curves.items()):
        eps = sorted(curve)
        ax.plot(eps, [100 * curve[e] for e in eps], marker="o", color=f"C{i}", label=label.replace("$", r"\$"))
    ax.set_xlabel("eps (L-inf, pixels in [0, 1])" if all("l2" not in k for k in curves) else "eps")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title((title or "accuracy under attack").replace("$", r"\$"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path
