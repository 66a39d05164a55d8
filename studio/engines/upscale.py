"""Upscale: a picture through a super-resolution network (any spandrel reads), tile by tile.

The network sees RGB. A grey picture is replicated to RGB and averaged back, so it stays grey.
Alpha goes through the network too, as a grey picture on its own, the way Real-ESRGAN does it: its
edges then stay as sharp as the colour's, which a Lanczos resize of the alpha would soften (a
constant alpha, the common fully opaque PNG, skips the network and stays exact). A network with a
single input channel takes the colour channels one by one. Computation is in float, so 16-bit
pictures keep their precision; bit depth, ICC profile and EXIF go to the result. When the requested
scale differs from the network's, the network's output is resampled with Lanczos.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
from spandrel import ImageModelDescriptor

from studio.engines.base import (
    CancelCheck,
    Cancelled,
    EngineError,
    Progress,
    Request,
    RunFacts,
    check_ensemble,
    never_cancelled,
    no_progress,
)
from studio.engines.tiling import (
    DEFAULT_OVERLAP,
    MIN_TILE,
    auto_tile_size,
    dihedral_mean,
    upscale_tiled,
)
from studio.imaging import Picture, load_picture, resize_picture
from studio.models.cache import ModelCache
from studio.models.device import (
    DEVICE_CHOICES,
    PRECISION_CHOICES,
    dtype_name,
    free_memory_bytes,
)
from studio.models.upscalers import ModelInfo, inspect_model, placement, use_model

OUTPUT_FORMATS = ("png", "jpeg", "webp", "tiff")
MAX_SCALE = 16.0
# On the CPU, tiles are kept to about this many multiply-accumulates (parameters x pixels): a few
# seconds each, so progress moves and cancelling is prompt.
CPU_WORK_PER_TILE = 1e12
CPU_MAX_TILE = 512
GPU_MAX_TILE = 1024
GPU_MAX_BATCH = 4


@dataclass(frozen=True)
class UpscaleRequest(Request):
    """Everything that determines an upscale's output. Invalid values raise `EngineError`."""

    input_path: str
    model_path: str
    scale: float | None = None  # output scale >= 1; None = the network's own scale
    tile: int = 0  # tile side in input pixels; 0 = automatic from free memory
    # 1, 2, 4 or 8: the network also runs on the picture mirrored and turned, and the answers are
    # averaged (a geometric self-ensemble): a little cleaner, that many times slower
    ensemble: int = 1
    output_format: str = "png"  # png | jpeg | webp | tiff (used by whoever saves the result)
    quality: int = 95
    device: str = "auto"  # auto | cuda | cuda:N | mps | cpu
    precision: str = "auto"  # auto | fp16 | bf16 | fp32

    tool: ClassVar[str] = "upscale"
    image_fields: ClassVar[tuple[str, ...]] = ("input_path",)
    required: ClassVar[tuple[str, ...]] = ("input_path", "model_path")

    def __post_init__(self) -> None:
        for name in ("input_path", "model_path"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise EngineError(f"{name} must be a file path.")
        _check_scale(self.scale)
        if isinstance(self.tile, bool) or not isinstance(self.tile, int):
            raise EngineError(f"tile must be a whole number of pixels, not {self.tile!r}.")
        if self.tile != 0 and not MIN_TILE <= self.tile <= 8192:
            raise EngineError(
                f"tile must be 0 (automatic) or {MIN_TILE}..8192 px, not {self.tile}."
            )
        check_ensemble(self.ensemble)
        output_format = str(self.output_format).lower().replace("jpg", "jpeg")
        if output_format not in OUTPUT_FORMATS:
            raise EngineError(
                f"unknown output format {self.output_format!r}; choose {', '.join(OUTPUT_FORMATS)}."
            )
        object.__setattr__(self, "output_format", output_format)
        if isinstance(self.quality, bool) or not isinstance(self.quality, int):
            raise EngineError(f"quality must be a whole number 1..100, not {self.quality!r}.")
        if not 1 <= self.quality <= 100:
            raise EngineError(f"quality must be 1..100, not {self.quality}.")
        device = str(self.device).lower()
        if device not in DEVICE_CHOICES and not device.startswith("cuda:"):
            raise EngineError(
                f"unknown device {self.device!r}; choose {', '.join(DEVICE_CHOICES)}."
            )
        if self.precision not in PRECISION_CHOICES:
            raise EngineError(
                f"unknown precision {self.precision!r}; choose {', '.join(PRECISION_CHOICES)}."
            )


def _check_scale(scale: float | None) -> None:
    if scale is None:
        return
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise EngineError(f"scale must be a number, not {scale!r}.")
    if scale < 1:
        raise EngineError(
            f"scale {scale:g} would shrink the picture; upscaling needs a scale of 1 or more."
        )
    if scale > MAX_SCALE:
        raise EngineError(f"scale {scale:g} is more than Studio's maximum of {MAX_SCALE:g}.")


@dataclass
class UpscaleResult:
    picture: Picture
    model: ModelInfo
    device: str
    dtype: str
    tile: int  # the tile side the run started with (out-of-memory may have halved it)
    seconds: float
    scale: float | None = None  # the output scale delivered

    @property
    def pictures(self) -> list[Picture]:
        return [self.picture]

    @property
    def facts(self) -> RunFacts:
        return RunFacts(
            model_name=self.model.name,
            model_sha256=self.model.sha256,
            device=self.device,
            dtype=self.dtype,
            extra={
                "architecture": self.model.architecture,
                "network_scale": self.model.scale,
                "scale": self.scale,
                "output_size": [self.picture.width, self.picture.height],
                "tile": self.tile,
                "seconds": round(self.seconds, 3),
            },
        )


def run(
    request: UpscaleRequest,
    *,
    progress: Progress = no_progress,
    cancelled: CancelCheck = never_cancelled,
    cache: ModelCache | None = None,
) -> UpscaleResult:
    """Upscale `request.input_path` with `request.model_path`; the caller saves the picture."""
    started = time.perf_counter()
    info = inspect_model(request.model_path)
    if info.purpose != "upscale":
        raise EngineError(
            f"{info.name} is a x1 restoration model ({info.architecture}), it does not enlarge; "
            "use it in the Restore tab."
        )
    picture = load_picture(request.input_path)
    width, height = _target_size(picture, request.scale or info.scale)
    _check_result_fits(width, height, picture.channels)
    device, choice = placement(info, request.device, request.precision)
    progress(0.0, choice.reason or f"Loading {info.name}")
    if cancelled():
        raise Cancelled
    with use_model(info, device, choice.dtype, cache) as model:
        tile = request.tile or auto_tile(info, device, choice.dtype)
        pixels = upscale_pixels(
            model,
            info,
            picture.pixels,
            tile=tile,
            ensemble=request.ensemble,
            progress=progress,
            cancelled=cancelled,
        )
    result = replace(picture, pixels=pixels)
    if (result.width, result.height) != (width, height):
        progress(0.97, f"Resampling to {width}x{height}")
        result = resize_picture(result, width, height)
    return UpscaleResult(
        picture=result,
        model=info,
        device=str(device),
        dtype=dtype_name(choice.dtype),
        tile=tile,
        seconds=time.perf_counter() - started,
        scale=request.scale or info.scale,
    )


def _target_size(picture: Picture, scale: float) -> tuple[int, int]:
    return (
        max(1, math.floor(picture.width * scale + 0.5)),
        max(1, math.floor(picture.height * scale + 0.5)),
    )


def _check_result_fits(width: int, height: int, channels: int) -> None:
    """Refuse early a result that cannot fit in memory (accumulators, then the picture)."""
    needed = width * height * 4 * (2 * channels + 2)
    free = free_memory_bytes(torch.device("cpu"))
    if needed > free * 0.8:
        raise EngineError(
            f"The result would be {width}x{height} pixels, about {needed / 2**30:.1f} GiB in "
            f"memory, and {free / 2**30:.1f} GiB is free. Choose a smaller scale or image."
        )


def auto_tile(info: ModelInfo, device: torch.device, dtype: torch.dtype) -> int:
    """The tile side for `info` on `device` now: from free memory, and on the CPU from work."""
    if info.tiling == "internal":
        return 0  # the network tiles by itself: give it the whole picture
    on_cpu = device.type == "cpu"
    return _memory_tile(
        info,
        device,
        dtype,
        max_tile=CPU_MAX_TILE if on_cpu else GPU_MAX_TILE,
        max_work=CPU_WORK_PER_TILE if on_cpu else None,
    )


def _batch_size(info: ModelInfo, device: torch.device, dtype: torch.dtype, tile: int) -> int:
    """Tiles per forward pass: several on a GPU when memory holds them (it keeps the GPU busy).

    One on the CPU: on an idle CPU a batch of tiles measured ~15% slower per pixel (the feature
    maps no longer fit the cache) and it delays cancelling; batches only won when other programs
    kept the cores busy (`upscale_pixels(batch=...)` overrides)."""
    if device.type == "cpu" or tile <= 0:
        return 1
    fits = _memory_tile(info, device, dtype, max_tile=1 << 16, max_work=None)
    return max(1, min(GPU_MAX_BATCH, (fits // tile) ** 2))


def _memory_tile(
    info: ModelInfo,
    device: torch.device,
    dtype: torch.dtype,
    *,
    max_tile: int,
    max_work: float | None,
) -> int:
    return auto_tile_size(
        free_memory_bytes(device),
        3,
        dtype,
        info.parameters,
        scale=info.scale,
        multiple_of=info.size_requirements.multiple_of,
        features=64 if info.channels_last else 256,
        max_tile=max_tile,
        max_work=max_work,
    )


def upscale_pixels(
    model: ImageModelDescriptor,
    info: ModelInfo,
    pixels: np.ndarray,
    *,
    tile: int,
    batch: int | None = None,
    ensemble: int = 1,
    progress: Progress = no_progress,
    cancelled: CancelCheck = never_cancelled,
) -> np.ndarray:
    """(H, W, C) float32 pixels in [0, 1], C in {1, 3, 4} -> (H*s, W*s, C) through `model`.

    The network runs on its own device and dtype; `tile` is the tile side (0 = all at once);
    `batch` is tiles per forward pass (None: as many as memory allows on a GPU, one on the CPU);
    `ensemble` the symmetries each tile is averaged over (`tiling.dihedral_mean`).
    """
    upscaler = _Upscaler(model, info, tile, ensemble)
    if batch is not None:
        upscaler.batch = max(1, batch)
    return upscaler.pixels(pixels, progress, cancelled)


class _Upscaler:
    """One picture through one loaded network: channel adaptation, passes, progress."""

    def __init__(
        self, model: ImageModelDescriptor, info: ModelInfo, tile: int, ensemble: int = 1
    ) -> None:
        if info.input_channels not in (1, 3) or info.output_channels != info.input_channels:
            raise EngineError(
                f"{info.name} maps {info.input_channels} to {info.output_channels} channels; "
                "Studio upscales with 1- and 3-channel models."
            )
        self.model = model
        self.info = info
        self.device = model.device
        self.dtype = model.dtype
        self.tile = tile
        self.ensemble = ensemble
        self.batch = _batch_size(info, self.device, self.dtype, tile)

    def pixels(self, pixels: np.ndarray, progress: Progress, cancelled: CancelCheck) -> np.ndarray:
        """(H, W, C) float32 in [0, 1] -> (H*s, W*s, C) float32."""
        colour = pixels[..., :3] if pixels.shape[2] >= 3 else pixels[..., :1]
        alpha = pixels[..., 3:] if pixels.shape[2] == 4 else None
        constant_alpha = alpha is not None and float(alpha.min()) == float(alpha.max())
        passes = 1 if alpha is None or constant_alpha else 2
        planes = [self._pass(colour, _share(progress, 0, passes, ""), cancelled)]
        if alpha is not None and constant_alpha:
            height, width = planes[0].shape[:2]
            planes.append(np.full((height, width, 1), alpha.flat[0], dtype=np.float32))
        elif alpha is not None:
            planes.append(self._pass(alpha, _share(progress, 1, passes, "Alpha · "), cancelled))
        return planes[0] if len(planes) == 1 else np.concatenate(planes, axis=2)

    def _pass(self, planes: np.ndarray, progress: Progress, cancelled: CancelCheck) -> np.ndarray:
        image = torch.from_numpy(np.ascontiguousarray(planes)).permute(2, 0, 1).unsqueeze(0)
        image = image.to(device=self.device, dtype=self.dtype)
        out = upscale_tiled(
            dihedral_mean(self._run_tile_for(planes.shape[2]), self.ensemble, cancelled),
            image,
            scale=self.info.scale,
            tile=self.tile,
            overlap=DEFAULT_OVERLAP,
            size_rules=self.info.size_requirements,
            batch=self.batch,
            progress=progress,
            cancelled=cancelled,
        )
        return np.ascontiguousarray(out[0].permute(1, 2, 0).numpy())

    def _run_tile_for(self, channels: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """A tile function taking `channels` planes, whatever the network's own channel count."""
        forward = self._forward
        if channels == self.info.input_channels:
            return forward
        if channels == 1:  # grey through an RGB network: replicate, then average back
            return lambda batch: forward(batch.expand(-1, 3, -1, -1)).mean(dim=1, keepdim=True)

        def per_channel(batch: torch.Tensor) -> torch.Tensor:  # RGB through a grey network
            n, c, h, w = batch.shape
            out = forward(batch.reshape(n * c, 1, h, w))
            return out.reshape(n, c, out.shape[-2], out.shape[-1])

        return per_channel

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.info.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.model(batch)


def _share(progress: Progress, index: int, count: int, label: str) -> Progress:
    """Progress of pass `index` of `count` as a share of the run; previews of pass 0 only."""
    span = 0.95 / count

    def report(fraction: float, message: str, preview: Any | None = None) -> None:
        progress(span * (index + fraction), label + message, preview if index == 0 else None)

    return report
