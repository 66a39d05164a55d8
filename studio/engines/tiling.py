"""Running an image-to-image network over a picture tile by tile, invisibly.

The picture is cut into tiles of `tile` pixels; the network sees each with `overlap` more pixels
of context, shared with its neighbours (as Real-ESRGAN's `tile` plus `tile_pad`). Each tile's
output is weighted by a window that is zero next to an edge shared with another tile (where the
network saw padding instead of the neighbouring pixels), rises with a raised cosine across the
middle of the overlap, and is one elsewhere and along the picture's own borders. Outputs and
weights accumulate into two buffers and the result is their quotient: no seams, and a tiled run
matches an untiled one to within rounding for networks whose reach fits in the overlap.

Tiles all have one size, spread evenly so that no tile is mostly overlap; batches of them run in
one forward pass and the backends reuse their kernels. On out-of-memory the remaining tiles are
split into tiles half as large and the run carries on. Nothing here is specific to upscaling:
restoration networks run through it with `scale=1`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from studio.engines.base import (
    ENSEMBLE_SIZES,
    CancelCheck,
    Cancelled,
    EngineError,
    Progress,
    never_cancelled,
)
from studio.engines.base import no_progress as _no_progress
from studio.models.device import empty_cache, is_out_of_memory
from studio.models.upscalers import SizeRules

log = logging.getLogger(__name__)

DEFAULT_OVERLAP = 24  # input pixels of context shared by neighbouring tiles
MIN_TILE = 32  # out-of-memory halving stops here
PREVIEW_SIDE = 384  # longest side of the previews sent with progress
PREVIEWS_PER_RUN = 8

RunTile = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Window:
    """A tile: the input rectangle one forward pass sees, in pixels of the (padded) input."""

    y: int
    x: int
    height: int
    width: int


def upscale_tiled(
    run_tile: RunTile,
    image: torch.Tensor,
    *,
    scale: int,
    tile: int,
    overlap: int = DEFAULT_OVERLAP,
    size_rules: SizeRules | None = None,
    batch: int = 1,
    progress: Progress = _no_progress,
    cancelled: CancelCheck = never_cancelled,
    min_tile: int = MIN_TILE,
) -> torch.Tensor:
    """Apply `run_tile` to `image` (1, C, H, W) tile by tile; return (1, C', H*scale, W*scale).

    `run_tile` maps a batch (N, C, h, w), on the image's device and dtype, to (N, C', h*s, w*s).
    `tile` is the side of the tiles in input pixels, each seen with up to `overlap` pixels more
    (<= 0: the whole image at once). The result is float32 on the CPU. Raises `Cancelled` when
    `cancelled()` turns true (polled before every batch) and `EngineError` when even `min_tile`
    pixel tiles run out of memory. The result is laid out channels-last in memory, so
    `result[0].permute(1, 2, 0).numpy()` is an (H, W, C) array without a copy.
    """
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"expected an image of shape (1, C, H, W), got {tuple(image.shape)}")
    rules = size_rules or SizeRules()
    _, _, height, width = image.shape
    padded = _pad_to_rules(image, rules)
    step = rules.multiple_of
    tile = _round_down(tile, step) if tile > 0 else max(padded.shape[2], padded.shape[3])
    tile = max(tile, step)
    run = _TiledRun(run_tile, padded, scale=scale, overlap=overlap, step=step, rules=rules)
    run.execute(tile, batch, progress, cancelled, max(min_tile, step))
    return run.result()[:, :, : height * scale, : width * scale]


def dihedral_mean(
    run_tile: RunTile, count: int, cancelled: CancelCheck = never_cancelled
) -> RunTile:
    """`run_tile` averaged over the tile mirrored and turned: a geometric self-ensemble.

    A network's errors differ between a picture and its mirror image while the picture does not,
    so the mean of the first `count` of the square's eight symmetries (1: as is; 2: and mirrored
    left-right; 4: and upside down; 8: and transposed) is a little cleaner, at `count` times the
    cost. The output of a fully convolutional network at any scale maps back pixel for pixel, so
    each is undone before the mean. `cancelled` is polled between the symmetries, as one tile
    now takes `count` passes.
    """
    if count not in ENSEMBLE_SIZES:
        raise ValueError(f"the ensemble is one of {ENSEMBLE_SIZES} symmetries, not {count!r}")
    if count == 1:
        return run_tile

    def run(batch: torch.Tensor) -> torch.Tensor:
        first = run_tile(batch)
        total = first.float()
        for k in range(1, count):
            if cancelled():
                raise Cancelled
            total = total + _undo_symmetry(run_tile(_symmetry(batch, k).contiguous()), k).float()
        return (total / count).to(first.dtype)

    return run


def _symmetry(batch: torch.Tensor, k: int) -> torch.Tensor:
    """Symmetry k (0-7) of an (N, C, H, W) batch: bit 0 mirrors, bit 1 flips, bit 2 transposes."""
    if k & 4:
        batch = batch.transpose(2, 3)
    if k & 1:
        batch = batch.flip(3)
    if k & 2:
        batch = batch.flip(2)
    return batch


def _undo_symmetry(batch: torch.Tensor, k: int) -> torch.Tensor:
    """The inverse of `_symmetry(batch, k)`: its steps in reverse order."""
    if k & 2:
        batch = batch.flip(2)
    if k & 1:
        batch = batch.flip(3)
    if k & 4:
        batch = batch.transpose(2, 3)
    return batch


class _TiledRun:
    """The accumulation buffers of one tiled run, and the loop that fills them.

    While the tiles form a grid (rows x columns, as planned), the sum of their weights is the
    product of a per-row and a per-column sum, so no weight plane is stored: that saves a quarter
    of the memory of an RGB result. Out-of-memory splits break the grid; from then on the weights
    accumulate in a plane like the outputs.
    """

    def __init__(
        self,
        run_tile: RunTile,
        image: torch.Tensor,
        *,
        scale: int,
        overlap: int,
        step: int,
        rules: SizeRules,
    ) -> None:
        self.run_tile = run_tile
        self.image = image
        self.scale = scale
        self.overlap = overlap
        self.step = step
        self.rules = rules
        self.height, self.width = int(image.shape[2]), int(image.shape[3])
        self.output: torch.Tensor | None = None  # allocated when the channel count is known
        self.row_weight = torch.zeros(self.height * scale)
        self.column_weight = torch.zeros(self.width * scale)
        self.weight: torch.Tensor | None = None  # the weight plane, once tiles leave the grid
        self.done: list[Window] = []
        self._windows_cache: dict[tuple[int, int, int, int], torch.Tensor] = {}

    def execute(
        self, tile: int, batch: int, progress: Progress, cancelled: CancelCheck, min_tile: int
    ) -> None:
        pending = plan_windows(self.height, self.width, tile, self.overlap, step=self.step)
        self._grid_weights(pending)
        done = 0
        preview_every = max(1, math.ceil(len(pending) / PREVIEWS_PER_RUN))
        next_preview = preview_every
        while pending:
            if cancelled():
                raise Cancelled
            group = _same_size_prefix(pending, batch)
            outputs = self._forward_or_none(group)
            if outputs is None:  # out of memory; the failed attempt's tensors are gone by now
                empty_cache(self.image.device)
                if batch > 1:
                    batch = 1
                    progress(done / (done + len(pending)), "Out of memory; one tile at a time")
                    continue
                tile = self._halve(tile, min_tile)
                self._weight_plane()
                pending = [w for old in pending for w in _split(old, tile, self.overlap, self.step)]
                progress(
                    done / (done + len(pending)),
                    f"Out of memory; carrying on with {tile} px tiles",
                )
                continue
            for window, out in zip(group, outputs, strict=True):
                self._accumulate(window, out)
            del pending[: len(group)]
            done += len(group)
            total = done + len(pending)
            preview = None
            if done >= next_preview and pending:
                preview = self.preview()
                next_preview = done + preview_every
            progress(done / total, f"Tile {done}/{total}", preview)

    def _halve(self, tile: int, min_tile: int) -> int:
        smaller = _round_down(tile // 2, self.step)
        if smaller < min_tile or smaller >= tile:
            raise EngineError(
                f"Out of memory even with {tile} px tiles. Close other programs that use the GPU, "
                "choose a smaller model, or run on the CPU (Settings > Device)."
            )
        log.info("out of memory with %d px tiles; halving to %d", tile, smaller)
        return smaller

    def _forward_or_none(self, group: list[Window]) -> torch.Tensor | None:
        """The outputs for `group`, or None when the device ran out of memory."""
        try:
            return self._forward(group)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            log.info("out of memory on a batch of %d tiles: %s", len(group), exc)
            return None  # leaving the handler drops the traceback, and the tensors it holds

    def _forward(self, group: list[Window]) -> torch.Tensor:
        crops = [self.image[:, :, w.y : w.y + w.height, w.x : w.x + w.width] for w in group]
        batch = crops[0] if len(crops) == 1 else torch.cat(crops)
        height, width = group[0].height, group[0].width
        fit_w, fit_h = self.rules.padded(width, height)
        if (fit_w, fit_h) != (width, height):
            batch = _pad(batch, fit_h - height, fit_w - width)
        out = self.run_tile(batch)
        expected = (fit_h * self.scale, fit_w * self.scale)
        if tuple(out.shape[-2:]) != expected:
            raise EngineError(
                f"The model returned a {out.shape[-1]}x{out.shape[-2]} tile for a {fit_w}x{fit_h} "
                f"input; expected x{self.scale}. This model cannot be tiled; choose tile size 0."
            )
        return out[:, :, : height * self.scale, : width * self.scale]

    def _accumulate(self, window: Window, out: torch.Tensor) -> None:
        out = out.to(device="cpu", dtype=torch.float32)
        if self.output is None:  # laid out (H, W, C) in memory: numpy takes the result as it is
            channels = int(out.shape[0])
            height, width = self.height * self.scale, self.width * self.scale
            hwc = torch.zeros(1, height, width, channels, dtype=torch.float32)
            self.output = hwc.permute(0, 3, 1, 2)
        weight = self._window_weight(window)
        s = self.scale
        ys = slice(window.y * s, (window.y + window.height) * s)
        xs = slice(window.x * s, (window.x + window.width) * s)
        self.output[0, :, ys, xs].addcmul_(out, weight)
        if self.weight is None:
            self.done.append(window)
        else:
            self.weight[ys, xs].add_(weight)

    def _grid_weights(self, windows: list[Window]) -> None:
        s = self.scale
        for y, height in sorted({(w.y, w.height) for w in windows}):
            ramp = edge_ramp(height, s, self.overlap, y > 0, y + height < self.height)
            self.row_weight[y * s : (y + height) * s] += ramp
        for x, width in sorted({(w.x, w.width) for w in windows}):
            ramp = edge_ramp(width, s, self.overlap, x > 0, x + width < self.width)
            self.column_weight[x * s : (x + width) * s] += ramp

    def _weight_plane(self) -> None:
        """Leave the grid: sum the weights of the tiles done so far into a plane."""
        if self.weight is not None:
            return
        s = self.scale
        self.weight = torch.zeros(self.height * s, self.width * s)
        for w in self.done:
            ys = slice(w.y * s, (w.y + w.height) * s)
            self.weight[ys, w.x * s : (w.x + w.width) * s].add_(self._window_weight(w))
        self.done.clear()

    def _window_weight(self, window: Window) -> torch.Tensor:
        top, left = window.y > 0, window.x > 0
        bottom = window.y + window.height < self.height
        right = window.x + window.width < self.width
        key = (window.height, window.width, top | bottom << 1, left | right << 1)
        weight = self._windows_cache.get(key)
        if weight is None:
            wy = edge_ramp(window.height, self.scale, self.overlap, top, bottom)
            wx = edge_ramp(window.width, self.scale, self.overlap, left, right)
            weight = wy[:, None] * wx[None, :]
            self._windows_cache[key] = weight
        return weight

    def result(self) -> torch.Tensor:
        """The blended output; computed in place, so call it once, at the end."""
        assert self.output is not None, "a tiled run always processes at least one tile"
        if self.weight is not None:
            return self.output.div_(self.weight.clamp_min_(1e-12))
        rows = self.row_weight.clamp_min_(1e-12)[:, None]
        return self.output.div_(rows).div_(self.column_weight.clamp_min_(1e-12))

    def preview(self) -> np.ndarray:
        """The output so far, at most PREVIEW_SIDE px, as uint8 (H, W, 3); unfinished is black.

        On the grid, pixels whose neighbouring tile is still to come fade towards black."""
        assert self.output is not None
        stride = max(1, math.ceil(max(self.output.shape[2:]) / PREVIEW_SIDE))
        if self.weight is None:
            weight = self.row_weight[::stride, None] * self.column_weight[None, ::stride]
        else:
            weight = self.weight[::stride, ::stride]
        pixels = self.output[0, :, ::stride, ::stride] / weight.clamp_min(1e-12)
        pixels = (pixels.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        if pixels.shape[0] > 3:  # colour first, then extra planes (a restorer's mask, ...)
            pixels = pixels[:3]
        elif pixels.shape[0] != 3:
            pixels = pixels[:1].expand(3, -1, -1)
        return np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())


def plan_windows(
    height: int, width: int, tile: int, overlap: int, *, step: int = 1
) -> list[Window]:
    """Equal-size windows covering height x width, row by row, neighbours sharing >= overlap.

    Windows are at most `tile + overlap` pixels, as few as that allows, and no larger than needed
    for that many. Positions are multiples of `step` (height and width must be, too), so networks
    that work on blocks of pixels (pixel unshuffle) group them as they would untiled.
    """
    rows, size_h = _spread(height, tile, overlap, step)
    columns, size_w = _spread(width, tile, overlap, step)
    return [Window(y, x, size_h, size_w) for y in rows for x in columns]


def _spread(length: int, tile: int, overlap: int, step: int) -> tuple[list[int], int]:
    """Starts and size of the fewest equal windows along one side."""
    shared = overlap + step - 1  # what rounding positions to the grid may take from the overlap
    largest = max(_round_down(tile + overlap, step), _round_up(shared + 1, step))
    if length <= largest:
        return [0], length
    count = max(2, math.ceil((length - overlap) / tile))
    size = length
    while count < length:
        size = min(_round_up(math.ceil((length + (count - 1) * shared) / count), step), length)
        if size <= largest:
            break
        count += 1
    span = length - size
    return sorted({_round_down(span * i // (count - 1), step) for i in range(count)}), size


def _split(window: Window, tile: int, overlap: int, step: int) -> list[Window]:
    """Smaller tiles covering `window` (after out-of-memory)."""
    return [
        Window(window.y + w.y, window.x + w.x, w.height, w.width)
        for w in plan_windows(window.height, window.width, tile, overlap, step=step)
    ]


def edge_ramp(size: int, scale: int, overlap: int, start: bool, end: bool) -> torch.Tensor:
    """Per-output-pixel weights along one side of a tile of `size` input pixels.

    At an edge shared with another tile (`start` / `end` true) the weight is zero for the first
    third of the overlap, rises as a raised cosine across its middle third and is one beyond;
    mirrored ramps of two neighbours sum to one.
    """
    centres = (torch.arange(size * scale, dtype=torch.float64) + 0.5) / scale
    weight = torch.ones(size * scale, dtype=torch.float64)
    if overlap <= 0:
        return weight.float()
    if start:
        weight *= _ramp(centres, overlap)
    if end:
        weight *= _ramp(size - centres, overlap)
    return weight.float()


def _ramp(distance: torch.Tensor, overlap: int) -> torch.Tensor:
    guard = overlap / 3
    rise = (distance - guard) / (overlap - 2 * guard)
    return 0.5 - 0.5 * torch.cos(math.pi * rise.clamp(0, 1))


def _same_size_prefix(pending: list[Window], batch: int) -> list[Window]:
    first = pending[0]
    group = [first]
    for window in pending[1:batch]:
        if (window.height, window.width) != (first.height, first.width):
            break
        group.append(window)
    return group


def _pad_to_rules(image: torch.Tensor, rules: SizeRules) -> torch.Tensor:
    """Pad bottom/right as spandrel does for an untiled call, so both see the same pixels."""
    height, width = int(image.shape[2]), int(image.shape[3])
    fit_w, fit_h = SizeRules(rules.minimum, rules.multiple_of).padded(width, height)
    return _pad(image, fit_h - height, fit_w - width)


def _pad(batch: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Reflect as far as reflection reaches, then replicate (spandrel's `pad_tensor`)."""
    if pad_h <= 0 and pad_w <= 0:
        return batch
    height, width = int(batch.shape[2]), int(batch.shape[3])
    reflect_h, reflect_w = min(pad_h, height - 1), min(pad_w, width - 1)
    if reflect_h or reflect_w:
        batch = F.pad(batch, (0, reflect_w, 0, reflect_h), mode="reflect")
    if pad_h - reflect_h or pad_w - reflect_w:
        batch = F.pad(batch, (0, pad_w - reflect_w, 0, pad_h - reflect_h), mode="replicate")
    return batch


def _round_down(value: int, step: int) -> int:
    return value // step * step


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def auto_tile_size(
    free_bytes: int,
    channels: int,
    dtype: torch.dtype,
    model_params: int,
    *,
    scale: int,
    multiple_of: int = 1,
    features: int = 64,
    max_tile: int = 1024,
    max_work: float | None = None,
    overlap: int = DEFAULT_OVERLAP,
) -> int:
    """A tile side (input pixels) whose activations, with the overlap, fit in half of `free_bytes`.

    The estimate assumes a few `features`-channel maps alive at input resolution and at output
    resolution (ESRGAN-like); pass more `features` for transformer networks. `max_work` caps
    multiply-accumulates per tile (~ parameters x pixels), which keeps CPU tiles short enough for
    smooth progress and prompt cancelling.
    """
    element = torch.finfo(dtype).bits // 8
    usable = free_bytes * 0.5 - 2 * model_params * element
    area = scale * scale
    per_pixel = element * (features * 6 + features * area * 3 + channels * area * 4)
    window = math.isqrt(max(int(usable / per_pixel), 0))
    if max_work is not None and model_params > 0:
        window = min(window, math.isqrt(int(max_work / model_params)))
    side = min(window - overlap, max_tile)
    grain = max(MIN_TILE, multiple_of)
    return max(_round_down(side, grain), grain)
