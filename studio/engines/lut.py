"""3D colour lookup tables: apply them at full resolution on the device, and read/write `.cube`.

A table is a float32 array (N, N, N, 3) indexed [r, g, b] (the layout colour-science uses), mapping
sRGB-encoded input colours on an even grid over the domain to output colours. Applying one is
trilinear interpolation (PyTorch's `grid_sample`, on whichever device the run uses) or tetrahedral
interpolation (what DaVinci Resolve does by default; a little sharper along the grey axis).

`.cube` is Adobe's Cube LUT Specification 1.0: keywords (TITLE, LUT_3D_SIZE, DOMAIN_MIN,
DOMAIN_MAX; Resolve's LUT_3D_INPUT_RANGE is read too), then N^3 lines of three numbers with the red
index changing fastest. Malformed files are refused with the line that is wrong.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from studio.engines.base import EngineError

log = logging.getLogger(__name__)

CUBE_MIN_SIZE = 2
CUBE_MAX_SIZE = 256  # the limits of the Cube specification
INTERPOLATIONS = ("trilinear", "tetrahedral")
_CHUNK_PIXELS = 1 << 22


class CubeError(EngineError):
    """A `.cube` file that cannot be used; the message names the file and the offending line."""


@dataclass(frozen=True)
class CubeLUT:
    """A 3D LUT as read from (or written to) a `.cube` file."""

    table: np.ndarray  # (N, N, N, 3) float32, indexed [r, g, b]
    title: str = ""
    domain_min: tuple[float, float, float] = (0.0, 0.0, 0.0)
    domain_max: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def size(self) -> int:
        return int(self.table.shape[0])


def identity_lut(size: int) -> np.ndarray:
    """The table that changes nothing: (N, N, N, 3) with entry [r, g, b] = (r, g, b) / (N - 1)."""
    axis = np.linspace(0.0, 1.0, size, dtype=np.float32)
    r, g, b = np.meshgrid(axis, axis, axis, indexing="ij")
    return np.stack([r, g, b], axis=-1)


# --- Applying -----------------------------------------------------------------------------------


def apply_lut(
    rgb: np.ndarray,
    table: np.ndarray,
    *,
    device: torch.device | None = None,
    interpolation: str = "trilinear",
    domain_min: tuple[float, float, float] = (0.0, 0.0, 0.0),
    domain_max: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Look every colour of `rgb` (..., 3) up in `table`; float32 (..., 3) out, same shape.

    Inputs outside the domain take the nearest edge of the table. Work is done on `device` (the CPU
    when None) in chunks of a few million pixels, so memory stays bounded for any image size.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, not {interpolation!r}")
    device = device or torch.device("cpu")
    shape = rgb.shape
    flat = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32).reshape(-1, 3))
    table_cpu = torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32))
    low = torch.tensor(domain_min, dtype=torch.float32)
    span = torch.tensor(domain_max, dtype=torch.float32) - low
    if interpolation == "tetrahedral":
        lut = table_cpu.to(device)
        scale, shift = 1 / span, -low / span  # to [0, 1]
    else:
        volume, to_grid_scale, to_grid_shift = _sampling_volume(table_cpu)
        volume = volume.to(device)
        scale = to_grid_scale / span
        shift = to_grid_shift - low * scale
    moves = bool((scale != 1).any() or (shift != 0).any())
    out = torch.empty_like(flat)
    for start in range(0, flat.shape[0], _CHUNK_PIXELS):
        chunk = flat[start : start + _CHUNK_PIXELS].to(device)
        if moves:  # one fused multiply-add from the domain to the lookup's coordinates
            chunk = torch.addcmul(shift.to(device), chunk, scale.to(device))
        destination = out[start : start + _CHUNK_PIXELS]
        if interpolation == "tetrahedral":
            destination.copy_(_tetrahedral(chunk, lut))
        else:
            _trilinear(chunk, volume, destination)
    return out.numpy().reshape(shape)


# Tables up to this size are sampled from a volume twice as wide whose upper corner is the table:
# grid_sample then takes colours in [0, 1] as they are, saving a pass over every pixel.
_DIRECT_SAMPLING_MAX_SIZE = 65


def _sampling_volume(table: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """(volume (1, 3, S, S, S) for grid_sample, a, b): a colour u in [0, 1] samples it at a·u + b.

    grid_sample reads (x, y, z) = (W, H, D) of a (C, D, H, W) volume, so r goes on W and b on D.
    With align_corners, coordinate g lands on index (g + 1) / 2 · (S - 1); in a volume of
    S = 2N - 1 holding the table at indices N - 1 ... 2N - 2, that is N - 1 + u · (N - 1) for
    g = u. The lower part repeats the table's edges, so colours below 0 clamp as they should.
    """
    size = table.shape[0]
    volume = table.permute(3, 2, 1, 0).unsqueeze(0)
    if size > _DIRECT_SAMPLING_MAX_SIZE:
        return volume, 2.0, -1.0
    return F.pad(volume, (size - 1, 0) * 3, mode="replicate"), 1.0, 0.0


def _trilinear(grid: torch.Tensor, volume: torch.Tensor, out: torch.Tensor) -> None:
    """Trilinear lookups of grid (P, 3) in `volume` with grid_sample, written to out (P, 3).

    The pixels are split into one batch entry per CPU thread: grid_sample's CPU kernel runs the
    batch entries in parallel, not the pixels of one entry.
    """
    parts = torch.get_num_threads() if grid.device.type == "cpu" else 1
    count = grid.shape[0]
    per_part = math.ceil(count / parts)
    if per_part * parts != count:
        grid = F.pad(grid, (0, 0, 0, per_part * parts - count))
    try:
        sampled = F.grid_sample(
            volume.expand(parts, -1, -1, -1, -1),
            grid.view(parts, 1, 1, per_part, 3),
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        )
    except (NotImplementedError, RuntimeError) as exc:
        if grid.device.type == "cpu":
            raise
        log.info("3D grid_sample unavailable on %s (%s); using the CPU", grid.device, exc)
        _trilinear(grid[:count].cpu(), volume.cpu(), out)
        return
    channels_last = sampled.view(parts, 3, per_part).transpose(1, 2)  # (parts, per_part, 3)
    if per_part * parts == count:
        out.view(parts, per_part, 3).copy_(channels_last)
    else:
        out.copy_(channels_last.reshape(-1, 3)[:count])


def _tetrahedral(unit: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """unit (P, 3) in [0, 1] -> (P, 3): the four corners of the tetrahedron holding each colour.

    With the fractional offsets ordered f1 >= f2 >= f3, the result is
    (1-f1)·c000 + (f1-f2)·c[largest axis] + (f2-f3)·c111[without the smallest axis] + f3·c111.
    Ties need no care: the vertex a tie makes ambiguous has weight zero.
    """
    size = lut.shape[0]
    scaled = unit.clamp(0, 1) * (size - 1)
    corner = scaled.floor().clamp_(max=size - 2)
    fraction = scaled - corner
    strides = torch.tensor([size * size, size, 1], device=unit.device)
    base = corner.long() @ strides
    f1, largest = fraction.max(dim=-1)
    f3, smallest = fraction.min(dim=-1)
    f2 = fraction.sum(-1) - f1 - f3
    far = base + (size * size + size + 1)
    flat = lut.reshape(-1, 3)
    result = flat[base] * (1 - f1).unsqueeze(-1)
    result += flat[base + strides[largest]] * (f1 - f2).unsqueeze(-1)
    result += flat[far - strides[smallest]] * (f2 - f3).unsqueeze(-1)
    result += flat[far] * f3.unsqueeze(-1)
    return result


# --- .cube files --------------------------------------------------------------------------------


def write_cube(path: str | os.PathLike[str], lut: CubeLUT) -> Path:
    """Write `lut` as an Adobe Cube 1.0 file (atomically: a complete file or none)."""
    path = Path(path)
    size = lut.size
    if not CUBE_MIN_SIZE <= size <= CUBE_MAX_SIZE or lut.table.shape != (size, size, size, 3):
        raise ValueError(f"a .cube table is (N, N, N, 3) with 2 <= N <= 256, not {lut.table.shape}")
    title = lut.title.replace('"', "'").replace("\n", " ")
    header = [
        f'TITLE "{title}"',
        "# Created by Studio",
        f"LUT_3D_SIZE {size}",
        "DOMAIN_MIN " + " ".join(f"{v:.6f}" for v in lut.domain_min),
        "DOMAIN_MAX " + " ".join(f"{v:.6f}" for v in lut.domain_max),
    ]
    rows = np.asarray(lut.table, dtype=np.float64).transpose(2, 1, 0, 3).reshape(-1, 3)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii", newline="\n") as fh:
            fh.write("\n".join(header) + "\n")
            np.savetxt(fh, rows, fmt="%.6f")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_cube(path: str | os.PathLike[str]) -> CubeLUT:
    """Read a 3D `.cube` LUT, or raise CubeError saying what is wrong and on which line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CubeError(
            f"{path} is not a text .cube file. Choose a 3D LUT in .cube format."
        ) from exc
    except OSError as exc:
        raise CubeError(f"could not read {path}: {exc.strerror or exc}.") from exc
    return _CubeParser(path).parse(text.splitlines())


class _CubeParser:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.title = path.stem
        self.size: int | None = None
        self.size_1d: int | None = None
        self.domain_min = (0.0, 0.0, 0.0)
        self.domain_max = (1.0, 1.0, 1.0)
        self.rows: list[list[float]] = []
        self.first_data_line = 0

    def fail(self, line_number: int | None, problem: str) -> CubeError:
        where = f"{self.path}, line {line_number}" if line_number else str(self.path)
        return CubeError(f"{where}: {problem}. It is not a valid 3D .cube LUT.")

    def parse(self, lines: list[str]) -> CubeLUT:
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            tokens = line.split()
            if _is_number(tokens[0]):
                self._data(number, tokens)
            elif self.rows:
                raise self.fail(number, f"expected three numbers, found {line[:40]!r}")
            else:
                self._keyword(number, tokens, line)
        return self._finish()

    def _keyword(self, number: int, tokens: list[str], line: str) -> None:
        keyword = tokens[0].upper()
        if keyword == "TITLE":
            self.title = line[len(tokens[0]) :].strip().strip('"')
        elif keyword == "LUT_3D_SIZE":
            self.size = self._size(number, tokens)
        elif keyword == "LUT_1D_SIZE":
            self.size_1d = self._size(number, tokens)
        elif keyword == "DOMAIN_MIN":
            self.domain_min = self._triple(number, tokens)
        elif keyword == "DOMAIN_MAX":
            self.domain_max = self._triple(number, tokens)
        elif keyword in ("LUT_3D_INPUT_RANGE", "LUT_1D_INPUT_RANGE"):
            low, high = self._numbers(number, tokens, 2)
            self.domain_min, self.domain_max = (low,) * 3, (high,) * 3
        else:
            log.debug("%s line %d: ignoring keyword %s", self.path, number, tokens[0])

    def _size(self, number: int, tokens: list[str]) -> int:
        if len(tokens) != 2 or not tokens[1].isdigit():
            raise self.fail(number, f"{tokens[0]} needs one whole number")
        size = int(tokens[1])
        if not CUBE_MIN_SIZE <= size <= CUBE_MAX_SIZE:
            raise self.fail(
                number,
                f"{tokens[0]} {size} is out of range ({CUBE_MIN_SIZE} to {CUBE_MAX_SIZE} points)",
            )
        return size

    def _triple(self, number: int, tokens: list[str]) -> tuple[float, float, float]:
        a, b, c = self._numbers(number, tokens, 3)
        return (a, b, c)

    def _numbers(self, number: int, tokens: list[str], count: int) -> list[float]:
        values = tokens[1:]
        if len(values) != count:
            raise self.fail(number, f"{tokens[0]} needs {count} numbers, found {len(values)}")
        return [self._number(number, value) for value in values]

    def _number(self, number: int, token: str) -> float:
        try:
            value = float(token)
        except ValueError:
            raise self.fail(number, f"{token[:20]!r} is not a number") from None
        if not math.isfinite(value):
            raise self.fail(number, f"{token[:20]!r} is not a finite number")
        return value

    def _data(self, number: int, tokens: list[str]) -> None:
        if not self.rows:
            self.first_data_line = number
        if len(tokens) != 3:
            raise self.fail(number, f"a table line needs three numbers, found {len(tokens)}")
        self.rows.append([self._number(number, token) for token in tokens])

    def _finish(self) -> CubeLUT:
        if self.size_1d is not None:
            raise self.fail(
                None,
                "it holds a 1D LUT (LUT_1D_SIZE); Studio applies 3D LUTs. "
                "Export the grade as a 3D LUT",
            )
        if self.size is None:
            raise self.fail(None, "LUT_3D_SIZE is missing")
        expected = self.size**3
        if len(self.rows) != expected:
            raise self.fail(
                None,
                f"LUT_3D_SIZE {self.size} needs {expected} table lines, found {len(self.rows)}",
            )
        if any(high <= low for low, high in zip(self.domain_min, self.domain_max, strict=True)):
            raise self.fail(None, "DOMAIN_MAX must be above DOMAIN_MIN in every channel")
        table = np.asarray(self.rows, dtype=np.float32).reshape(self.size, self.size, self.size, 3)
        return CubeLUT(
            table=np.ascontiguousarray(table.transpose(2, 1, 0, 3)),  # rows are [b][g][r]
            title=self.title,
            domain_min=self.domain_min,
            domain_max=self.domain_max,
        )


def _is_number(token: str) -> bool:
    first = token[0]
    return first.isdigit() or first in "+-." or token.lower() in ("nan", "inf", "-inf", "+inf")
