"""Autoencoders: undercomplete (fully connected, convolutional, linear), sparse, denoising,
contractive and variational, trained to reconstruct their input; anomaly detection by
reconstruction error (or negative ELBO) when trained on the normal classes only.

Each ``--kind`` is an architecture plus the terms of its loss:

=============  ============  ===================================================================
kind           default arch  loss (reconstruction R summed over the pixels of an image)
=============  ============  ===================================================================
fc             fc            R(x, g(f(x)))
conv           conv          R(x, g(f(x)))
linear         linear        R(x, g(f(x))), no nonlinearity: learns the PCA subspace
sparse         fc            R + lambda * sum_j |h_j|                          (``--sparsity``)
denoising      conv          R(x, g(f(x~))), x~ the corrupted input             (``--noise``)
contractive    fc            R + lambda * ||dh/dx||_F^2                        (``--contraction``)
vae            conv          R + beta * KL(q(z|x) || N(0, I))                   (``--beta``)
=============  ============  ===================================================================
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fovea.errors import UserError
from fovea.tasks.base import Task, register_task

KINDS = {"fc": "fc", "conv": "conv", "linear": "linear", "sparse": "fc", "denoising": "conv",
         "contractive": "fc", "vae": "conv"}


def parse_noise(text: str) -> tuple[str, float]:
    """``gaussian:0.3`` or ``mask:0.5`` -> (kind, level)."""
    kind, _, level = text.partition(":")
    if kind not in ("gaussian", "mask"):
        raise UserError(f"--noise {text!r}: expected gaussian:SIGMA or mask:P")
    try:
        value = float(level) if level else (0.3 if kind == "gaussian" else 0.5)
    except ValueError:
        raise UserError(f"--noise {text!r}: {level!r} is not a number") from None
    if value < 0 or (kind == "mask" and value > 1):
        raise UserError(f"--noise {text!r}: the level must be >= 0 (and at most 1 for mask)")
    return kind, value


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UserError(f"unknown autoencoder kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def sigmoid_encoder_weight(model: nn.Module) -> torch.Tensor | None:
    """W of a one-layer sigmoid encoder h = sigmoid(W x + b), whose contractive penalty has a
    closed form; None for any other encoder (the penalty then comes from autograd)."""
    return model.code_layer.weight if getattr(model, "sigmoid_code", False) else None


def image_errors(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per-pixel squared reconstruction error, (B, H, W), averaged over channels."""
    return (model(x).recon.float() - x.float()).pow(2).mean(1)


def anomaly_scores(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per-image anomaly score: mean squared reconstruction error, or for a VAE the negative
    ELBO (reconstruction term + KL, in nats per image, BCE likelihood)."""
    import torch.nn.functional as F

    out = model(x)
    if getattr(model, "variational", False):  # per image: the batch means of losses.generative, unreduced
        rec = F.binary_cross_entropy(out.recon.float(), x.float(), reduction="none").flatten(1).sum(1)
        mu, logvar = out.mu.float(), out.logvar.float()
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
        return rec + kl
    return (out.recon.float() - x.float()).pow(2).flatten(1).mean(1)


@torch.no_grad()
def dae_chain(model: nn.Module, start: torch.Tensor, steps: int, noise: tuple[str, float],
              generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Sampling by the denoising autoencoder's Markov chain (Bengio et al. 2013): corrupt,
    reconstruct, repeat. Returns the states after each step."""
    from fovea.losses.generative import corrupt

    x, states = start, []
    for _ in range(steps):
        x = model(corrupt(x, noise[0], noise[1], generator=generator)).recon
        states.append(x)
    return states


@register_task
class Autoencode(Task):
    name = "autoencoder"
    monitor = "loss"

    def label(self, cfg) -> str:
        return f"ae-{cfg.kind}"

    def prepare_data(self, cfg, data):
        if not cfg.normal_classes:
            return data
        from fovea.data.subset import keep_normal, parse_classes

        return keep_normal(data, parse_classes(cfg.normal_classes, data.classes))

    def build_model(self, cfg, data, image_size):
        from fovea.models.autoencoder import build_autoencoder

        self.kind = check_kind(cfg.kind)
        arch = cfg.arch or KINDS[self.kind]
        act = cfg.encoder_act or ("sigmoid" if self.kind == "contractive" else "relu")
        hidden = cfg.hidden
        if self.kind == "contractive" and hidden is None and arch == "fc":
            hidden = []  # one sigmoid layer: the penalty's closed form applies
        self.recon = cfg.recon_loss or ("bce" if self.kind == "vae" else "mse")
        if self.recon not in ("mse", "bce"):
            raise UserError(f"--recon-loss {self.recon!r}: expected mse or bce")
        self.noise = parse_noise(cfg.noise)
        self.cfg = cfg
        self.arch_info = dict(arch=arch, in_channels=data.in_channels, image_size=list(image_size),
                              latent_dim=cfg.latent_dim, hidden=hidden, variational=self.kind == "vae",
                              encoder_act=act)
        model = build_autoencoder(arch, data.in_channels, tuple(image_size), latent_dim=cfg.latent_dim,
                                  hidden=hidden, variational=self.kind == "vae", encoder_act=act)
        self.arch_info["latent_dim"] = model.latent_dim
        self.exact_weight = self.kind == "contractive" and sigmoid_encoder_weight(model) is not None
        return model

    def _input(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        from fovea.losses.generative import corrupt

        return corrupt(x, *self.noise, generator=generator) if self.kind == "denoising" else x

    def _loss(self, model, x, inp) -> tuple[torch.Tensor, dict]:
        from fovea.losses.generative import (contractive_penalty_autograd, contractive_penalty_sigmoid,
                                             reconstruction_loss, sparse_penalty, vae_kl)

        out = model(inp)
        rec = reconstruction_loss(out.recon.float(), x.float(), self.recon)
        loss, n = rec, len(x)
        stats = dict(mse=(out.recon.detach().float() - x.float()).pow(2).flatten(1).mean(1).sum())
        if self.kind == "sparse":
            loss = loss + sparse_penalty(out.code.float(), self.cfg.sparsity)
        elif self.kind == "contractive":
            weight = sigmoid_encoder_weight(getattr(model, "module", model)) if self.exact_weight else None
            if weight is not None:
                loss = loss + contractive_penalty_sigmoid(out.code.float(), weight.float(), self.cfg.contraction)
            else:
                loss = loss + contractive_penalty_autograd(model.encode, inp, self.cfg.contraction,
                                                           create_graph=torch.is_grad_enabled())
        elif self.kind == "vae":
            kl = vae_kl(out.mu.float(), out.logvar.float())
            loss = loss + self.cfg.beta * kl
            stats["kl"] = kl.detach() * n
        if self.kind == "denoising":
            stats["noisy_mse"] = (inp.float() - x.float()).pow(2).flatten(1).mean(1).sum()
        return loss, dict(loss=loss.detach() * n, recon=rec.detach() * n, **stats, count=n)

    def training_step(self, model, x, y):
        return self._loss(model, x, self._input(x))

    def eval_step(self, model, x, y):
        # the same corruption on every evaluation, so validation losses compare across epochs
        g = torch.Generator(device=x.device).manual_seed(len(x))
        with torch.enable_grad() if self.kind == "contractive" and not self.exact_weight else torch.no_grad():
            _, stats = self._loss(model, x, self._input(x, generator=g))
        return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in stats.items()}

    def export_info(self, cfg, data, image_size):
        return dict(kind=self.kind, **self.arch_info, recon_loss=self.recon, noise=cfg.noise,
                    classes=list(data.classes), data=cfg.data,
                    normal_classes=getattr(data, "normal_classes", None))

    def report(self, run, model, data, batches_for):
        from fovea.report.html import write_report
        from fovea.report.plots import plot_curves

        plot_curves(run.metrics_path, run.plots)
        split = data.test if data.test is not None else data.val
        out: dict = {}
        if split is not None:
            out = autoencoder_report(model, batches_for(split), run.plots, kind=self.kind, noise=self.noise,
                                     classes=data.classes, normal=getattr(data, "normal_classes", None),
                                     val=batches_for(data.val) if data.val is not None else None)
            if "anomaly" in out:
                run.write_json("anomaly.json", out["anomaly"])
        write_report(run.path, title=f"fovea autoencoder ({self.kind}): {run.path.name}")
        return out


@torch.no_grad()
def collect(model: nn.Module, batches, limit: int | None = None) -> dict[str, torch.Tensor]:
    """Images, labels, codes, reconstructions and anomaly scores of a split (CPU tensors)."""
    model.eval()
    keys = ("images", "labels", "codes", "recons", "scores")
    parts: dict[str, list] = {k: [] for k in keys}
    seen = 0
    for xb, yb, _ in batches.epoch(0):
        x = xb.float().div(255)
        out = model(x)
        parts["images"].append(xb.cpu())
        parts["labels"].append(yb.cpu())
        parts["codes"].append(out.code.float().cpu())
        parts["recons"].append(out.recon.float().cpu())
        parts["scores"].append(anomaly_scores(model, x).cpu())
        seen += len(xb)
        if limit and seen >= limit:
            break
    return {k: torch.cat(v) for k, v in parts.items()}


@torch.no_grad()
def autoencoder_report(model, batches, plots: Path, *, kind: str, noise: tuple[str, float], classes,
                       normal: list[int] | None = None, val=None) -> dict:
    """The run's pictures: reconstructions, samples (VAE, denoising chain), a latent
    interpolation strip, a 2-D latent scatter coloured by label, the reconstruction-error
    histogram; with ``normal`` classes, anomaly ROC-AUC and a threshold chosen on ``val``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fovea.losses.generative import corrupt
    from fovea.report.plots import plot_image_grid

    model.eval()
    d = collect(model, batches)
    x = d["images"].float().div(255)
    out: dict = dict(test_mse=float((d["recons"] - x).pow(2).mean()))
    n = min(8, len(x))
    rows = [x[:n]]
    if kind == "denoising":
        g = torch.Generator().manual_seed(0)
        noisy = corrupt(x[:n], *noise, generator=g)
        rows += [noisy, model(noisy).recon.float()]
        out["noisy_mse"] = float((corrupt(x, *noise, generator=torch.Generator().manual_seed(1)) - x).pow(2).mean())
    else:
        rows.append(d["recons"][:n])
    names = ["input", "corrupted", "reconstruction"] if kind == "denoising" else ["input", "reconstruction"]
    plot_image_grid(torch.cat(rows), [f"{names[r]}" for r in range(len(rows)) for _ in range(n)],
                    plots / "reconstructions.png", ncols=n, title="reconstructions")

    g = torch.Generator().manual_seed(0)
    if getattr(model, "variational", False):
        plot_image_grid(model.sample(64, generator=g).float(), None, plots / "samples.png",
                        title="samples: decoder(z), z ~ N(0, I)")
    elif kind == "denoising":
        start = torch.rand(8, *x.shape[1:], generator=g)
        states = dae_chain(model, start, 10, noise, generator=g)
        plot_image_grid(torch.cat([start] + states[::2]), None, plots / "samples.png", ncols=8,
                        title="denoising chain from noise: corrupt, reconstruct, repeat (rows: steps 0, 1, 3, ...)")

    if len(x) >= 2:  # interpolate between two images of different classes when there are some
        j = next((i for i in range(1, len(x)) if d["labels"][i] != d["labels"][0]), 1)
        z0, z1 = model.encode(x[:1]), model.encode(x[j:j + 1])
        t = torch.linspace(0, 1, 11)[:, None]  # steps of exactly 0.1, so the captions are the weights
        strip = model.decode(z0 * (1 - t) + z1 * t).float()
        plot_image_grid(strip, [f"{v:.1f}" for v in t.flatten().tolist()], plots / "interpolation.png", ncols=11,
                        title="latent interpolation")

    codes = d["codes"].numpy()
    if codes.shape[1] >= 2:
        from sklearn.decomposition import PCA

        xy = codes if codes.shape[1] == 2 else PCA(2, random_state=0).fit_transform(codes)
        fig, ax = plt.subplots(figsize=(5, 4.5))
        labels = d["labels"].numpy()
        for c in sorted(set(labels.tolist())):
            m = labels == c
            ax.scatter(xy[m, 0], xy[m, 1], s=3, label=str(classes[c]) if c < len(classes) else str(c))
        ax.set_title("latent codes" + ("" if codes.shape[1] == 2 else f" (PCA of {codes.shape[1]}-d)"))
        ax.legend(markerscale=3, fontsize=6, loc="best")
        fig.tight_layout()
        fig.savefig(plots / "latent.png", dpi=100)
        plt.close(fig)

    scores = d["scores"].numpy()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    if normal:
        is_anomaly = ~torch.isin(d["labels"], torch.tensor(normal)).numpy()
        ax.hist(scores[~is_anomaly], bins=60, alpha=0.6, label="normal", density=True)
        ax.hist(scores[is_anomaly], bins=60, alpha=0.6, label="anomalous", density=True)
        ax.legend()
    else:
        ax.hist(scores, bins=60)
    ax.set_xlabel("negative ELBO" if getattr(model, "variational", False) else "reconstruction MSE")
    ax.set_title("anomaly score per image" if normal else "reconstruction error per image")
    fig.tight_layout()
    fig.savefig(plots / "errors.png", dpi=100)
    plt.close(fig)

    if normal:
        from fovea.apps.generative import anomaly_metrics, pick_threshold

        threshold = None
        if val is not None:
            threshold = pick_threshold(collect(model, val)["scores"].numpy(), 0.95)
        metrics = anomaly_metrics(scores, is_anomaly, threshold)
        out["anomaly"] = dict(normal_classes=[classes[c] for c in normal],
                              threshold_rule="95th percentile of the normal validation scores", **metrics)
    return out


def load_autoencoder(run_dir: str | Path, device="cpu") -> tuple[nn.Module, dict]:
    """The trained autoencoder of a run (model.safetensors + model.json), in eval mode."""
    from fovea.models.autoencoder import build_autoencoder
    from fovea.train.run import Run

    run = Run.existing(run_dir)
    info = run.read_json("model.json")
    if info.get("task") != "autoencoder":
        raise UserError(f"run {str(run.path)!r} is a {info.get('task')!r} run, not an autoencoder")
    model = build_autoencoder(info["arch"], info["in_channels"], tuple(info["image_size"]),
                              latent_dim=info["latent_dim"], hidden=info["hidden"],
                              variational=info["variational"], encoder_act=info["encoder_act"])
    run.load_weights(model)
    return model.to(device).eval(), info


__all__ = ["KINDS", "Autoencode", "anomaly_scores", "autoencoder_report", "check_kind", "collect", "dae_chain",
           "image_errors", "load_autoencoder", "parse_noise", "sigmoid_encoder_weight"]
