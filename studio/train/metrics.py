"""The measures the training keeps its best checkpoint by, and the quality bench reports.

The super-resolution literature's conventions: PSNR and SSIM on the luma (Y of BT.601, 8-bit
range) with `border` pixels cropped from every edge. Sharpness is the mean gradient magnitude of
the luma, reported as a ratio to the ground truth's (1 = as crisp as the original; blur < 1).
Images are float tensors in [0, 1], (3, H, W) or (N, 3, H, W).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_Y_WEIGHTS = (65.481, 128.553, 24.966)


def luma(image: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> (N, 1, H, W) Y in [16, 235], as Matlab's `rgb2ycbcr` computes it."""
    image = _batched(image).double()
    weights = torch.tensor(_Y_WEIGHTS, dtype=image.dtype).view(1, 3, 1, 1)
    return 16 + (image * weights).sum(dim=1, keepdim=True)


def psnr_y(result: torch.Tensor, truth: torch.Tensor, border: int) -> float:
    """PSNR (dB) of the luma of 8-bit-rounded `result` against `truth`, mean over the batch."""
    mse = (_crop(luma(_as_8bit(result)), border) - _crop(luma(truth), border)).pow(2)
    per_image = mse.mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return float((10 * torch.log10(255**2 / per_image)).mean())


def ssim_y(result: torch.Tensor, truth: torch.Tensor, border: int) -> float:
    """SSIM (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5) of the luma, batch mean."""
    x = _crop(luma(_as_8bit(result)), border)
    y = _crop(luma(truth), border)
    window = _gaussian_window(11, 1.5, x.dtype)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mu_x**2
    var_y = F.conv2d(y * y, window) - mu_y**2
    cov = F.conv2d(x * y, window) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return float(ssim.mean(dim=(1, 2, 3)).mean())


def gradient_magnitude(image: torch.Tensor, border: int = 0) -> float:
    """Mean magnitude of the luma's gradient (forward differences), in 8-bit levels per pixel."""
    y = _crop(luma(image), border)
    dx = y[..., :-1, 1:] - y[..., :-1, :-1]
    dy = y[..., 1:, :-1] - y[..., :-1, :-1]
    return float(torch.sqrt(dx**2 + dy**2).mean())


def sharpness_ratio(result: torch.Tensor, truth: torch.Tensor, border: int) -> float:
    """Gradient magnitude of `result` over that of `truth`: 1 = as sharp, below 1 = blurrier."""
    return gradient_magnitude(result, border) / max(gradient_magnitude(truth, border), 1e-12)


def _batched(image: torch.Tensor) -> torch.Tensor:
    return image.unsqueeze(0) if image.dim() == 3 else image


def _as_8bit(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0, 1) * 255).round() / 255


def _crop(image: torch.Tensor, border: int) -> torch.Tensor:
    return image[..., border:-border, border:-border] if border > 0 else image


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    centre = (size - 1) / 2
    line = torch.tensor(
        [math.exp(-((i - centre) ** 2) / (2 * sigma**2)) for i in range(size)], dtype=dtype
    )
    line = line / line.sum()
    return torch.outer(line, line).view(1, 1, size, size)
