"""OpenCV's colour non-local means (`fastNlMeansDenoisingColored`, 7x7 patches in a 21x21
window) for batches of tensors, on any device.

The restoration VAE is trained behind that prefilter. On a GPU the CPU cores that age the
training patches cannot also afford it (it is most of the ageing's cost), so the trainer runs
this copy on the GPU instead. It follows OpenCV's integer arithmetic step by step (the same
weight table, the same fixed-point sums and rounding), so the network learns from what the
engine, which keeps calling OpenCV, gives it: the result is the same, level for level. The
conversions to and from Lab are OpenCV's own, tabulated once per device (48 MiB each).

Memory: the window's 441 offsets are processed `chunk` at a time, each as a copy of the batch's
int32 planes; about six such temporaries are alive at once (at batch 16 of 128 px and 147
offsets, about 2.5 GB). By default a GPU takes 147 per pass, a CPU 21 (they stay in cache).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

TEMPLATE_HALF = 3  # 7x7 patches
SEARCH_HALF = 10  # in a 21x21 window
WEIGHT_THRESHOLD = 0.001
_TEMPLATE_SHIFT = 6  # OpenCV divides patch distances by 64 (the power of two >= 49), then rescales
_INT_MAX = 2**31 - 1
CPU_OFFSETS_PER_PASS = 21
GPU_OFFSETS_PER_PASS = 147


def offsets_per_pass(device: torch.device) -> int:
    """The default `chunk`: many offsets per pass on a GPU, a few on a CPU."""
    return CPU_OFFSETS_PER_PASS if device.type == "cpu" else GPU_OFFSETS_PER_PASS


def denoise_colored(rgb: torch.Tensor, strength: float, chunk: int | None = None) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> the same, denoised as `studio.nn.restore_vae.prefilter`
    (OpenCV, h = hColor = `strength`) denoises one picture. Each picture of the batch is
    denoised on its own, its borders reflected as OpenCV reflects them."""
    if strength <= 0:
        return rgb
    import cv2

    levels = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.int32)  # as the engine quantises to 8 bits
    lab = _convert(levels.flip(1), cv2.COLOR_LBGR2Lab)  # OpenCV is given BGR
    lightness = denoise_levels(lab[:, :1], strength, chunk)
    colour = denoise_levels(lab[:, 1:], strength, chunk)
    bgr = _convert(torch.cat([lightness, colour], dim=1), cv2.COLOR_Lab2LBGR)
    return bgr.flip(1).to(rgb.dtype) / 255


def denoise_levels(planes: torch.Tensor, h: float, chunk: int | None = None) -> torch.Tensor:
    """OpenCV's `fastNlMeansDenoising` of 8-bit planes (N, C, H, W) with integer values, C = 1
    or 2 as OpenCV's single-channel and two-channel cases: int32 result, bit-exact."""
    n, channels, height, width = planes.shape
    if channels not in (1, 2):
        raise ValueError("OpenCV denoises one or two planes at a time")
    if h == 0:  # OpenCV's weights are then 1 for identical patches, 0 for all others
        return planes.to(torch.int32)
    chunk = chunk or offsets_per_pass(planes.device)
    table = _weight_table(float(h), channels, planes.device)
    padded = _reflect(planes.to(torch.int32), SEARCH_HALF + TEMPLATE_HALF)
    reach = 2 * TEMPLATE_HALF  # a patch's reach beyond the pixels it is compared for

    def patches(dy: int, dx: int) -> torch.Tensor:
        """The picture shifted by (dy, dx) within the window, with the patches' reach around."""
        return padded[..., dy : dy + height + reach, dx : dx + width + reach]

    centre = patches(SEARCH_HALF, SEARCH_HALF)
    search = 2 * SEARCH_HALF + 1
    offsets = [(dy, dx) for dy in range(search) for dx in range(search)]
    # int32 throughout: OpenCV sizes its fixed point so that the weighted sums fit
    estimate = torch.zeros(n, channels, height, width, dtype=torch.int32, device=planes.device)
    weights = torch.zeros(n, 1, height, width, dtype=torch.int32, device=planes.device)
    for start in range(0, len(offsets), chunk):
        shifted = torch.stack([patches(dy, dx) for dy, dx in offsets[start : start + chunk]])
        squared = (shifted - centre).square().sum(dim=2, dtype=torch.int32)  # (G, N, H+6, W+6)
        distance = _box_sum(squared, 2 * TEMPLATE_HALF + 1)  # (G, N, H, W): exact in int32
        weight = table[(distance >> _TEMPLATE_SHIFT).long()]
        values = shifted[..., TEMPLATE_HALF:-TEMPLATE_HALF, TEMPLATE_HALF:-TEMPLATE_HALF]
        estimate += (weight[:, :, None] * values).sum(dim=0, dtype=torch.int32)
        weights += weight.sum(dim=0, dtype=torch.int32)[:, None]
    # rounded as OpenCV rounds, in 64 bits: for a white area the sum plus half the weights passes
    # 2^31 (OpenCV divides unsigned)
    estimate, weights = estimate.long(), weights.long()
    result = torch.div(estimate + weights // 2, weights, rounding_mode="floor")
    return result.clamp(0, 255).to(torch.int32)


@functools.lru_cache(maxsize=8)
def _weight_table(h: float, channels: int, device: torch.device) -> torch.Tensor:
    """OpenCV's `almost_dist2weight`: the fixed-point weight of every patch distance / 64."""
    template = (2 * TEMPLATE_HALF + 1) ** 2
    search = (2 * SEARCH_HALF + 1) ** 2
    fixed_point = _INT_MAX // (search * 255)
    multiplier = (1 << _TEMPLATE_SHIFT) / template
    size = int(255 * 255 * channels / multiplier + 1)
    distance = torch.arange(size, dtype=torch.float64) * multiplier
    # OpenCV holds h as a float and squares it in float: for most fractional h that differs
    # from a double's square in the last bits, enough to move a weight by one
    spread = float(np.float32(np.float32(h) * np.float32(h)) * np.float32(channels))
    weight = torch.round(fixed_point * torch.exp(-distance / spread))
    weight[weight < WEIGHT_THRESHOLD * fixed_point] = 0
    return weight.to(device=device, dtype=torch.int32)


def _reflect(planes: torch.Tensor, border: int) -> torch.Tensor:
    """Padded by `border` reflected without repeating the edge (OpenCV's BORDER_DEFAULT), and
    reflected again where the border is wider than the picture, as OpenCV does."""

    def reflected(size: int) -> torch.Tensor:
        index = torch.arange(-border, size + border, device=planes.device)
        if size == 1:
            return torch.zeros_like(index)
        period = 2 * (size - 1)
        index = index % period
        return torch.where(index < size, index, period - index)

    rows = planes.index_select(-2, reflected(planes.shape[-2]))
    return rows.index_select(-1, reflected(planes.shape[-1]))


def _box_sum(planes: torch.Tensor, size: int) -> torch.Tensor:
    """Sums over `size` x `size` windows (valid positions only): a row pass and a column pass of
    sum pooling in float32, exact for these integers (at most 49 x 2 x 255^2 < 2^24), where a
    convolution could run in TF32 on a GPU."""
    flat = planes.flatten(0, -3).unsqueeze(1).float()
    rows = F.avg_pool2d(flat, (1, size), stride=1, divisor_override=1)
    total = F.avg_pool2d(rows, (size, 1), stride=1, divisor_override=1)
    return total.reshape(*planes.shape[:-2], *total.shape[-2:]).to(torch.int32)


@functools.lru_cache(maxsize=4)
def _conversion_table(code: int, device: torch.device) -> torch.Tensor:
    """OpenCV's own 8-bit conversion `code` of every colour (256^3 x 3 bytes): a lookup table is
    exact where a reimplementation of its fixed-point arithmetic would have to be proven so."""
    import cv2

    every = np.arange(256**3, dtype=np.uint32)
    colours = np.stack([every >> 16, (every >> 8) & 255, every & 255], axis=-1)
    converted = cv2.cvtColor(colours.astype(np.uint8).reshape(4096, 4096, 3), code)
    return torch.from_numpy(converted.reshape(-1, 3)).to(device)


def _convert(planes: torch.Tensor, code: int) -> torch.Tensor:
    """(N, 3, H, W) integer levels through OpenCV's conversion `code` (channel order as given)."""
    table = _conversion_table(code, planes.device)
    index = (planes[:, 0].long() << 16) | (planes[:, 1].long() << 8) | planes[:, 2].long()
    return table[index].permute(0, 3, 1, 2).to(torch.int32)
