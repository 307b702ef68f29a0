"""Losses and penalties of generative models: autoencoder regularizers (sparse, contractive,
denoising corruption), the VAE's KL term, reconstruction losses and the GAN losses.

Conventions: a per-example quantity is summed over its own dimensions (pixels, latent
units) and averaged over the batch, so that the reconstruction loss and the KL term of a
VAE add up to the negative ELBO per image. GAN losses take discriminator logits a, with
D(x) = sigmoid(a), and use log sigmoid(a) = log D and log sigmoid(-a) = log(1 - D) for
numerical stability.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from fovea.errors import UserError

__all__ = [
    "CORRUPTIONS",
    "GAN_LOSSES",
    "RECON_LOSSES",
    "contractive_penalty_autograd",
    "contractive_penalty_sigmoid",
    "corrupt",
    "discriminator_loss",
    "generator_loss",
    "reconstruction_loss",
    "sparse_penalty",
    "vae_kl",
]

GAN_LOSSES = ("minimax", "non-saturating")
RECON_LOSSES = ("mse", "bce")
CORRUPTIONS = ("gaussian", "mask")


def sparse_penalty(code: Tensor, lam: float) -> Tensor:
    """The sparse autoencoder's L1 penalty on the code, Omega(h) = lambda * sum_i |h_i|,
    averaged over the batch: ``lam * code.abs().sum(1).mean()``."""
    return lam * code.flatten(1).abs().sum(1).mean()


def contractive_penalty_sigmoid(h: Tensor, weight: Tensor, lam: float) -> Tensor:
    """The contractive autoencoder's penalty (Rifai et al. 2011), lambda ||J_f(x)||_F^2, in
    closed form for the sigmoid encoder h = sigmoid(W x + b).

    With dh_j/dx_i = h_j (1 - h_j) W_ji,

        ||J_f(x)||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ji^2,

    averaged over the batch and times ``lam``. ``h``: (B, latent); ``weight``: W, (latent, d).
    Costs O(B * latent + latent * d), against O(B * latent * d) for the Jacobian itself.
    """
    if h.dim() != 2 or weight.dim() != 2 or h.shape[1] != weight.shape[0]:
        raise UserError(f"Received h of shape {tuple(h.shape)} and weight of shape {tuple(weight.shape)}; "
                        "expected (B, latent) and (latent, d).")
    slope = h * (1.0 - h)
    return lam * (slope.pow(2) @ weight.pow(2).sum(1)).mean()


def contractive_penalty_autograd(encode: Callable[[Tensor], Tensor], x: Tensor, lam: float,
                                 create_graph: bool = True) -> Tensor:
    """The contractive penalty lambda ||J_f(x)||_F^2 for any encoder f, the Jacobian
    J_f(x) = dh/dx computed by automatic differentiation (``torch.func.vmap`` of
    ``torch.func.jacrev``), summed over all its entries, averaged over the batch.

    ``encode`` maps a batch (B, ...) to codes (B, latent) and must treat the examples
    independently (no batch norm in training mode). With ``create_graph=True`` the result is
    differentiable with respect to the encoder's parameters, for training; with False it is
    a plain value.
    """
    def single(xi: Tensor) -> Tensor:
        return encode(xi.unsqueeze(0)).squeeze(0)

    with torch.set_grad_enabled(create_graph):
        jac = torch.func.vmap(torch.func.jacrev(single))(x)  # (B, latent, *x.shape[1:])
        return lam * jac.pow(2).flatten(1).sum(1).mean()


def vae_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) = -1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)
    (Kingma & Welling 2014, appendix B), summed over the latent units, averaged over the batch."""
    if mu.shape != logvar.shape:
        raise UserError(f"Received mu of shape {tuple(mu.shape)} and logvar of shape {tuple(logvar.shape)}; "
                        "expected equal shapes.")
    return (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())).flatten(1).sum(1).mean()


def reconstruction_loss(recon: Tensor, target: Tensor, kind: str = "mse", reduction: str = "sum") -> Tensor:
    """Reconstruction error between ``recon`` and ``target`` (same shape, (B, ...)).

    kind "mse": (r - x)^2; "bce": -[x log r + (1 - x) log(1 - r)], the Bernoulli negative
    log-likelihood of pixels in [0, 1] (``recon`` must be probabilities, the sigmoid output).
    reduction "sum" (the default): summed over the pixels of each image, averaged over the
    batch, the scale on which it adds to ``vae_kl``; "mean": averaged over every pixel.
    """
    if recon.shape != target.shape:
        raise UserError(f"Received recon of shape {tuple(recon.shape)} and target of shape {tuple(target.shape)}; "
                        "expected equal shapes.")
    if kind == "mse":
        err = (recon - target).pow(2)
    elif kind == "bce":
        err = F.binary_cross_entropy(recon, target, reduction="none")
    else:
        raise UserError(f"Unknown reconstruction loss {kind!r}; expected one of: {', '.join(RECON_LOSSES)}.")
    if reduction == "sum":
        return err.flatten(1).sum(1).mean()
    if reduction == "mean":
        return err.mean()
    raise UserError(f"Received reduction={reduction!r}; expected 'sum' or 'mean'.")


def corrupt(x: Tensor, kind: str, level: float, generator: torch.Generator | None = None) -> Tensor:
    """The denoising autoencoder's corruption x~ ~ C(x~ | x) (Vincent et al. 2008).

    "gaussian": x + N(0, level^2) noise, clamped to [0, 1]; "mask": each pixel set to 0 with
    probability ``level`` (masking noise). ``generator`` must live on ``x``'s device.
    """
    if kind == "gaussian":
        if level < 0:
            raise UserError(f"Received level={level} for gaussian corruption; expected a standard deviation >= 0.")
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + level * noise).clamp(0.0, 1.0)
    if kind == "mask":
        if not 0.0 <= level <= 1.0:
            raise UserError(f"Received level={level} for mask corruption; expected a probability in [0, 1].")
        keep = torch.rand(x.shape, generator=generator, device=x.device) >= level
        return x * keep
    raise UserError(f"Unknown corruption {kind!r}; expected one of: {', '.join(CORRUPTIONS)}.")


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The discriminator's loss (Goodfellow et al. 2014),

        L(D) = -E_x[log D(x)] - E_z[log(1 - D(G(z)))],

    the binary cross-entropy with label 1 for real and 0 for generated images, from logits."""
    return -F.logsigmoid(real_logits).mean() - F.logsigmoid(-fake_logits).mean()


def generator_loss(fake_logits: Tensor, kind: str = "non-saturating") -> Tensor:
    """The generator's loss from the discriminator's logits on generated images.

    "minimax": the zero-sum game's L(G) = -L(D), of which G controls only the second term:
    E_z[log(1 - D(G(z)))], minimized by G. Its gradient vanishes when D confidently rejects
    the fakes (D(G(z)) -> 0), early in training.
    "non-saturating": -1/2 E_z[log D(G(z))], the same fixed point with strong gradients
    where D rejects the fakes.
    """
    if kind == "minimax":
        return F.logsigmoid(-fake_logits).mean()
    if kind == "non-saturating":
        return -0.5 * F.logsigmoid(fake_logits).mean()
    raise UserError(f"Unknown generator loss {kind!r}; expected one of: {', '.join(GAN_LOSSES)}.")
