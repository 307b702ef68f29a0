"""Generative adversarial networks: a generator G(z) and a discriminator D(x) (Goodfellow et al. 2014).

G maps a latent z ~ N(0, I) to an image in [-1, 1] (tanh output); D maps an image in [-1, 1]
to one logit, D(x) = sigmoid(logit) being the probability that x is real. The losses, which
take logits, are in ``fovea.losses.generative``.

- ``"fc"``: fully connected networks as in Goodfellow et al. 2014. G: z -> 4w -> 8w -> d with
  ReLU and a tanh output; D: d -> 8w -> 4w -> 1 with LeakyReLU(0.2) (w = ``width``, 64 gives
  256 and 512; d = C*H*W).
- ``"dcgan"``: the deep convolutional GAN of Radford et al. 2016. G projects z to a
  (c, H/2^n, W/2^n) tensor, then n stride-2 transposed convolutions (kernel 4) double the
  side, with batch norm and ReLU on all but the output layer, which has tanh. D mirrors it:
  n stride-2 convolutions (kernel 4) with LeakyReLU(0.2), batch norm on all but the first,
  no pooling, and a linear layer to one logit. n = 2 for a side divisible by 4 (28: 7 -> 14
  -> 28), plus one per further halving while the start side stays >= 4 (32: 4 -> 8 -> 16 ->
  32). c = 4w, or w * 2^(n-1) when n > 3 (the paper's 1024 channels at 4x4 for 64x64 and
  w = 128). Weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02), as in the paper.
"""

from __future__ import annotations

from torch import Tensor, nn

from fovea.errors import UserError

__all__ = ["GAN_ARCHS", "Discriminator", "Generator", "build_gan", "dcgan_init"]

GAN_ARCHS = ("fc", "dcgan")


def _check_arch(arch: str) -> None:
    if arch not in GAN_ARCHS:
        raise UserError(f"Unknown GAN arch {arch!r}; expected one of: {', '.join(GAN_ARCHS)}.")


def _dcgan_plan(image_size: tuple[int, int], width: int) -> tuple[int, tuple[int, int], list[int]]:
    """(number n of stride-2 layers, start size (H/2^n, W/2^n), channels from the projection
    to the last hidden layer)."""
    h, w = image_size
    if h % 4 or w % 4:
        raise UserError(f"Received image_size={h}x{w}; the DCGAN needs sides divisible by 4 (e.g. 28 or 32).")
    n = 2
    while (h >> n) % 2 == 0 and (w >> n) % 2 == 0 and min(h, w) >> (n + 1) >= 4:
        n += 1
    top = width * 2 ** max(n - 1, 2)
    channels = [max(top >> i, 1) for i in range(n)]
    return n, (h >> n, w >> n), channels


def dcgan_init(model: nn.Module) -> nn.Module:
    """Radford et al. 2016: every convolution, transposed convolution and linear weight
    ~ N(0, 0.02), biases 0; batch-norm scales ~ N(1, 0.02), shifts 0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return model


class Generator(nn.Module):
    """G: (B, latent_dim) -> (B, C, H, W) in [-1, 1]. Build it with ``build_gan``."""

    def __init__(self, arch: str, out_channels: int, image_size: tuple[int, int], latent_dim: int = 100,
                 width: int = 64) -> None:
        super().__init__()
        _check_arch(arch)
        self.arch, self.out_channels, self.latent_dim = arch, out_channels, latent_dim
        self.image_size = tuple(image_size)
        h, w = self.image_size
        if arch == "fc":
            d = out_channels * h * w
            self.net = nn.Sequential(
                nn.Linear(latent_dim, 4 * width), nn.ReLU(),
                nn.Linear(4 * width, 8 * width), nn.ReLU(),
                nn.Linear(8 * width, d), nn.Tanh(),
                nn.Unflatten(1, (out_channels, h, w)),
            )
            return
        n, (sh, sw), ch = _dcgan_plan(self.image_size, width)
        # the projection of z "could be called fully connected ... but the result is reshaped
        # into a 4-dimensional tensor" (Radford et al.); no bias before batch norm
        layers: list[nn.Module] = [nn.Linear(latent_dim, ch[0] * sh * sw, bias=False), nn.Unflatten(1, (ch[0], sh, sw)),
                                   nn.BatchNorm2d(ch[0]), nn.ReLU()]
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
        layers += [nn.ConvTranspose2d(ch[-1], out_channels, 4, stride=2, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise UserError(f"Received a latent of shape {tuple(z.shape)}; expected (B, {self.latent_dim}).")
        return self.net(z)

    def extra_repr(self) -> str:
        return (f"arch={self.arch!r}, latent_dim={self.latent_dim}, out_channels={self.out_channels}, "
                f"image_size={self.image_size}")


class Discriminator(nn.Module):
    """D: (B, C, H, W) in [-1, 1] -> (B,) logits (no sigmoid). Build it with ``build_gan``."""

    def __init__(self, arch: str, in_channels: int, image_size: tuple[int, int], width: int = 64) -> None:
        super().__init__()
        _check_arch(arch)
        self.arch, self.in_channels, self.image_size = arch, in_channels, tuple(image_size)
        h, w = self.image_size
        if arch == "fc":
            d = in_channels * h * w
            self.net = nn.Sequential(
                nn.Flatten(),
                nn.Linear(d, 8 * width), nn.LeakyReLU(0.2),
                nn.Linear(8 * width, 4 * width), nn.LeakyReLU(0.2),
                nn.Linear(4 * width, 1),
            )
            return
        n, (sh, sw), ch = _dcgan_plan(self.image_size, width)
        ch = ch[::-1]  # width -> ... -> top, mirroring the generator
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch[0], 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [nn.Conv2d(a, b, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2)]
        layers += [nn.Flatten(), nn.Linear(ch[-1] * sh * sw, 1)]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, x: Tensor) -> Tensor:
        want = (self.in_channels, *self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise UserError(f"Received images of shape {tuple(x.shape)}; "
                            f"expected (B, {want[0]}, {want[1]}, {want[2]}).")
        return self.net(x)[:, 0]

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, in_channels={self.in_channels}, image_size={self.image_size}"


def build_gan(arch: str, in_channels: int, image_size: tuple[int, int], *, latent_dim: int = 100,
              width: int = 64) -> tuple[Generator, Discriminator]:
    """A generator and a discriminator (``arch`` one of ``GAN_ARCHS``) for (in_channels, H, W)
    images in [-1, 1]; ``width`` scales every layer (see the module docstring)."""
    _check_arch(arch)
    if in_channels < 1:
        raise UserError(f"Received in_channels={in_channels}; expected at least 1.")
    if len(image_size) != 2 or min(image_size) < 1:
        raise UserError(f"Received image_size={tuple(image_size)}; expected (H, W) with H, W >= 1.")
    if latent_dim < 1 or width < 1:
        raise UserError(f"Received latent_dim={latent_dim}, width={width}; expected both >= 1.")
    return (Generator(arch, in_channels, image_size, latent_dim, width),
            Discriminator(arch, in_channels, image_size, width))
