"""What the GAN stage adds to L1: a discriminator and perceptual signals that need no downloads.

Real-ESRGAN pairs L1 with VGG features (a downloaded network) and a U-Net discriminator. Here:
- `PatchDiscriminator`: a small fully convolutional critic with spectral normalisation on every
  layer; it judges overlapping patches of about 46 px, where texture and edges live.
- `edge_loss`: L1 between Sobel gradients, so edges are placed and as steep as the original's.
- `frequency_loss`: L1 between Fourier amplitudes, which rewards restoring the high frequencies'
  energy without demanding their exact phase (the blur L1 alone converges to).
- `RandomFeatures`: L1 between the features of a fixed, seeded, randomly initialised conv net, a
  perceptual signal that needs no pretrained weights (random features are known to carry
  much of what a trained VGG's early layers do for texture).
- `unsharp_mask`: the mild sharpening of the target Real-ESRGAN applies before L1 and perceptual
  losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


class PatchDiscriminator(nn.Module):
    """(N, 3, H, W) -> (N, 1, H/8, W/8) real-vs-generated scores, spectrally normalised."""

    def __init__(self, features: int = 32) -> None:
        super().__init__()
        f = features
        layers = [
            (3, f, 4, 2),
            (f, 2 * f, 4, 2),
            (2 * f, 2 * f, 3, 1),
            (2 * f, 4 * f, 4, 2),
            (4 * f, 4 * f, 3, 1),
        ]
        body: list[nn.Module] = []
        for c_in, c_out, kernel, stride in layers:
            body += [spectral_norm(nn.Conv2d(c_in, c_out, kernel, stride, 1)), nn.LeakyReLU(0.2)]
        body.append(spectral_norm(nn.Conv2d(4 * f, 1, 3, 1, 1)))
        self.body = nn.Sequential(*body)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.body(image * 2 - 1)


class RandomFeatures(nn.Module):
    """A frozen random conv net (seeded, so every run uses the same one); L1 between features."""

    def __init__(self, seed: int = 1234) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.stages = nn.ModuleList()
        for c_in, c_out, stride in ((3, 32, 1), (32, 64, 2), (64, 64, 2)):
            conv = nn.Conv2d(c_in, c_out, 3, stride, 1)
            with torch.no_grad():
                fan_in = c_in * 9
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
                conv.weight.mul_((2 / fan_in) ** 0.5)
                conv.bias.zero_()
            self.stages.append(nn.Sequential(conv, nn.LeakyReLU(0.2)))
        self.requires_grad_(False)

    def loss(self, result: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = result.new_zeros(())
        x, y = result * 2 - 1, target * 2 - 1
        for stage in self.stages:
            x, y = stage(x), stage(y)
            total = total + F.l1_loss(x, y)
        return total / len(self.stages)


_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4


def sobel(image: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 2C, H-2, W-2): horizontal and vertical gradients per channel."""
    channels = image.shape[1]
    kernel = torch.stack([_SOBEL, _SOBEL.t()]).unsqueeze(1).repeat(channels, 1, 1, 1)
    return F.conv2d(image, kernel.to(image), groups=channels)


def edge_loss(result: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(sobel(result), sobel(target))


def frequency_loss(result: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    amplitude = lambda x: torch.fft.rfft2(x, norm="ortho").abs()  # noqa: E731
    return F.l1_loss(amplitude(result), amplitude(target))


def unsharp_mask(image: torch.Tensor, amount: float, sigma: float = 1.5) -> torch.Tensor:
    """image + amount * (image - gaussian blur), clipped to [0, 1]; amount 0 returns `image`."""
    if amount <= 0:
        return image
    radius = max(1, round(3 * sigma))
    grid = torch.arange(-radius, radius + 1, dtype=image.dtype)
    line = torch.exp(-0.5 * (grid / sigma) ** 2)
    line = line / line.sum()
    channels = image.shape[1]
    padded = F.pad(image, (radius,) * 4, mode="reflect")
    blurred = F.conv2d(padded, line.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    blurred = F.conv2d(blurred, line.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return (image + amount * (image - blurred)).clamp(0, 1)


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the critic."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def adversarial_loss(fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the generator."""
    return -fake.mean()
