"""A binary mask at an image's full resolution, painted with a round brush, with compact undo.

Kept free of Qt so its geometry can be checked against plain numpy. The mask is uint8, 0 (keep) or
255 (masked) and nothing else, so every edit is a set of flipped pixels: history stores, per step,
only the bounding box of what changed as packed, compressed bits, and undo and redo both flip them
back. A stroke across a 12-megapixel photo costs the pixels under the brush, never the whole mask.
"""

from __future__ import annotations

import math
import zlib
from collections import deque
from dataclasses import dataclass

import numpy as np

MASKED = 255
HISTORY_STEPS = 50


@dataclass(frozen=True)
class Box:
    """A pixel rectangle: rows top..top+height, columns left..left+width."""

    left: int
    top: int
    width: int
    height: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)

    def united(self, other: Box | None) -> Box:
        if other is None:
            return self
        left, top = min(self.left, other.left), min(self.top, other.top)
        right = max(self.left + self.width, other.left + other.width)
        bottom = max(self.top + self.height, other.top + other.height)
        return Box(left, top, right - left, bottom - top)


@dataclass(frozen=True)
class _Flip:
    """One undo step: the pixels inside `box` whose bit is set in `bits` changed."""

    box: Box
    bits: bytes  # zlib-compressed np.packbits of a (height, width) bool array

    def apply(self, mask: np.ndarray) -> None:
        count = self.box.width * self.box.height
        packed = np.frombuffer(zlib.decompress(self.bits), dtype=np.uint8)
        flips = np.unpackbits(packed, count=count).reshape(self.box.height, self.box.width)
        flips *= MASKED  # 0 or 255: XOR with it flips exactly the changed pixels
        region = mask[self.box.slices]
        np.bitwise_xor(region, flips, out=region)

    @property
    def size_bytes(self) -> int:
        return len(self.bits)


def _flip_of(changed: np.ndarray, offset: Box | None = None) -> _Flip | None:
    """The step for a bool array of changed pixels (located at `offset`), None if none changed."""
    rows = np.flatnonzero(changed.any(axis=1))
    if rows.size == 0:
        return None
    columns = np.flatnonzero(changed.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
    cropped = np.ascontiguousarray(changed[top:bottom, left:right])
    base_left, base_top = (offset.left, offset.top) if offset is not None else (0, 0)
    box = Box(int(base_left + left), int(base_top + top), int(right - left), int(bottom - top))
    return _Flip(box, zlib.compress(np.packbits(cropped).tobytes(), 1))


def binary(mask: np.ndarray) -> np.ndarray:
    """0/255 uint8 from a bool or uint8 array: values above 127 (or True) are masked."""
    data = np.asarray(mask)
    selected = data if data.dtype == np.bool_ else data > 127
    return np.where(selected, np.uint8(MASKED), np.uint8(0))


class MaskLayer:
    """The mask of one image and its edit history.

    `mask` is owned here and changed in place, so a view may wrap its buffer; replace the whole
    layer (a new MaskLayer) when the image changes.
    """

    def __init__(self, width: int, height: int, history_steps: int = HISTORY_STEPS) -> None:
        self.mask = np.zeros((height, width), dtype=np.uint8)
        self._undo: deque[_Flip] = deque(maxlen=history_steps)
        self._redo: list[_Flip] = []
        self._stroke: _Stroke | None = None

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    @property
    def height(self) -> int:
        return int(self.mask.shape[0])

    # -- whole-mask edits -----------------------------------------------------------------
    def replace(self, new_mask: np.ndarray) -> Box | None:
        """Make the mask `new_mask` (0/255, same shape) as one undo step; return what changed."""
        if new_mask.shape != self.mask.shape:
            raise ValueError(
                f"a {new_mask.shape[1]}x{new_mask.shape[0]} mask does not fit a "
                f"{self.width}x{self.height} image"
            )
        step = _flip_of(self.mask != new_mask)
        if step is None:
            return None
        self.mask[step.box.slices] = new_mask[step.box.slices]
        self._record(step)
        return step.box

    def clear(self) -> Box | None:
        return self.replace(np.zeros_like(self.mask))

    def invert(self) -> Box | None:
        """Flip every pixel; one full-size step that compresses to almost nothing."""
        if self.mask.size == 0:
            return None
        every_pixel = zlib.compress(b"\xff" * ((self.mask.size + 7) // 8), 1)
        step = _Flip(Box(0, 0, self.width, self.height), every_pixel)
        step.apply(self.mask)
        self._record(step)
        return step.box

    # -- strokes --------------------------------------------------------------------------
    def begin_stroke(self, radius: float, *, erase: bool) -> None:
        """Start a stroke: the segments painted until `end_stroke` make one undo step."""
        self._stroke = _Stroke(self.mask.shape, radius, 0 if erase else MASKED)

    def stroke_to(self, start: tuple[float, float], end: tuple[float, float]) -> Box | None:
        """Paint the pixels whose centre is within the radius of segment `start`-`end` (image
        coordinates x, y), and the pixels under both ends, so a 1 px brush never misses; return
        the box around them (what a view must redraw), None when it misses the image."""
        assert self._stroke is not None, "stroke_to outside begin_stroke/end_stroke"
        return self._stroke.segment(self.mask, start, end)

    def end_stroke(self) -> bool:
        """Finish the stroke as one undo step; False when it changed nothing."""
        stroke, self._stroke = self._stroke, None
        if stroke is None or stroke.box is None:
            return False
        step = _flip_of(stroke.changed[stroke.box.slices], stroke.box)
        if step is None:
            return False
        self._record(step)
        return True

    # -- history --------------------------------------------------------------------------
    def can_undo(self) -> bool:
        return bool(self._undo)

    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> Box | None:
        if not self._undo:
            return None
        step = self._undo.pop()
        step.apply(self.mask)
        self._redo.append(step)
        return step.box

    def redo(self) -> Box | None:
        if not self._redo:
            return None
        step = self._redo.pop()
        step.apply(self.mask)
        self._undo.append(step)
        return step.box

    def drop_last_step(self) -> Box | None:
        """Undo the last step and forget it (a click that turned out to be a double-click)."""
        box = self.undo()
        if box is not None:
            self._redo.pop()
        return box

    def history_bytes(self) -> int:
        """What the undo and redo steps hold, compressed."""
        return sum(step.size_bytes for step in (*self._undo, *self._redo))

    def _record(self, step: _Flip) -> None:
        self._undo.append(step)
        self._redo.clear()


class _Stroke:
    """A stroke in progress: which pixels it changed, and the box around them."""

    def __init__(self, shape: tuple[int, int], radius: float, value: int) -> None:
        self.radius = radius
        self.value = value
        self.changed = np.zeros(shape, dtype=bool)  # calloc'd: only touched pages cost memory
        self.box: Box | None = None

    def segment(
        self, mask: np.ndarray, start: tuple[float, float], end: tuple[float, float]
    ) -> Box | None:
        # Long segments go in pieces no longer than the radius, so each piece's box stays
        # close to the capsule instead of spanning the diagonal of a fast drag.
        length = math.dist(start, end)
        pieces = max(1, math.ceil(length / max(self.radius, 16.0)))
        covered: Box | None = None
        for i in range(pieces):
            a = _lerp(start, end, i / pieces)
            b = _lerp(start, end, (i + 1) / pieces)
            box = self._piece(mask, a, b)
            if box is not None:
                covered = box.united(covered)
        for x, y in (start, end):
            box = self._pixel(mask, x, y)
            if box is not None:
                covered = box.united(covered)
        return covered

    def _pixel(self, mask: np.ndarray, x: float, y: float) -> Box | None:
        column, row = math.floor(x), math.floor(y)
        if not (0 <= column < mask.shape[1] and 0 <= row < mask.shape[0]):
            return None
        if mask[row, column] != self.value:
            mask[row, column] = self.value
            self.changed[row, column] = True
        box = Box(column, row, 1, 1)
        self.box = box.united(self.box)
        return box

    def _piece(
        self, mask: np.ndarray, a: tuple[float, float], b: tuple[float, float]
    ) -> Box | None:
        box = capsule_box(a, b, self.radius, mask.shape[1], mask.shape[0])
        if box is None:
            return None
        hit = capsule_pixels(box, a, b, self.radius)
        region = mask[box.slices]
        newly = hit & (region != self.value)
        region[newly] = self.value
        self.changed[box.slices] |= newly
        self.box = box.united(self.box)
        return box


def _lerp(a: tuple[float, float], b: tuple[float, float], t: float) -> tuple[float, float]:
    return a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t


def capsule_box(
    a: tuple[float, float], b: tuple[float, float], radius: float, width: int, height: int
) -> Box | None:
    """The pixels whose centres can lie within `radius` of segment a-b, clipped to the image."""
    left = max(0, math.floor(min(a[0], b[0]) - radius - 0.5))
    top = max(0, math.floor(min(a[1], b[1]) - radius - 0.5))
    right = min(width, math.ceil(max(a[0], b[0]) + radius + 0.5))
    bottom = min(height, math.ceil(max(a[1], b[1]) + radius + 0.5))
    if right <= left or bottom <= top:
        return None
    return Box(left, top, right - left, bottom - top)


def capsule_pixels(
    box: Box, a: tuple[float, float], b: tuple[float, float], radius: float
) -> np.ndarray:
    """Within `box`, the pixels whose centre is within `radius` of segment a-b."""
    xs = np.arange(box.left, box.left + box.width, dtype=np.float64)[None, :] + 0.5 - a[0]
    ys = np.arange(box.top, box.top + box.height, dtype=np.float64)[:, None] + 0.5 - a[1]
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    if length2 > 0:
        t = np.clip((xs * dx + ys * dy) / length2, 0.0, 1.0)
        xs = xs - t * dx
        ys = ys - t * dy
    # The tolerance keeps stamps symmetric where a centre lies exactly on the brush's edge.
    return xs * xs + ys * ys <= radius * radius + 1e-9
