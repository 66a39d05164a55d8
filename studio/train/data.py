"""Photos held in memory at a few sizes, cut into random training patches and fixed eval crops.

Each training photo is kept at up to three sizes (long side 1024, 1536 and 2304 px, never
enlarged): web photos come at many resolutions, and a smaller copy puts more detail per pixel.
Patches are drawn with probability proportional to area, flipped and rotated at random; most flat
patches (sky, bokeh) are skipped, since they teach the network little.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from studio.train.degrade import downscale, jpeg, quantise

PYRAMID_LONG_SIDES = (1024, 1536, 2304)
EVAL_LONG_SIDE = 1536  # validation and test photos are measured at this size
FLAT_KEEP = 0.15  # share of flat patches kept (by default: the upscalers learn from detail)
FLAT_GRADIENT = 0.03  # mean absolute neighbour difference (x plus y) below which a patch is flat


def load_photo(path: Path, long_side: int | None = None) -> np.ndarray:
    """An RGB photo as (H, W, 3) uint8, shrunk (Lanczos) so its long side is at most `long_side`."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        if long_side and max(image.size) > long_side:
            ratio = long_side / max(image.size)
            size = (round(image.width * ratio), round(image.height * ratio))
            image = image.resize(size, Image.Resampling.LANCZOS)
        return np.asarray(image).copy()


class PatchPool:
    """Random high-resolution patches from photos in memory."""

    def __init__(
        self, photos: Sequence[Path], patch: int, rng: random.Random, flat_keep: float = FLAT_KEEP
    ) -> None:
        self.patch = patch
        self.rng = rng
        self.flat_keep = flat_keep
        self.images: list[np.ndarray] = []
        for path in photos:
            native = load_photo(path)
            long = max(native.shape[:2])
            for side in PYRAMID_LONG_SIDES:
                if side < long:
                    self.images.append(load_photo(path, side))
            if long <= PYRAMID_LONG_SIDES[-1]:
                self.images.append(native)
        areas = [image.shape[0] * image.shape[1] for image in self.images]
        self.weights = [area / sum(areas) for area in areas]

    def batch(self, size: int) -> torch.Tensor:
        """(size, 3, patch, patch) float32 in [0, 1]."""
        return torch.stack([self._patch() for _ in range(size)])

    def _patch(self) -> torch.Tensor:
        while True:
            image = self.rng.choices(self.images, self.weights)[0]
            top = self.rng.randrange(image.shape[0] - self.patch + 1)
            left = self.rng.randrange(image.shape[1] - self.patch + 1)
            crop = image[top : top + self.patch, left : left + self.patch]
            if _textured(crop) or self.rng.random() < self.flat_keep:
                break
        crop = np.rot90(crop, self.rng.randrange(4))
        if self.rng.random() < 0.5:
            crop = crop[:, ::-1]
        return torch.from_numpy(crop.astype(np.float32) / 255).permute(2, 0, 1).contiguous()


def _textured(crop: np.ndarray) -> bool:
    return _detail(crop) > FLAT_GRADIENT


def eval_crops(photos: Sequence[Path], size: int, per_photo: int) -> torch.Tensor:
    """The `per_photo` most detailed of 30 crops on a grid over each photo (at `EVAL_LONG_SIDE`):
    (N, 3, size, size). Flat crops would measure little but the interpolation of sky and bokeh."""
    crops = []
    for path in photos:
        image = load_photo(path, EVAL_LONG_SIDE)
        height, width = image.shape[:2]
        candidates = [
            image[top : top + size, left : left + size]
            for top in np.linspace(0, height - size, 5).astype(int)
            for left in np.linspace(0, width - size, 6).astype(int)
        ]
        candidates.sort(key=_detail, reverse=True)
        for crop in candidates[:per_photo]:
            crops.append(torch.from_numpy(crop.astype(np.float32) / 255).permute(2, 0, 1))
    return torch.stack(crops)


def _detail(crop: np.ndarray) -> float:
    grey = crop.mean(axis=2) / 255
    return float(np.abs(np.diff(grey, axis=1)).mean() + np.abs(np.diff(grey, axis=0)).mean())


def bicubic_input(truth: torch.Tensor, scale: int) -> torch.Tensor:
    """The clean low-resolution input: antialiased bicubic downscale, 8-bit."""
    return torch.stack([quantise(downscale(image, scale, "bicubic")) for image in truth])


def jpeg_input(truth: torch.Tensor, scale: int, quality: int = 75) -> torch.Tensor:
    """A web-photo input: the bicubic downscale saved as JPEG at `quality`."""
    return torch.stack([jpeg(image, quality) for image in bicubic_input(truth, scale)])


class Budget:
    """Progress through a run, as a fraction of its minutes or of its steps."""

    def __init__(self, minutes: float | None, steps: int | None) -> None:
        self.minutes, self.steps = minutes, steps
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def fraction(self, step: int) -> float:
        if self.steps is not None:
            return step / self.steps
        return self.elapsed() / (60 * self.minutes)
