"""On-the-fly degradations: a sharp photo patch -> the low-resolution picture a designer has.

Real-ESRGAN's idea, toned down to the pictures Studio's users bring (product photos from the web):
an optional mild blur, a downscale with a random resampling filter, optional mild noise and JPEG
compression, then 8-bit quantisation. A share of the patches are only downscaled (bicubic, as the
quality bench does), so the network stays faithful on clean inputs too.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

DOWNSCALE_MODES = ("bicubic", "bilinear", "area")


@dataclass(frozen=True)
class Degradation:
    """How strongly patches are damaged; each step is applied with its probability."""

    clean: float = 0.4  # share of patches only bicubic-downscaled and quantised
    blur: float = 0.4
    blur_sigma: tuple[float, float] = (0.3, 1.5)  # in high-resolution pixels, times scale/4
    noise: float = 0.3
    noise_sigma: tuple[float, float] = (1.0, 8.0)  # in 8-bit levels
    grey_noise: float = 0.4  # share of the noisy patches whose noise is the same in R, G and B
    jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (45, 95)


def degrade_batch(
    hr: torch.Tensor, scale: int, rng: random.Random, setting: Degradation = Degradation()
) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3, H/scale, W/scale) in [0, 1], 8-bit levels."""
    return torch.stack([degrade(patch, scale, rng, setting) for patch in hr])


def degrade(
    hr: torch.Tensor, scale: int, rng: random.Random, setting: Degradation = Degradation()
) -> torch.Tensor:
    """One (3, H, W) patch -> its degraded (3, H/scale, W/scale) low-resolution version."""
    if rng.random() < setting.clean:
        return quantise(downscale(hr, scale, "bicubic"))
    image = hr
    if rng.random() < setting.blur:
        image = gaussian_blur(image, *_blur_shape(rng, setting, scale))
    image = downscale(image, scale, rng.choice(DOWNSCALE_MODES))
    if rng.random() < setting.noise:
        image = add_noise(image, rng, setting)
    image = quantise(image)
    if rng.random() < setting.jpeg:
        image = jpeg(image, rng.randint(*setting.jpeg_quality))
    return image


def downscale(image: torch.Tensor, scale: int, mode: str) -> torch.Tensor:
    """Shrink a (3, H, W) image by `scale`; bicubic and bilinear are antialiased, like Pillow's."""
    batch = image.unsqueeze(0)
    size = (image.shape[1] // scale, image.shape[2] // scale)
    if mode == "area":
        return F.interpolate(batch, size=size, mode="area")[0]
    return F.interpolate(batch, size=size, mode=mode, align_corners=False, antialias=True)[0]


def _blur_shape(rng: random.Random, setting: Degradation, scale: int) -> tuple[float, float, float]:
    low, high = setting.blur_sigma
    factor = scale / 4
    sigma_x = rng.uniform(low, high) * factor
    sigma_y = sigma_x if rng.random() < 0.5 else rng.uniform(low, high) * factor
    return sigma_x, sigma_y, rng.uniform(0, math.pi)


def gaussian_blur(
    image: torch.Tensor, sigma_x: float, sigma_y: float, angle: float
) -> torch.Tensor:
    """Blur a (3, H, W) image with an (an)isotropic Gaussian rotated by `angle`, edges reflected."""
    radius = max(1, math.ceil(3 * max(sigma_x, sigma_y)))
    grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
    y, x = torch.meshgrid(grid, grid, indexing="ij")
    cos, sin = math.cos(angle), math.sin(angle)
    u, v = cos * x + sin * y, -sin * x + cos * y
    kernel = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    kernel = (kernel / kernel.sum()).expand(3, 1, -1, -1)
    padded = F.pad(image.unsqueeze(0), (radius,) * 4, mode="reflect")
    return F.conv2d(padded, kernel, groups=3)[0]


def add_noise(image: torch.Tensor, rng: random.Random, setting: Degradation) -> torch.Tensor:
    sigma = rng.uniform(*setting.noise_sigma) / 255
    generator = torch.Generator().manual_seed(rng.getrandbits(63))
    planes = 1 if rng.random() < setting.grey_noise else 3
    noise = torch.randn((planes, *image.shape[1:]), generator=generator) * sigma
    return image + noise


def quantise(image: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round to 8-bit levels, as every saved picture is."""
    return (image.clamp(0, 1) * 255).round() / 255


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Compress a (3, H, W) image as JPEG at `quality` (OpenCV, 4:2:0 like most of the web)."""
    rgb = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    ok, data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    return torch.from_numpy(decoded.astype(np.float32) / 255).permute(2, 0, 1).contiguous()
