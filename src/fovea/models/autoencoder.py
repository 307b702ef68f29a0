"""Autoencoders: fully connected, convolutional and linear, plain or variational.

An autoencoder maps an image x to a code h = f(x) and back to a reconstruction r = g(h),
trained to make r close to x. The family covers:

- ``"fc"``: the fully connected autoencoder with the d -> d/2 -> d/4 -> d/2 -> d shape
  (d = C*H*W), a decoder that mirrors the encoder and a sigmoid output in [0, 1].
  ``hidden=[]`` with ``encoder_act="sigmoid"`` is the single-layer encoder
  h = sigmoid(W x + b) of the contractive autoencoder (Rifai et al. 2011); there the code is
  the sigmoid activation itself and ``code_layer.weight`` is W.
- ``"conv"``: stride-2 3x3 convolutions down, a linear code, and stride-2 transposed
  convolutions back up to exactly (H, W).
- ``"linear"``: no nonlinearity anywhere. Trained with the squared error, its decoder spans
  the principal subspace of the data (Baldi & Hornik 1989): a linear autoencoder is PCA.
- ``variational=True`` (``"fc"`` and ``"conv"``): the VAE of Kingma & Welling (2014). The
  encoder gives mu and log sigma^2, and the code is z = mu + sigma * eps, eps ~ N(0, I)
  (the reparameterization trick) in training mode, z = mu in eval mode.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from fovea.errors import UserError
from fovea.nn.act import get_act

__all__ = ["ARCHS", "AEOutput", "Autoencoder", "build_autoencoder"]

ARCHS = ("fc", "conv", "linear")

_CONV_DEFAULT_HIDDEN = [32, 64]
_CONV_DEFAULT_LATENT = 32


class AEOutput(NamedTuple):
    """What ``Autoencoder.forward`` returns.

    recon: (B, C, H, W), the reconstruction (in [0, 1] except for the linear autoencoder).
    code: (B, latent_dim), the code h; for a VAE the sampled z in training mode, mu in eval mode.
    mu, logvar: (B, latent_dim), the VAE's posterior mean and log variance; None otherwise.
    hidden: the encoder's last hidden activation before the code, flattened to (B, n); for
        the single-layer sigmoid encoder it is the code h itself; None when there is no
        hidden layer.
    """

    recon: Tensor
    code: Tensor
    mu: Tensor | None = None
    logvar: Tensor | None = None
    hidden: Tensor | None = None


def _act(name: str) -> nn.Module:
    try:
        return get_act(name)
    except ValueError as e:
        raise UserError(f"Received encoder_act={name!r}: {e}.") from None


def _halve(n: int) -> int:
    """Output side of a 3x3, stride 2, padding 1 convolution: ceil(n / 2)."""
    return (n + 1) // 2


class Autoencoder(nn.Module):
    """An encoder, a code layer (two heads, mu and log sigma^2, for a VAE) and a decoder.

    Modules: ``encoder`` (x -> last hidden activation, flattened), ``code_layer`` (the linear
    map to the code; the mu head for a VAE), ``logvar_layer`` (VAE only, else None),
    ``code_act`` (sigmoid for the single-layer sigmoid encoder, identity otherwise) and
    ``decoder`` (code -> (B, C, H, W)). Build it with ``build_autoencoder``.
    """

    def __init__(self, arch: str, in_channels: int, image_size: tuple[int, int], latent_dim: int,
                 hidden: list[int], variational: bool, encoder_act: str) -> None:
        super().__init__()
        self.arch, self.in_channels, self.image_size = arch, in_channels, tuple(image_size)
        self.latent_dim, self.hidden_sizes = latent_dim, list(hidden)
        self.variational, self.encoder_act = variational, encoder_act
        h, w = self.image_size
        d = in_channels * h * w
        if arch == "conv":
            encoder, decoder, feat_dim = self._build_conv(hidden, encoder_act)
        else:
            encoder, decoder, feat_dim = self._build_dense(d, hidden, encoder_act if arch == "fc" else "identity",
                                                           output_act="sigmoid" if arch == "fc" else "identity")
        # h = sigmoid(W x + b): the code is the encoder's only activation (contractive AE)
        self.sigmoid_code = arch == "fc" and not hidden and not variational and encoder_act.lower() == "sigmoid"
        self.has_hidden = bool(hidden)
        self.encoder = encoder
        self.code_layer = nn.Linear(feat_dim, latent_dim)
        self.logvar_layer = nn.Linear(feat_dim, latent_dim) if variational else None
        self.code_act = nn.Sigmoid() if self.sigmoid_code else nn.Identity()
        self.decoder = decoder

    def _build_dense(self, d: int, hidden: list[int], act: str, output_act: str) -> tuple[nn.Module, nn.Module, int]:
        c, (h, w) = self.in_channels, self.image_size
        enc: list[nn.Module] = [nn.Flatten()]
        sizes = [d, *hidden]
        for a, b in zip(sizes[:-1], sizes[1:]):
            enc += [nn.Linear(a, b), _act(act)]
        dec: list[nn.Module] = []
        sizes = [self.latent_dim, *reversed(hidden)]
        for a, b in zip(sizes[:-1], sizes[1:]):
            dec += [nn.Linear(a, b), _act(act)]
        dec += [nn.Linear(sizes[-1], d), _act(output_act), nn.Unflatten(1, (c, h, w))]
        return nn.Sequential(*enc), nn.Sequential(*dec), (hidden[-1] if hidden else d)

    def _build_conv(self, channels: list[int], act: str) -> tuple[nn.Module, nn.Module, int]:
        if not channels:
            raise UserError("Received hidden=[] for a conv autoencoder; expected at least one channel count.")
        h, w = self.image_size
        min_side = 2 ** len(channels)
        if min(h, w) < min_side:
            raise UserError(f"Received image_size={h}x{w}; a conv autoencoder with {len(channels)} stride-2 "
                            f"blocks needs at least {min_side}x{min_side}.")
        sizes = [(h, w)]
        for _ in channels:
            sizes.append((_halve(sizes[-1][0]), _halve(sizes[-1][1])))
        enc: list[nn.Module] = []
        for a, b in zip([self.in_channels, *channels[:-1]], channels):
            enc += [nn.Conv2d(a, b, 3, stride=2, padding=1), _act(act)]
        enc.append(nn.Flatten())
        sh, sw = sizes[-1]
        feat_dim = channels[-1] * sh * sw
        dec: list[nn.Module] = [nn.Linear(self.latent_dim, feat_dim), _act(act),
                                nn.Unflatten(1, (channels[-1], sh, sw))]
        outs = [*reversed(channels[:-1]), channels[0]]
        for i, (a, b) in enumerate(zip(reversed(channels), outs)):
            th, tw = sizes[len(channels) - 1 - i]
            # a 3x3 stride-2 padding-1 transposed conv gives 2n - 1 + output_padding; the encoder
            # took a side m to ceil(m / 2), so output_padding = 1 for an even m, 0 for an odd one
            dec += [nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=(1 - th % 2, 1 - tw % 2)),
                    _act(act)]
        dec += [nn.Conv2d(channels[0], self.in_channels, 3, padding=1), nn.Sigmoid()]
        return nn.Sequential(*enc), nn.Sequential(*dec), feat_dim

    def _check(self, x: Tensor) -> None:
        want = (self.in_channels, *self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise UserError(f"Received input of shape {tuple(x.shape)}; expected (B, {want[0]}, {want[1]}, {want[2]}).")

    def encode(self, x: Tensor) -> Tensor:
        """The code, (B, latent_dim): h = code_act(code_layer(encoder(x))); mu for a VAE."""
        self._check(x)
        return self.code_act(self.code_layer(self.encoder(x)))

    def decode(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, C, H, W); in [0, 1] except for the linear autoencoder."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise UserError(f"Received a code of shape {tuple(z.shape)}; expected (B, {self.latent_dim}).")
        return self.decoder(z)

    def forward(self, x: Tensor) -> AEOutput:
        self._check(x)
        feats = self.encoder(x)
        hidden = feats if self.has_hidden else None
        if not self.variational:
            h = self.code_act(self.code_layer(feats))
            return AEOutput(self.decode(h), h, hidden=h if self.sigmoid_code else hidden)
        mu, logvar = self.code_layer(feats), self.logvar_layer(feats)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return AEOutput(self.decode(z), z, mu, logvar, hidden)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images decoded from z ~ N(0, I), the VAE's prior (no gradients are recorded)."""
        if not self.variational:
            raise UserError(f"sample() needs a variational autoencoder; this {self.arch!r} autoencoder has "
                            "variational=False.")
        p = next(self.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator,
                        device=generator.device if generator is not None else p.device)
        return self.decode(z.to(device=p.device, dtype=p.dtype))

    def extra_repr(self) -> str:
        return (f"arch={self.arch!r}, in_channels={self.in_channels}, image_size={self.image_size}, "
                f"latent_dim={self.latent_dim}, variational={self.variational}")


def build_autoencoder(arch: str, in_channels: int, image_size: tuple[int, int], *, latent_dim: int | None = None,
                      hidden: list[int] | None = None, variational: bool = False,
                      encoder_act: str = "relu") -> Autoencoder:
    """Build an autoencoder (``arch`` one of ``ARCHS``) for (in_channels, H, W) images.

    Defaults, with d = C*H*W: ``"fc"`` hidden=[d//2], latent_dim=d//4 (d -> d/2 -> d/4 -> d/2
    -> d); ``"linear"`` hidden=[], latent_dim=d//4; ``"conv"`` hidden=[32, 64] (the channels of
    the stride-2 blocks), latent_dim=32. ``encoder_act`` names the hidden layers' activation
    (decoder included); the ``"linear"`` arch has none.
    """
    if arch not in ARCHS:
        raise UserError(f"Unknown autoencoder arch {arch!r}; expected one of: {', '.join(ARCHS)}.")
    if in_channels < 1:
        raise UserError(f"Received in_channels={in_channels}; expected at least 1.")
    if len(image_size) != 2 or min(image_size) < 1:
        raise UserError(f"Received image_size={tuple(image_size)}; expected (H, W) with H, W >= 1.")
    if variational and arch == "linear":
        raise UserError("Received variational=True with arch 'linear'; a VAE needs arch 'fc' or 'conv'.")
    d = in_channels * image_size[0] * image_size[1]
    if hidden is None:
        hidden = {"fc": [d // 2], "linear": [], "conv": _CONV_DEFAULT_HIDDEN}[arch]
    if latent_dim is None:
        latent_dim = _CONV_DEFAULT_LATENT if arch == "conv" else max(1, d // 4)
    if latent_dim < 1:
        raise UserError(f"Received latent_dim={latent_dim}; expected at least 1.")
    if any(n < 1 for n in hidden):
        raise UserError(f"Received hidden={list(hidden)}; expected positive layer sizes.")
    _act(encoder_act)  # a bad name fails here, before any layer is built
    return Autoencoder(arch, in_channels, tuple(image_size), latent_dim, list(hidden), variational, encoder_act)
