"""Generative adversarial networks (Goodfellow et al. 2014): a generator G and a discriminator D
with separate optimizers, trained in turns by the same loop as every other task.

Each batch of real images is one discriminator step on
L(D) = -E log D(x) - E log(1 - D(G(z))); every ``--d-steps``-th batch is followed by one
generator step on ``minimax`` (L(G) = -L(D): minimize E log(1 - D(G(z)))) or
``non-saturating`` (-1/2 E log D(G(z))). Images are scaled from [0, 1] to [-1, 1], the range of
the generator's tanh output.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fovea.errors import UserError
from fovea.tasks.base import Task, register_task

FIXED_SAMPLES = 64  # the fixed-noise grid drawn after every epoch
STRIP = 8  # samples per epoch in the progress strip


class GAN(nn.Module):
    """The generator and the discriminator in one module, so one checkpoint holds both; the
    fixed noise of the per-epoch sample grid is a buffer, saved and resumed with them."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, seed: int = 0):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("fixed_noise", torch.randn(FIXED_SAMPLES, generator.latent_dim, generator=g))

    @property
    def latent_dim(self) -> int:
        return self.generator.latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from codes z."""
        return self.generator(z).add(1).div(2)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator).to(self.fixed_noise.device)
        return self(z)


@register_task
class TrainGAN(Task):
    name = "gan"
    monitor = None  # a GAN's losses do not rank its epochs; the last epoch is kept
    manual = True

    def label(self, cfg) -> str:
        return f"gan-{cfg.arch or 'dcgan'}"

    def build_model(self, cfg, data, image_size):
        from fovea.losses.generative import GAN_LOSSES
        from fovea.models.gan import GAN_ARCHS, build_gan

        self.arch = cfg.arch or "dcgan"
        if self.arch not in GAN_ARCHS:
            raise UserError(f"--arch {self.arch!r}: a GAN is one of {', '.join(GAN_ARCHS)}")
        if cfg.gan_loss not in GAN_LOSSES:
            raise UserError(f"--gan-loss {cfg.gan_loss!r}: expected one of {', '.join(GAN_LOSSES)}")
        if cfg.d_steps < 1:
            raise UserError(f"--d-steps {cfg.d_steps} must be at least 1")
        self.loss_kind, self.d_steps = cfg.gan_loss, cfg.d_steps
        self.latent = cfg.latent_dim or 100
        g, d = build_gan(self.arch, data.in_channels, tuple(image_size), latent_dim=self.latent, width=cfg.width)
        self.strip: list[torch.Tensor] = []
        return GAN(g, d, seed=cfg.seed)

    def optimizers(self, model, cfg, lr):
        # DCGAN's Adam: beta1 = 0.5 (Radford et al. 2016) when Adam is chosen
        kwargs = dict(betas=(0.5, 0.999)) if cfg.optimizer in ("adam", "adamw") else {}
        return {"discriminator": dict(params=list(model.discriminator.parameters()), lr=cfg.lr_d or lr, kwargs=kwargs),
                "generator": dict(params=list(model.generator.parameters()), lr=lr, kwargs=kwargs)}

    def _losses(self, model, real, need_g: bool):
        from fovea.losses.generative import discriminator_loss, generator_loss

        g, d = model.generator, model.discriminator
        z = torch.randn(len(real), self.latent, device=real.device)
        fake = g(z)
        real_logits, fake_logits = d(real), d(fake.detach())
        d_loss = discriminator_loss(real_logits.float(), fake_logits.float())
        g_loss = generator_loss(d(fake).float(), self.loss_kind) if need_g else None
        return d_loss, g_loss, real_logits.detach().float(), fake_logits.detach().float()

    def manual_step(self, model, x, y, step, index):
        real = x * 2 - 1
        n = len(real)
        d_loss, _, real_logits, fake_logits = self._losses(model, real, need_g=False)
        step("discriminator", d_loss)
        stats = dict(d_loss=d_loss.detach() * n, d_real=torch.sigmoid(real_logits).sum(),
                     d_fake=torch.sigmoid(fake_logits).sum(), count=n)
        g_loss = torch.zeros((), device=real.device)
        if (index + 1) % self.d_steps == 0:
            from fovea.losses.generative import generator_loss

            z = torch.randn(n, self.latent, device=real.device)
            g_loss = generator_loss(model.discriminator(model.generator(z)).float(), self.loss_kind)
            step("generator", g_loss)
            stats["g_loss"] = g_loss.detach() * n * self.d_steps  # averaged over the epoch's batches
        loss = d_loss.detach() + g_loss.detach()
        return loss, dict(loss=loss * n, **stats)

    def eval_step(self, model, x, y):
        d_loss, g_loss, real_logits, fake_logits = self._losses(model, x * 2 - 1, need_g=True)
        n = len(x)
        return dict(loss=(d_loss + g_loss) * n, d_loss=d_loss * n, g_loss=g_loss * n,
                    d_real=torch.sigmoid(real_logits).sum(), d_fake=torch.sigmoid(fake_logits).sum(), count=n)

    def epoch_end(self, run, model, epoch):
        from fovea.report.plots import plot_image_grid

        was = model.training
        model.eval()
        with torch.no_grad():
            images = model(model.fixed_noise).float().cpu()
        model.train(was)
        plot_image_grid(images, None, run.plots / "samples" / f"epoch-{epoch:03d}.png",
                        title=f"fixed noise, epoch {epoch}")
        torch.save(images[:STRIP].clone(), run.plots / "samples" / f"epoch-{epoch:03d}.pt")

    def export_info(self, cfg, data, image_size):
        return dict(arch=self.arch, in_channels=data.in_channels, image_size=list(image_size),
                    latent_dim=self.latent, width=cfg.width, gan_loss=self.loss_kind, d_steps=self.d_steps,
                    classes=list(data.classes), data=cfg.data)

    def report(self, run, model, data, batches_for):
        from fovea.report.html import write_report
        from fovea.report.plots import plot_curves, plot_image_grid

        plot_curves(run.metrics_path, run.plots)
        model.eval()
        with torch.no_grad():
            plot_image_grid(model(model.fixed_noise).float().cpu(), None, run.plots / "samples.png",
                            title="samples from the fixed noise")
        progress_strip(run.plots / "samples", run.plots / "progress.png")
        write_report(run.path, title=f"fovea GAN ({self.arch}): {run.path.name}")
        return {}


def progress_strip(sample_dir: Path, out: Path) -> Path | None:
    """One row per epoch: the first fixed-noise samples saved after each epoch."""
    from fovea.report.plots import plot_image_grid

    files = sorted(sample_dir.glob("epoch-*.pt"))
    if not files:
        return None
    rows = [torch.load(f, weights_only=True) for f in files]
    titles = [f"epoch {int(f.stem.split('-')[1])}" if i == 0 else "" for f in files for i in range(len(rows[0]))]
    return plot_image_grid(torch.cat(rows), titles, out, ncols=len(rows[0]), title="progress (fixed noise)")


def load_gan(run_dir: str | Path, device="cpu") -> tuple[GAN, dict]:
    """The trained GAN of a run (model.safetensors + model.json), in eval mode."""
    from fovea.models.gan import build_gan
    from fovea.train.run import Run

    run = Run.existing(run_dir)
    info = run.read_json("model.json")
    if info.get("task") != "gan":
        raise UserError(f"run {str(run.path)!r} is a {info.get('task')!r} run, not a GAN")
    g, d = build_gan(info["arch"], info["in_channels"], tuple(info["image_size"]), latent_dim=info["latent_dim"],
                     width=info["width"])
    model = GAN(g, d)
    run.load_weights(model)
    return model.to(device).eval(), info


__all__ = ["GAN", "TrainGAN", "load_gan", "progress_strip"]
