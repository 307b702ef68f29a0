"""GANs: generator and discriminator shapes and ranges, the DCGAN's architectural rules
(Radford et al. 2016) and initialization, and user errors."""

import pytest
import torch
from torch import nn

from fovea.errors import UserError
from fovea.losses.generative import discriminator_loss, generator_loss
from fovea.models.gan import GAN_ARCHS, Discriminator, Generator, build_gan

SHAPES = [(1, (28, 28)), (3, (32, 32)), (1, (8, 8))]


@pytest.mark.parametrize("arch", GAN_ARCHS)
@pytest.mark.parametrize("c,size", SHAPES)
def test_shapes_and_range(arch, c, size):
    g, d = build_gan(arch, c, size, latent_dim=16, width=8)
    assert isinstance(g, Generator) and isinstance(d, Discriminator)
    assert (g.latent_dim, g.out_channels, g.image_size) == (16, c, size)
    z = torch.randn(3, 16)
    fake = g(z)
    assert fake.shape == (3, c, *size)
    assert fake.min() >= -1 and fake.max() <= 1
    logits = d(fake)
    assert logits.shape == (3,)
    # one training step of each side reaches every parameter
    discriminator_loss(d(torch.rand(3, c, *size) * 2 - 1), d(fake.detach())).backward()
    assert all(p.grad is not None for p in d.parameters())
    generator_loss(d(g(z)), "non-saturating").backward()
    assert all(p.grad is not None for p in g.parameters())


def test_fc_layer_sizes():
    g, d = build_gan("fc", 1, (28, 28))
    assert [(m.in_features, m.out_features) for m in g.modules() if isinstance(m, nn.Linear)] == [
        (100, 256), (256, 512), (512, 784)]
    assert [(m.in_features, m.out_features) for m in d.modules() if isinstance(m, nn.Linear)] == [
        (784, 512), (512, 256), (256, 1)]
    assert [m.negative_slope for m in d.modules() if isinstance(m, nn.LeakyReLU)] == [0.2, 0.2]


@pytest.mark.parametrize("size,ups", [((28, 28), 2), ((32, 32), 3), ((8, 8), 2), ((64, 64), 4), ((12, 16), 2)])
def test_dcgan_architecture_rules(size, ups):
    g, d = build_gan("dcgan", 3, size, latent_dim=8, width=4)
    g_types = [type(m) for m in g.net]
    d_types = [type(m) for m in d.net]
    # the generator: stride-2 transposed convolutions with batch norm, none on the tanh output
    convt = [m for m in g.net if isinstance(m, nn.ConvTranspose2d)]
    assert len(convt) == ups and all(m.stride == (2, 2) for m in convt)
    assert sum(t is nn.BatchNorm2d for t in g_types) == ups  # the projection's and each hidden layer's
    assert g_types[-2:] == [nn.ConvTranspose2d, nn.Tanh]
    assert g_types[:3] == [nn.Linear, nn.Unflatten, nn.BatchNorm2d]
    # the discriminator: strided convolutions, no pooling, LeakyReLU(0.2), no BN on the first layer
    pools = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    assert not any(isinstance(m, pools) for m in d.modules())
    convs = [m for m in d.net if isinstance(m, nn.Conv2d)]
    assert len(convs) == ups and all(m.stride == (2, 2) and m.kernel_size == (4, 4) for m in convs)
    assert d_types[:2] == [nn.Conv2d, nn.LeakyReLU]
    assert sum(t is nn.BatchNorm2d for t in d_types) == ups - 1
    assert all(m.negative_slope == 0.2 for m in d.modules() if isinstance(m, nn.LeakyReLU))
    assert not any(isinstance(m, nn.ReLU) for m in d.modules())
    assert d_types[-1] is nn.Linear and d.net[-1].out_features == 1


def test_dcgan_channels_follow_the_paper():
    g, d = build_gan("dcgan", 3, (32, 32), width=64)
    assert g.net[1].unflattened_size == (256, 4, 4)  # 4 * width at 4x4
    assert [m.out_channels for m in g.net if isinstance(m, nn.ConvTranspose2d)] == [128, 64, 3]
    assert [m.out_channels for m in d.net if isinstance(m, nn.Conv2d)] == [64, 128, 256]
    g64, _ = build_gan("dcgan", 3, (64, 64), width=128)
    assert g64.net[1].unflattened_size == (1024, 4, 4)  # the paper's LSUN generator


def test_dcgan_init():
    torch.manual_seed(0)
    g, d = build_gan("dcgan", 3, (32, 32), width=32)
    for net in (g, d):
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                assert m.weight.std().item() == pytest.approx(0.02, rel=0.15)
                assert abs(m.weight.mean().item()) < 0.005
            if isinstance(m, nn.BatchNorm2d):
                assert m.weight.mean().item() == pytest.approx(1.0, abs=0.01)
                assert m.weight.std().item() == pytest.approx(0.02, rel=0.4)
                assert m.bias.abs().max() == 0


def test_discriminator_in_eval_mode_is_per_example():
    g, d = build_gan("dcgan", 1, (8, 8), latent_dim=4, width=4)
    d.eval()
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    torch.testing.assert_close(d(x)[1:2], d(x[1:2]))


def test_user_errors():
    with pytest.raises(UserError, match=r"30x30.*divisible by 4"):
        build_gan("dcgan", 1, (30, 30))
    with pytest.raises(UserError, match="fc, dcgan"):
        build_gan("wgan", 1, (28, 28))
    g, d = build_gan("fc", 1, (8, 8), latent_dim=5, width=4)
    with pytest.raises(UserError, match=r"\(B, 5\)"):
        g(torch.randn(2, 7))
    with pytest.raises(UserError, match=r"\(B, 1, 8, 8\)"):
        d(torch.randn(2, 1, 9, 9))
