"""Grade: give one photo the colours of another, or carry an edit made elsewhere to other photos.

No downloaded model: normalizing flows (`studio.nn.flows`) are fitted in seconds on colours sampled
from the user's own pictures.

- "reference": a flow is fitted to the source's OKLab colours and one to the reference's; the grade
  is reference-inverse after source-forward, an exact bijection of colour space. Both flows are
  triangular (lightness, then a given lightness, then b given both), which makes the grade a
  Knothe-Rosenblatt transport: lightness goes through a monotone curve and is never reordered, so
  textures keep their structure. Strength t moves each colour through the reference flow's latent
  space, f_r^-1((1-t)·f_r(x) + t·f_s(x)): t = 0 is the identity, 1 the full match, above 1 goes
  further the same way.
- "pair": a flow is fitted to map the 'before' colours of a pixel-aligned pair to its 'after'
  colours (curves per channel, a channel mix, then hue-dependent couplings, on sRGB values), then
  applied to other photos; its exact inverse undoes it. Strength scales the edit in OKLab.
- "lut": a `.cube` file is applied. "preset": a grade saved earlier (`Grade.save`) is applied.

Every grade is baked into a 3D LUT (17, 33 or 65 points) and applied to the full-resolution picture
on the device. Alpha, bit depth and EXIF are kept. A picture with a non-sRGB ICC profile is
converted to sRGB on the way in; the output is then sRGB and carries an sRGB profile. Otherwise the
input's profile (or none) is kept. Grey pictures have no colour to learn from, so they are refused
as a reference, a before/after or a photo to match; a grey input to a LUT or preset becomes RGB.

"Preserve luminance" keeps the OKLab L of each input colour and transfers only chroma and hue.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from studio.engines.base import (
    CancelCheck,
    Cancelled,
    EngineError,
    Progress,
    Request,
    RunFacts,
    never_cancelled,
    no_progress,
)
from studio.engines.color import (
    is_grey,
    linear_to_lms,
    lms_root_to_oklab,
    oklab_to_srgb,
    oklab_to_srgb_unclipped,
    srgb_to_linear,
    srgb_to_oklab,
    to_srgb,
)
from studio.engines.lut import (
    INTERPOLATIONS,
    CubeLUT,
    apply_lut,
    identity_lut,
    read_cube,
    write_cube,
)
from studio.imaging import Picture, file_sha256, load_picture
from studio.models.cache import ModelCache, ModelKey
from studio.models.device import DEVICE_CHOICES
from studio.models.device import resolve_device as _resolve_device
from studio.nn.flows import ColourFlow

log = logging.getLogger(__name__)

MODES = ("reference", "pair", "lut", "preset")
LUT_SIZES = (17, 33, 65)
OUTPUT_FORMATS = ("png", "jpeg", "webp", "tiff")
MAX_STRENGTH = 2.0
DEFAULT_COUPLING_LAYERS = 6
DEFAULT_HIDDEN = 32
DEFAULT_ITERATIONS = 200
LIMITS = {"coupling_layers": (1, 32), "hidden": (4, 512), "iterations": (1, 100_000)}
PRESET_FORMAT = "studio-grade"
PRESET_VERSION = 1
PRESET_METADATA_KEY = "studio_grade"  # the description, inside a preset's .safetensors
DENSITY_SMOOTHING = 0.005  # OKLab: colours are blurred by this much for density fitting
OKLAB_JND = 0.02  # about a just-noticeable difference in OKLab: the unit of the pair loss
PROGRESS_EVERY = 10  # iterations between progress reports and cancel checks
FIT_SHARE = 0.85  # of the progress bar, for fitting
_PAIR_MIN_EDGE_CORRELATION = 0.25


# --- The request --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradeRequest(Request):
    """Everything that determines a grade's output. Invalid values raise `EngineError`."""

    input_path: str
    mode: str  # "reference" | "pair" | "lut" | "preset"
    reference_path: str | None = None
    before_path: str | None = None
    after_path: str | None = None
    lut_path: str | None = None  # a .cube file (mode "lut")
    preset_path: str | None = None  # a saved grade (mode "preset"; lets a re-run skip fitting)
    strength: float = 1.0  # 0..2; 1 = the full grade, above 1 extrapolates
    preserve_luminance: bool = False
    lut_size: int = 33  # 17 | 33 | 65
    interpolation: str = "trilinear"  # trilinear | tetrahedral
    coupling_layers: int = DEFAULT_COUPLING_LAYERS
    hidden: int = DEFAULT_HIDDEN
    iterations: int = DEFAULT_ITERATIONS
    seed: int = 0
    output_format: str = "png"  # png | jpeg | webp | tiff (used by whoever saves the result)
    quality: int = 95
    device: str = "auto"  # auto | cuda | cuda:N | mps | cpu

    tool: ClassVar[str] = "grade"
    # the images it reads, in the order of `input_paths`
    image_fields: ClassVar[tuple[str, ...]] = (
        "input_path",
        "reference_path",
        "before_path",
        "after_path",
    )
    file_fields: ClassVar[tuple[str, ...]] = ("lut_path", "preset_path")
    required: ClassVar[tuple[str, ...]] = ("input_path", "mode")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise EngineError(f"unknown grade mode {self.mode!r}; choose {', '.join(MODES)}.")
        if not isinstance(self.input_path, str) or not self.input_path:
            raise EngineError("input_path must be a file path.")
        for name in _NEEDED_PATHS[self.mode]:
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise EngineError(f"a {self.mode!r} grade needs {name.replace('_', ' ')}.")
        _check_number("strength", self.strength, 0.0, MAX_STRENGTH)
        if not isinstance(self.preserve_luminance, bool):
            raise EngineError("preserve_luminance must be true or false.")
        if self.lut_size not in LUT_SIZES or isinstance(self.lut_size, bool):
            raise EngineError(
                f"lut_size must be one of {', '.join(map(str, LUT_SIZES))}, not {self.lut_size!r}."
            )
        if self.interpolation not in INTERPOLATIONS:
            raise EngineError(
                f"unknown interpolation {self.interpolation!r}; choose {', '.join(INTERPOLATIONS)}."
            )
        for name, (low, high) in LIMITS.items():
            _check_whole(name, getattr(self, name), low, high)
        _check_whole("seed", self.seed, 0, 2**63 - 1)
        output_format = str(self.output_format).lower().replace("jpg", "jpeg")
        if output_format not in OUTPUT_FORMATS:
            raise EngineError(
                f"unknown output format {self.output_format!r}; choose {', '.join(OUTPUT_FORMATS)}."
            )
        object.__setattr__(self, "output_format", output_format)
        _check_whole("quality", self.quality, 1, 100)
        device = str(self.device).lower()
        if device not in DEVICE_CHOICES and not device.startswith("cuda:"):
            raise EngineError(
                f"unknown device {self.device!r}; choose {', '.join(DEVICE_CHOICES)}."
            )

    @classmethod
    def _coerce(cls, values: dict[str, Any]) -> dict[str, Any]:
        strength = values.get("strength")
        if isinstance(strength, int) and not isinstance(strength, bool):
            values["strength"] = float(strength)  # JSON wrote 1.0 as 1
        return values

    def input_file(self, name: str) -> str | None:
        """A preset is stored as the one .safetensors that holds all of it; an older pair (a .json
        naming its weights) cannot be stored as one file and is read where it is."""
        value = getattr(self, name)
        if name != "preset_path":
            return value
        whole = whole_preset_file(value)
        return str(whole) if whole is not None else None

    def reusing_outputs(self, outputs: Sequence[Path]) -> GradeRequest:
        """This request for a re-run: a fitted grade stored with the entry is applied as it is,
        so a re-run gives the same pixels without fitting again."""
        preset = next((Path(p) for p in outputs if Path(p).suffix == ".json"), None)
        if self.mode not in ("reference", "pair") or preset is None or not preset.is_file():
            return self
        return replace(
            self,
            mode="preset",
            preset_path=str(preset),
            reference_path=None,
            before_path=None,
            after_path=None,
        )

    def flow_settings(self) -> FlowSettings:
        return FlowSettings(
            coupling_layers=self.coupling_layers,
            hidden=self.hidden,
            iterations=self.iterations,
            seed=self.seed,
        )


_NEEDED_PATHS = {
    "reference": ("reference_path",),
    "pair": ("before_path", "after_path"),
    "lut": ("lut_path",),
    "preset": ("preset_path",),
}


def _check_number(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EngineError(f"{name} must be a number, not {value!r}.")
    if not low <= value <= high:
        raise EngineError(f"{name} must be between {low:g} and {high:g}, not {value:g}.")


def _check_whole(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EngineError(f"{name} must be a whole number, not {value!r}.")
    if not low <= value <= high:
        raise EngineError(f"{name} must be between {low} and {high}, not {value}.")


@dataclass(frozen=True)
class FlowSettings:
    """How a flow grade is fitted; saved with it, so a preset says how it was made."""

    coupling_layers: int = DEFAULT_COUPLING_LAYERS
    hidden: int = DEFAULT_HIDDEN
    iterations: int = DEFAULT_ITERATIONS
    seed: int = 0
    bins: int = 8
    batch: int = 1024  # colours per step
    samples: int = 65_536  # colours drawn from each picture
    learning_rate: float = 1e-2


# --- Grades -------------------------------------------------------------------------------------


class Grade(ABC):
    """A colour grade: a map of sRGB colours that bakes into a 3D LUT.

    Subclasses map OKLab colours (`graded_oklab`); baking, applying and presets are shared.
    """

    kind: str  # "match" | "pair" | "cube"
    name: str

    @abstractmethod
    def graded_oklab(self, lab: Tensor, strength: float = 1.0) -> Tensor:
        """Colours (P, 3) in OKLab -> their graded colours, exactly (no LUT in between)."""

    @abstractmethod
    def inverted(self) -> Grade:
        """The grade that undoes this one."""

    @abstractmethod
    def _preset(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """(JSON-able description, tensors) for `save`."""

    def bake_lut(
        self, size: int = 33, strength: float = 1.0, preserve_luminance: bool = False
    ) -> np.ndarray:
        """The grade as a float32 table (size, size, size, 3) indexed [r, g, b] over sRGB.

        Computed on the CPU (a few tens of thousands of colours; the same table on every machine).
        """
        if not 2 <= size <= 256:
            raise EngineError(f"a LUT has 2 to 256 points per axis, not {size}.")
        if strength == 0:
            return identity_lut(size)
        grid = torch.from_numpy(identity_lut(size).reshape(-1, 3))
        lab = srgb_to_oklab(grid)
        with torch.no_grad(), _one_cpu_thread(lab.device):
            graded = self.graded_oklab(lab, strength)
        if preserve_luminance:
            graded = torch.cat([lab[:, :1], graded[:, 1:]], dim=-1)
        table = oklab_to_srgb(graded).clamp(0.0, 1.0)
        return table.reshape(size, size, size, 3).numpy()

    def apply(
        self,
        picture: Picture,
        *,
        strength: float = 1.0,
        preserve_luminance: bool = False,
        lut_size: int = 33,
        device: torch.device | None = None,
        interpolation: str = "trilinear",
    ) -> Picture:
        """`picture` graded through a baked LUT (see the module docstring for what is kept)."""
        table = self.bake_lut(lut_size, strength, preserve_luminance)
        return apply_table(picture, table, device=device, interpolation=interpolation)

    def export_cube(
        self,
        path: str | Path,
        size: int = 33,
        strength: float = 1.0,
        preserve_luminance: bool = False,
    ) -> Path:
        """Write the grade as an Adobe Cube 1.0 3D LUT (for Resolve, Premiere, Photoshop...)."""
        table = self.bake_lut(size, strength, preserve_luminance)
        return write_cube(path, CubeLUT(table, title=f"Studio {self.name}"))

    def save(self, path_stem: str | Path) -> tuple[Path, Path]:
        """Write the grade as `<stem>.safetensors` (weights) and `<stem>.json` (everything else)."""
        stem = Path(path_stem)
        if stem.suffix.lower() in (".json", ".safetensors"):
            stem = stem.with_suffix("")
        weights_path = stem.with_name(stem.name + ".safetensors")
        json_path = stem.with_name(stem.name + ".json")
        return self.save_to(weights_path, json_path)

    def save_to(self, weights_path: str | Path, json_path: str | Path) -> tuple[Path, Path]:
        """Write the grade to these two files (in one folder: the .json names its weights file).

        The .safetensors also carries the description in its metadata, so it is a whole preset
        on its own (what the history stores with an entry); the .json is there to be read.
        Each file is written under a temporary name beginning '.<its name>' and then renamed, so
        a reader never sees half a preset.
        """
        weights_path, json_path = Path(weights_path), Path(json_path)
        if weights_path.parent != json_path.parent:
            raise ValueError("a preset's .json and .safetensors must be in the same folder")
        description, tensors = self._preset()
        document = {
            "format": PRESET_FORMAT,
            "version": PRESET_VERSION,
            "kind": self.kind,
            "name": self.name,
            **description,
        }
        with _replacing(weights_path) as temporary:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                temporary,
                metadata={PRESET_METADATA_KEY: json.dumps(document, sort_keys=True)},
            )
        document["weights"] = weights_path.name
        document["weights_sha256"] = file_sha256(weights_path)
        with _replacing(json_path) as temporary:
            temporary.write_text(json.dumps(document, indent=2, sort_keys=True), encoding="utf-8")
        return weights_path, json_path

    @staticmethod
    def load(path: str | Path) -> Grade:
        """Read a grade written by `save`: pass its .json, its .safetensors or their common stem."""
        return _load_preset(Path(path))[0]


@dataclass(eq=False)
class FlowGrade(Grade):
    """A fitted flow grade.

    "match": a bank of two density flows on OKLab colours, [source, reference].
    "pair": one flow mapping sRGB values of the 'before' picture to those of the 'after'.
    """

    kind: str
    flow: ColourFlow
    settings: FlowSettings
    stats: dict[str, Any] = field(default_factory=dict)
    inverse: bool = False

    @property
    def name(self) -> str:
        return {"match": "flow match", "pair": "flow pair"}[self.kind] + (
            " (inverse)" if self.inverse else ""
        )

    @property
    def model(self) -> ColourFlow:  # what the model cache measures
        return self.flow

    def graded_oklab(self, lab: Tensor, strength: float = 1.0) -> Tensor:
        if strength == 0:
            return lab
        if self.kind == "pair":  # a map of sRGB values
            flow = self._member(0, lab)
            rgb = oklab_to_srgb_unclipped(lab)[None]
            mapped = flow.inverse(rgb)[0] if self.inverse else flow(rgb)[0][0]
            return torch.lerp(lab, srgb_to_oklab(mapped), strength)
        source, target = (self._member(m, lab) for m in ((1, 0) if self.inverse else (0, 1)))
        latent = source(lab[None])[0]
        if strength != 1:
            latent = torch.lerp(target(lab[None])[0], latent, strength)
        return target.inverse(latent)[0]

    def log_density_reference(self, lab: Tensor) -> Tensor:
        """Exact log-density (nats, per unit OKLab volume) of colours under the reference flow."""
        if self.kind != "match":
            raise EngineError(
                "the likelihood view needs a grade matched to a reference; "
                "a learnt before/after edit has no reference colours."
            )
        with torch.no_grad():
            return self._member(0 if self.inverse else 1, lab).log_prob(lab[None])[0]

    def _member(self, index: int, like: Tensor) -> ColourFlow:
        """One flow of the bank, on `like`'s device and in its precision (the fitted weights stay
        as they were trained, so a saved grade bakes the same LUT)."""
        return self.flow.member(index).to(device=like.device, dtype=like.dtype)

    def inverted(self) -> FlowGrade:
        return replace(self, inverse=not self.inverse)

    def _preset(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        description = {
            "settings": asdict(self.settings),
            "flow": {"members": self.flow.members, **self.flow.config},
            "stats": self.stats,
            "inverse": self.inverse,
        }
        return description, dict(self.flow.state_dict())


@dataclass(eq=False)
class CubeGrade(Grade):
    """A `.cube` LUT made elsewhere; strength blends it with the identity in OKLab."""

    lut: CubeLUT
    name: str = "cube"
    kind: str = "cube"

    def graded_oklab(self, lab: Tensor, strength: float = 1.0) -> Tensor:
        if strength == 0:
            return lab
        rgb = oklab_to_srgb(lab).cpu().numpy()
        looked_up = apply_lut(
            rgb, self.lut.table, domain_min=self.lut.domain_min, domain_max=self.lut.domain_max
        )
        graded = srgb_to_oklab(torch.from_numpy(looked_up).to(device=lab.device, dtype=lab.dtype))
        return torch.lerp(lab, graded, strength)

    def bake_lut(
        self, size: int = 33, strength: float = 1.0, preserve_luminance: bool = False
    ) -> np.ndarray:
        plain = self.lut.domain_min == (0.0, 0.0, 0.0) and self.lut.domain_max == (1.0, 1.0, 1.0)
        if plain and size == self.lut.size and strength == 1 and not preserve_luminance:
            return np.clip(self.lut.table, 0.0, 1.0)  # the file's own table, untouched
        return super().bake_lut(size, strength, preserve_luminance)

    def inverted(self) -> Grade:
        raise EngineError(f"{self.name} is a LUT made elsewhere; it has no exact inverse.")

    def _preset(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        description = {
            "cube": {
                "title": self.lut.title,
                "domain_min": list(self.lut.domain_min),
                "domain_max": list(self.lut.domain_max),
            }
        }
        return description, {"table": torch.from_numpy(np.asarray(self.lut.table))}


def apply_table(
    picture: Picture,
    table: np.ndarray,
    *,
    device: torch.device | None = None,
    interpolation: str = "trilinear",
) -> Picture:
    """`picture` through a LUT over sRGB: converted to sRGB first, alpha and metadata kept."""
    if interpolation not in INTERPOLATIONS:
        raise EngineError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}.")
    srgb = to_srgb(picture)
    pixels = srgb.pixels
    rgb = np.repeat(pixels[..., :1], 3, axis=-1) if srgb.channels == 1 else pixels[..., :3]
    graded = apply_lut(rgb, table, device=device, interpolation=interpolation)
    if srgb.has_alpha:
        graded = np.concatenate([graded, pixels[..., 3:]], axis=-1)
    icc_profile = srgb.icc_profile if srgb.channels >= 3 else None  # a grey profile no longer fits
    return replace(srgb, pixels=graded, icc_profile=icc_profile)


# --- Presets ------------------------------------------------------------------------------------


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path next to `path` that becomes `path` when the block succeeds."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _preset_json_path(path: Path) -> Path:
    if path.suffix.lower() in (".json", ".safetensors"):
        return path.with_suffix(".json")
    return path.with_name(path.name + ".json")


def preset_file(path: str | Path) -> Path:
    """The one file the preset at `path` (its .json, .safetensors or stem) is read from: the
    .safetensors when it carries the description (and is the file its .json names), else the
    .json (a preset saved before the weights carried it)."""
    return _resolve_preset(Path(path))[0]


def whole_preset_file(path: str | Path) -> Path | None:
    """The .safetensors that is the whole preset at `path`, or None for an older pair, which
    only works as two files side by side."""
    source, document = _resolve_preset(Path(path))
    return source if document is not None else None


def _resolve_preset(path: Path) -> tuple[Path, dict[str, Any] | None]:
    """(the file to read, its embedded description or None when it is a .json to read)."""
    suffix = path.suffix.lower()
    single = path if suffix == ".safetensors" else None
    if suffix not in (".json", ".safetensors"):  # a stem: its .safetensors may be the whole grade
        single = path.with_name(path.name + ".safetensors")
    if single is not None:
        document = _embedded_document(single)
        if document is not None:
            return single, document
    json_path = _preset_json_path(path)
    try:
        described = json.loads(json_path.read_text(encoding="utf-8"))
        weights = json_path.with_name(_plain_name(described["weights"]))
        named = described["weights_sha256"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError):
        return json_path, None  # reading it says what is wrong
    document = _embedded_document(weights)
    if document is None or file_sha256(weights) != named:
        return json_path, None
    return weights, document


def _plain_name(value: Any) -> str:
    """A file name with no folder in it (what a preset's .json may name beside itself)."""
    if not isinstance(value, str) or value in ("", ".", "..") or Path(value).name != value:
        raise ValueError(f"{value!r} is not a file name")
    return value


def _embedded_document(path: Path) -> dict[str, Any] | None:
    """The description a preset's .safetensors carries, or None (not one, unreadable, older)."""
    try:
        with safe_open(str(path), "pt") as handle:
            text = (handle.metadata() or {}).get(PRESET_METADATA_KEY)
        document = json.loads(text) if text else None
    except (OSError, SafetensorError, ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _load_preset(path: Path) -> tuple[Grade, Path]:
    """The grade, and the file it was read from (what a run records the sha256 of)."""
    source, document = _resolve_preset(path)
    if document is not None:
        _check_preset_document(document, source)
        return _grade_from_file(document, source, source), source
    json_path = source
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EngineError(
            f"no saved grade at {json_path}; choose the .json file a grade was saved as."
        ) from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EngineError(f"{json_path} is not a readable saved grade ({exc}).") from exc
    _check_preset_document(document, json_path)
    try:
        weights_path = json_path.with_name(_plain_name(document.get("weights")))
    except ValueError:
        raise EngineError(f"{json_path} does not name a weights file beside it.") from None
    if not weights_path.is_file():
        raise EngineError(f"the weights of {json_path} are missing (expected {weights_path}).")
    if file_sha256(weights_path) != document.get("weights_sha256"):
        raise EngineError(f"{weights_path} does not match {json_path}; save the grade again.")
    return _grade_from_file(document, weights_path, json_path), json_path


def _check_preset_document(document: Any, path: Path) -> None:
    if not isinstance(document, dict) or document.get("format") != PRESET_FORMAT:
        raise EngineError(f"{path} is not a Studio grade preset.")
    version = document.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise EngineError(f"{path} is not a Studio grade preset (its version is {version!r}).")
    if version > PRESET_VERSION:
        raise EngineError(f"{path} was saved by a newer Studio; update Studio to use it.")


def _grade_from_file(document: dict[str, Any], weights_path: Path, named: Path) -> Grade:
    try:
        tensors = load_file(weights_path)
        return _grade_from_document(document, tensors)
    except (SafetensorError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise EngineError(f"{named} is damaged and cannot be loaded ({exc}).") from exc


def _grade_from_document(document: dict[str, Any], tensors: dict[str, Tensor]) -> Grade:
    kind = document["kind"]
    if kind == "cube":
        cube = document["cube"]
        lut = CubeLUT(
            table=tensors["table"].numpy(),
            title=str(cube["title"]),
            domain_min=tuple(float(v) for v in cube["domain_min"]),
            domain_max=tuple(float(v) for v in cube["domain_max"]),
        )
        return CubeGrade(lut, name=str(document.get("name", "cube")))
    if kind not in ("match", "pair"):
        raise ValueError(f"unknown grade kind {kind!r}")
    flow = ColourFlow(**_checked_flow_config(document["flow"]))
    flow.load_state_dict(tensors, strict=True)
    flow.eval()
    settings = FlowSettings(**document["settings"])
    return FlowGrade(
        kind=kind,
        flow=flow,
        settings=settings,
        stats=dict(document.get("stats", {})),
        inverse=bool(document.get("inverse", False)),
    )


def _checked_flow_config(config: Any) -> dict[str, Any]:
    """A stored flow's shape, refused when no fit of Studio's could have made it (a file must
    not be able to ask for an enormous network)."""
    config = dict(config)
    bounds = {"members": (1, 4), "bins": (2, 64), **LIMITS}
    for name, value in config.items():
        if name in bounds:
            low, high = bounds[name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} {value!r} is outside {low}..{high}")
    return config


# --- Fitting ------------------------------------------------------------------------------------


def fit_match(
    source: Picture,
    reference: Picture,
    settings: FlowSettings = FlowSettings(),
    *,
    device: torch.device | None = None,
    progress: Progress = no_progress,
    cancelled: CancelCheck = never_cancelled,
) -> FlowGrade:
    """Fit a flow to the OKLab colours of `source` and one to those of `reference`, together.

    Both flows are triangular (lightness first, then a given lightness, then b given both), so the
    grade is a Knothe-Rosenblatt transport: lightness goes through a monotone tone curve, never
    reordered, which keeps textures intact; chroma follows the reference's at each lightness.
    The densities are fitted to colours blurred by `DENSITY_SMOOTHING`, which keeps the grade from
    stretching the slight colour noise of a flat sky into visible blotches.
    """
    device = device or torch.device("cpu")
    source = _colour_picture(
        source, "the photo to grade is greyscale; matching a reference needs a colour photo."
    )
    reference = _colour_picture(
        reference, "the reference is greyscale; a colour reference is needed to match colours."
    )
    rng = np.random.default_rng(settings.seed)
    colours = [
        srgb_to_oklab(_colours_at(picture, _sample_index(picture, settings.samples, rng), rng))
        for picture in (source, reference)
    ]
    data = torch.stack(colours).to(device)
    flow = _new_flow(2, "triangular", settings, device)
    flow.pre.set_standardise(data.mean(1), data.std(1))
    noise = torch.Generator(device=device).manual_seed(settings.seed)

    def loss(index: Tensor) -> Tensor:
        batch = data[:, index]
        blur = torch.randn(batch.shape, generator=noise, device=device) * DENSITY_SMOOTHING
        return -flow.log_prob(batch + blur).mean(1).sum()

    _train(
        flow, loss, settings, rng, data.shape[1], progress, cancelled, "source and reference flows"
    )
    with torch.no_grad(), _one_cpu_thread(device):
        sample = data[:, torch.from_numpy(rng.integers(0, data.shape[1], 8192)).to(device)]
        log_density = flow.log_prob(sample).cpu()
    quantiles = torch.quantile(log_density[1], torch.tensor([0.01, 0.05, 0.5]))
    stats = {
        "source_nll": round(-float(log_density[0].mean()), 4),
        "reference_nll": round(-float(log_density[1].mean()), 4),
        "reference_log_density_quantiles": [round(float(q), 4) for q in quantiles],
    }
    return FlowGrade("match", flow.eval(), settings, stats)


def fit_pair(
    before: Picture,
    after: Picture,
    settings: FlowSettings = FlowSettings(),
    *,
    device: torch.device | None = None,
    progress: Progress = no_progress,
    cancelled: CancelCheck = never_cancelled,
) -> FlowGrade:
    """Fit an invertible map from the colours of `before` to those of `after` (pixel-aligned).

    The map works on sRGB values with the "edit" layout: a curve per channel and a channel mix,
    then couplings for what depends on hue. Curves and mixes learnt from one photo apply to colours
    it does not contain, so the edit carries to other photos. The error is measured in OKLab.
    """
    device = device or torch.device("cpu")
    if (before.width, before.height) != (after.width, after.height):
        raise EngineError(
            f"the before and after pictures differ in size ({before.width}x{before.height} and "
            f"{after.width}x{after.height}); export both at the same size, uncropped."
        )
    before = _colour_picture(
        before, "the 'before' picture is greyscale; learning an edit needs colour pictures."
    )
    after = _colour_picture(
        after, "the 'after' picture is greyscale; Studio learns colour edits, not conversions."
    )
    _check_aligned(before, after)
    rng = np.random.default_rng(settings.seed)
    index = _sample_index(before, settings.samples, rng)
    inputs = _colours_at(before, index, rng).to(device)
    targets = _perceptual(_colours_at(after, index, rng)).to(device)
    flow = _new_flow(1, "edit", settings, device)
    # [0, 1] spans [-3, 3] of the splines' [-4, 4], so every curve covers the whole range
    middle, spread = torch.full((1, 3), 0.5), torch.full((1, 3), 1 / 6)
    flow.pre.set_standardise(middle, spread)
    flow.post.set_destandardise(middle, spread)

    def loss(index: Tensor) -> Tensor:
        mapped, _ = flow(inputs[index][None])
        return ((_perceptual(mapped[0]) - targets[index]) / OKLAB_JND).square().sum(-1).mean()

    _train(
        flow, loss, settings, rng, inputs.shape[0], progress, cancelled, "the before → after flow"
    )
    with torch.no_grad(), _one_cpu_thread(device):
        mapped, _ = flow(inputs[None])
        error = srgb_to_oklab(mapped[0]) - srgb_to_oklab(_colours_at(after, index, rng).to(device))
    stats = {"oklab_rms_error": round(float(error.square().sum(-1).mean().sqrt()), 5)}
    return FlowGrade("pair", flow.eval(), settings, stats)


def _perceptual(rgb: Tensor) -> Tensor:
    """OKLab for a loss: the cube root softened near zero, so its gradient stays finite at black."""
    lms = linear_to_lms(srgb_to_linear(rgb))
    root = ((lms.abs() + 1e-4).pow(1 / 3) - 1e-4 ** (1 / 3)).copysign(lms)
    return lms_root_to_oklab(root)


def _new_flow(
    members: int, layout: str, settings: FlowSettings, device: torch.device
) -> ColourFlow:
    """A flow whose initial weights depend only on the seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        flow = ColourFlow(
            members=members,
            coupling_layers=settings.coupling_layers,
            hidden=settings.hidden,
            bins=settings.bins,
            layout=layout,
        )
    return flow.to(device)


def _train(
    flow: ColourFlow,
    loss_of: Callable[[Tensor], Tensor],
    settings: FlowSettings,
    rng: np.random.Generator,
    count: int,
    progress: Progress,
    cancelled: CancelCheck,
    what: str,
) -> None:
    """Adam with a cosine learning-rate decay; reports progress and polls cancel as it goes."""
    device = next(flow.parameters()).device
    flow.train()
    optimiser = torch.optim.Adam(flow.parameters(), lr=settings.learning_rate)
    total = settings.iterations
    with _one_cpu_thread(device):
        for step in range(total):
            decay = 0.5 * (1 + math.cos(math.pi * step / total))
            for group in optimiser.param_groups:
                group["lr"] = settings.learning_rate * (0.02 + 0.98 * decay)
            index = torch.from_numpy(rng.integers(0, count, settings.batch)).to(device)
            loss = loss_of(index)
            if step % PROGRESS_EVERY == 0:
                if cancelled():
                    raise Cancelled
                if not math.isfinite(loss.item()):
                    raise EngineError(
                        "fitting the colour flows diverged; try another seed or fewer layers."
                    )
                progress(FIT_SHARE * step / total, f"Fitting {what} {step}/{total}")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(flow.parameters(), 10.0)
            optimiser.step()
    progress(FIT_SHARE, f"Fitted {what}")


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Fit on one CPU thread: a flow step is hundreds of tiny operations, which threads barely
    speed up on a quiet machine and slow down tenfold when other programs hold the cores."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _colour_picture(picture: Picture, problem: str) -> Picture:
    """`picture` in sRGB; a grey one is refused with `problem` (there is no colour to learn)."""
    converted = to_srgb(picture)
    if is_grey(converted.pixels):
        raise EngineError(f"{problem} Choose a colour image.")
    return converted


def _sample_index(picture: Picture, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random pixel indices (flattened), among pixels more than half opaque."""
    if not picture.has_alpha:
        return rng.integers(0, picture.width * picture.height, count)
    visible = np.flatnonzero(picture.pixels[..., 3].ravel() > 0.5)
    if visible.size < 16:
        raise EngineError("the picture is (almost) fully transparent; it has no colours to use.")
    return visible[rng.integers(0, visible.size, count)]


def _colours_at(picture: Picture, index: np.ndarray, rng: np.random.Generator) -> Tensor:
    """sRGB colours (N, 3) of the pixels at `index`, dequantised: uniform noise of one code step."""
    rows = picture.pixels.reshape(-1, picture.channels)[index, :3]
    if rows.shape[1] == 1:
        rows = np.repeat(rows, 3, axis=1)
    step = 1.0 / (2 ** min(picture.bit_depth, 16) - 1)
    noise = rng.uniform(-0.5 * step, 0.5 * step, rows.shape).astype(np.float32)
    return torch.from_numpy(np.clip(rows + noise, 0.0, 1.0))


def _check_aligned(before: Picture, after: Picture) -> None:
    """Refuse a 'pair' of different photos: the edges of an edited photo stay where they were."""
    edges = [_edge_map(p.pixels[..., :3]) for p in (before, after)]
    a, b = (e - e.mean() for e in edges)
    correlation = float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-12))
    if correlation < _PAIR_MIN_EDGE_CORRELATION:
        raise EngineError(
            "the before and after pictures do not look like the same photo (their edges are in "
            "different places); choose the original and its edited version, uncropped."
        )


def _edge_map(rgb: np.ndarray, side: int = 128) -> np.ndarray:
    luma = rgb @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    step = max(1, max(luma.shape) // side)
    small = luma[: luma.shape[0] // step * step, : luma.shape[1] // step * step]
    small = small.reshape(small.shape[0] // step, step, small.shape[1] // step, step).mean((1, 3))
    return np.hypot(np.diff(small, axis=0)[:, :-1], np.diff(small, axis=1)[:-1, :])


# --- Running a request --------------------------------------------------------------------------


@dataclass
class GradeResult:
    picture: Picture
    grade: Grade
    lut: np.ndarray  # the baked table (N, N, N, 3) that made `picture`
    seconds_fit: float
    seconds_apply: float
    device: str
    request: GradeRequest | None = None
    model_sha256: str | None = None

    @property
    def pictures(self) -> list[Picture]:
        return [self.picture]

    def write_extras(self, next_output: Callable[[str], Path]) -> None:
        """Keep the grade beside the picture: its LUT (.cube) and a preset (.safetensors, .json)
        that applies it again without fitting. `next_output(suffix)` names each file."""
        write_cube(next_output(".cube"), CubeLUT(self.lut, title=f"Studio {self.grade.name}"))
        weights = next_output(".safetensors")
        self.grade.save_to(weights, next_output(".json"))

    @property
    def facts(self) -> RunFacts:
        extra: dict[str, Any] = {
            "kind": self.grade.kind,
            "lut_size": int(self.lut.shape[0]),
            "seconds_fit": round(self.seconds_fit, 3),
            "seconds_apply": round(self.seconds_apply, 3),
        }
        seed = None
        if isinstance(self.grade, FlowGrade):
            seed = self.grade.settings.seed
            extra["iterations"] = self.grade.settings.iterations
            extra.update(self.grade.stats)
        if self.request is not None:
            extra["strength"] = self.request.strength
            extra["preserve_luminance"] = self.request.preserve_luminance
        return RunFacts(
            model_name=self.grade.name,
            model_sha256=self.model_sha256,
            seed=seed,
            device=self.device,
            dtype="fp32",
            extra=extra,
        )


def run(
    request: GradeRequest,
    *,
    progress: Progress = no_progress,
    cancelled: CancelCheck = never_cancelled,
    cache: ModelCache | None = None,
) -> GradeResult:
    """Grade `request.input_path`; the caller saves `result.picture` (and `result.grade`)."""
    device = _resolve_device(request.device)
    picture = load_picture(request.input_path)
    started = time.perf_counter()
    grade, sha256 = _grade_for(request, picture, device, progress, cancelled, cache)
    fitted = time.perf_counter()
    if cancelled():
        raise Cancelled
    progress(FIT_SHARE, "Baking the LUT")
    table = grade.bake_lut(request.lut_size, request.strength, request.preserve_luminance)
    if cancelled():
        raise Cancelled
    progress(0.9, "Applying the grade")
    graded = apply_table(picture, table, device=device, interpolation=request.interpolation)
    return GradeResult(
        picture=graded,
        grade=grade,
        lut=table,
        seconds_fit=fitted - started,
        seconds_apply=time.perf_counter() - fitted,
        device=str(device),
        request=request,
        model_sha256=sha256,
    )


def fit_grade(
    request: GradeRequest,
    *,
    progress: Progress = no_progress,
    cancelled: CancelCheck = never_cancelled,
    device: torch.device | None = None,
) -> Grade:
    """The grade a request describes: fitted ("reference", "pair") or read ("lut", "preset")."""
    device = device or _resolve_device(request.device)
    source = load_picture(request.input_path) if request.mode == "reference" else None
    grade, _ = _grade_for(request, source, device, progress, cancelled, None)
    return grade


def _grade_for(
    request: GradeRequest,
    source: Picture | None,
    device: torch.device,
    progress: Progress,
    cancelled: CancelCheck,
    cache: ModelCache | None,
) -> tuple[Grade, str | None]:
    """(grade, sha256 of the file it was read from, if it was read)."""
    if request.mode == "lut":
        assert request.lut_path
        lut = read_cube(request.lut_path)
        # named by its TITLE (the file's stem when it has none): a re-run reads a stored copy
        name = lut.title or Path(request.lut_path).name
        return CubeGrade(lut, name=name), file_sha256(request.lut_path)
    if request.mode == "preset":
        assert request.preset_path
        grade, source = _load_preset(Path(request.preset_path))  # resolved once, hashed once
        return grade, file_sha256(source)
    settings = request.flow_settings()

    def fit() -> Grade:
        if request.mode == "reference":
            assert source is not None and request.reference_path
            reference = load_picture(request.reference_path)
            return fit_match(
                source, reference, settings, device=device, progress=progress, cancelled=cancelled
            )
        assert request.before_path and request.after_path
        before = load_picture(request.before_path)
        after = load_picture(request.after_path)
        return fit_pair(
            before, after, settings, device=device, progress=progress, cancelled=cancelled
        )

    if cache is None:
        return fit(), None
    key = ModelKey(_fit_key(request), str(device), "fp32")
    with cache.use(key, fit) as grade:
        return grade, None


def _fit_key(request: GradeRequest) -> str:
    """What a fitted grade depends on: the mode, the pictures' contents and the flow settings."""
    if request.mode == "reference":
        assert request.reference_path
        files = [request.input_path, request.reference_path]
    else:
        assert request.before_path and request.after_path
        files = [request.before_path, request.after_path]
    document = {
        "mode": request.mode,
        "files": [file_sha256(path) for path in files],
        "settings": asdict(request.flow_settings()),
    }
    return "grade:" + hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


# --- Likelihood view ----------------------------------------------------------------------------


def likelihood_map(source: Picture, grade: Grade) -> np.ndarray:
    """Per-pixel exact log-density (nats) of the source's colours under the reference's flow.

    Low values mark colours the reference does not contain. Each distinct 8-bit colour is
    evaluated once (16-bit colours are rounded to 8 bits for this view), so a 12-megapixel photo
    costs as many flow evaluations as it has distinct colours.
    """
    if not isinstance(grade, FlowGrade):
        raise EngineError("the likelihood view needs a fitted flow grade, not a LUT file.")
    srgb = to_srgb(source)
    pixels = srgb.pixels
    rgb = np.repeat(pixels[..., :1], 3, axis=-1) if srgb.channels == 1 else pixels[..., :3]
    codes8 = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint32)
    codes = (codes8[..., 0] << 16) | (codes8[..., 1] << 8) | codes8[..., 2]
    present = np.zeros(1 << 24, dtype=bool)
    present[codes.ravel()] = True
    distinct = np.flatnonzero(present).astype(np.uint32)
    colours = np.stack([(distinct >> 16) & 255, (distinct >> 8) & 255, distinct & 255], axis=-1)
    device = next(grade.flow.parameters()).device
    lab = srgb_to_oklab(torch.from_numpy(colours.astype(np.float32) / 255).to(device))
    with _one_cpu_thread(device):
        values = [grade.log_density_reference(chunk).cpu() for chunk in lab.split(1 << 18)]
    lookup = np.zeros(1 << 24, dtype=np.float32)
    lookup[distinct] = torch.cat(values).numpy()
    return lookup[codes]


# inferno-like ramp: cool (colours the reference has) to hot (colours it lacks)
_HEAT_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_HEAT_COLOURS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)


def likelihood_preview(log_density: np.ndarray, grade: FlowGrade) -> np.ndarray:
    """A heat map (H, W, 3) uint8 of `likelihood_map`: bright where the reference lacks a colour.

    0 (dark) is as likely as the reference's median colour or more; 1 (bright) is as unlikely as
    its rarest 1%, or less.
    """
    low, _, median = grade.stats.get("reference_log_density_quantiles", [-10.0, -5.0, 0.0])
    rarity = np.clip((median - log_density) / max(median - low, 1e-6), 0.0, 1.0)
    channels = [np.interp(rarity, _HEAT_STOPS, _HEAT_COLOURS[:, c]) for c in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)
