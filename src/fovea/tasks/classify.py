"""Image classification: cross-entropy (or label smoothing, or the multiclass hinge) on a
registered model or a spec string; accuracy and top-5; a confusion matrix and the misclassified
examples in the report."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fovea.errors import UserError
from fovea.models.base import AuxOutputs
from fovea.tasks.base import Task, register_task


class ImageClassifier(nn.Module):
    """The network with its fitted pre-processing in front, so a saved model takes images in
    [0, 1] and needs nothing else. ``net`` is the backbone with the common classifier surface."""

    def __init__(self, net: nn.Module, preprocess: nn.Module):
        super().__init__()
        self.preprocess = preprocess
        self.net = net

    def forward(self, x: torch.Tensor):
        return self.net(self.preprocess(x))


def build_net(name: str, num_classes: int, in_channels: int, image_size: tuple[int, int],
              model_kwargs: dict | None = None, weights=None) -> nn.Module:
    from fovea.models.registry import create_model, is_spec, list_models

    kwargs = dict(model_kwargs or {})
    if name not in list_models() and is_spec(name):
        kwargs["input_size"] = tuple(image_size)
    return create_model(name, num_classes=num_classes, in_channels=in_channels, weights=weights, **kwargs)


def topk_correct(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum()


@register_task
class Classify(Task):
    name = "classify"
    monitor = "acc"
    monitor_mode = "max"

    def build_model(self, cfg, data, image_size):
        from fovea.data.transforms import Preprocess
        from fovea.losses.classification import build_loss

        from fovea.train import finetune

        self.loss_fn = build_loss(cfg.loss, smoothing=cfg.smoothing, margin=cfg.margin)
        self.aux_weight = cfg.aux_weight
        self.adv = (cfg.adv_train, cfg.adv_eps) if cfg.adv_train else None
        if self.adv and cfg.adv_train not in ("fgsm", "pgd"):
            raise UserError(f"--adv-train {cfg.adv_train!r}: expected fgsm or pgd")
        run_info, weights = finetune.resolve_init(cfg.init)
        # starting from a fovea run means its architecture; the output layer is rebuilt for these classes
        self.model_name, self.model_kwargs = ((run_info["model"], run_info.get("model_kwargs") or {}) if run_info
                                              else (cfg.model, cfg.model_kwargs))
        net = build_net(self.model_name, len(data.classes), data.in_channels, image_size, self.model_kwargs,
                        None if run_info else weights)
        if run_info:
            finetune.load_run_weights(net, weights)
        modules = [m.strip() for m in (cfg.freeze_modules or "").split(",") if m.strip()]
        shape = (data.in_channels, *image_size)
        finetune.apply_freeze(net, cfg.freeze, cfg.freeze_until, modules, input_shape=shape)
        if cfg.freeze_bn:
            finetune.freeze_batchnorm(net)
        self.lr_backbone, self.input_shape = cfg.lr_backbone, shape
        return ImageClassifier(net, Preprocess(cfg.preprocess))

    def param_groups(self, model, cfg, lr):
        from fovea.train.finetune import param_groups

        return param_groups(model.net, lr, self.lr_backbone, self.input_shape)

    def training_step(self, model, x, y):
        if self.adv is not None:  # half clean, half adversarial (Goodfellow et al. 2015)
            from fovea.apps.adversarial import adversarial_batch

            x = torch.cat([x, adversarial_batch(model, x, y, self.adv[0], self.adv[1])])
            y = torch.cat([y, y])
        out = model(x)
        if isinstance(out, AuxOutputs):  # GoogLeNet / Inception: auxiliary losses, weighted
            logits = out.logits
            loss = self.loss_fn(logits, y) + self.aux_weight * sum(self.loss_fn(a, y) for a in out.aux)
        else:
            logits = out
            loss = self.loss_fn(logits, y)
        n = len(y)
        return loss, dict(loss=loss.detach() * n, acc=(logits.detach().argmax(1) == y).sum(), count=n)

    def eval_step(self, model, x, y):
        logits = model(x)
        n = len(y)
        return dict(loss=self.loss_fn(logits, y) * n, acc=(logits.argmax(1) == y).sum(),
                    top5=topk_correct(logits, y, 5), count=n)

    def export_info(self, cfg, data, image_size):
        return dict(model=self.model_name, model_kwargs=self.model_kwargs, num_classes=len(data.classes),
                    in_channels=data.in_channels, image_size=list(image_size), classes=list(data.classes),
                    preprocess=cfg.preprocess, data=cfg.data)

    def report(self, run, model, data, batches_for):
        from fovea.report.html import write_report
        from fovea.report.plots import plot_confusion, plot_curves, plot_image_grid

        split_name, split = ("test", data.test) if data.test is not None else ("val", data.val)
        out: dict = {}
        plot_curves(run.metrics_path, run.plots)
        if split is not None:
            logits, labels, images = predict_batches(model, batches_for(split))
            cm = confusion_matrix(logits.argmax(1), labels, len(data.classes))
            plot_confusion(cm, data.classes, run.plots / "confusion.png")
            probs = logits.softmax(1)
            pred = probs.argmax(1)
            wrong = (pred != labels).nonzero().flatten()[:32]
            if len(wrong):
                titles = [f"{data.classes[labels[i]]} -> {data.classes[pred[i]]} ({probs[i, pred[i]]:.2f})" for i in wrong]
                plot_image_grid(images[wrong], titles, run.plots / "misclassified.png",
                                title=f"misclassified {split_name} examples")
            out["confusion"] = cm.tolist()
        write_report(run.path, title=f"fovea classify: {run.path.name}")
        return out


@torch.no_grad()
def predict_batches(model: nn.Module, batches) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits, labels and uint8 images of a whole split (CPU tensors)."""
    model.eval()
    logits, labels, images = [], [], []
    for xb, yb, _ in batches.epoch(0):
        out = model(xb.float().div_(255))
        logits.append(out.float().cpu())
        labels.append(yb.cpu())
        images.append(xb.cpu())
    return torch.cat(logits), torch.cat(labels), torch.cat(images)


def confusion_matrix(pred: torch.Tensor, true: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows: true class; columns: predicted class."""
    return torch.bincount(true * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)


def load_classifier(run_dir: str | Path, device="cpu") -> tuple[ImageClassifier, dict]:
    """The trained model of a run (from model.safetensors + model.json), in eval mode."""
    from safetensors.torch import load_file

    from fovea.data.transforms import Preprocess
    from fovea.train.run import Run

    run = Run.existing(run_dir)
    info = run.read_json("model.json")
    if info.get("task") != "classify":
        raise UserError(f"run {str(run.path)!r} is a {info.get('task')!r} run, not a classifier")
    net = build_net(info["model"], info["num_classes"], info["in_channels"], tuple(info["image_size"]),
                    info.get("model_kwargs"))
    state = load_file(str(run.path / "model.safetensors"))
    model = ImageClassifier(net, Preprocess(info["preprocess"]))
    model.load_state_dict(state)  # Preprocess resizes its fitted buffers to what the file holds
    return model.to(device).eval(), info


__all__ = ["Classify", "ImageClassifier", "build_net", "confusion_matrix", "load_classifier", "predict_batches"]
