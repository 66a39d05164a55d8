"""User settings, persisted as a versioned JSON file under the user config directory.

A damaged or foreign settings file never stops Studio from starting: it is set aside and the
defaults are used, and the reason is logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from studio.paths import user_dirs

log = logging.getLogger(__name__)

SETTINGS_VERSION = 1
DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp16", "bf16", "fp32")
OUTPUT_FORMATS = ("png", "jpeg", "webp", "tiff")
DIFFUSION_MEMORY_MODES = ("auto", "off", "balanced", "low")  # studio.models.diffusion.MEMORY_MODES


@dataclass(frozen=True)
class Settings:
    device: str = "auto"
    precision: str = "auto"
    tile_size: int = 0  # 0: chosen from free memory at run time
    output_format: str = "png"
    jpeg_quality: int = 95
    upscale_model: str = ""  # the model file last used in the Upscale tab
    recent_models: tuple[str, ...] = ()  # model files the user picked, newest first
    diffusion_model: str = ""  # repo id, folder or checkpoint last used by Generate / Inpaint
    recent_diffusion_models: tuple[str, ...] = ()  # newest first
    # GPU memory savers: auto (by free VRAM), off, balanced (attention slicing + VAE tiling),
    # low (balanced + model CPU offload)
    diffusion_memory: str = "auto"

    def validated(self) -> Settings:
        """Reset out-of-range values to their defaults: a hand-edited file cannot break a run."""
        defaults = Settings()
        fixes = {}
        if self.device not in DEVICES:
            fixes["device"] = defaults.device
        if self.precision not in PRECISIONS:
            fixes["precision"] = defaults.precision
        if self.output_format not in OUTPUT_FORMATS:
            fixes["output_format"] = defaults.output_format
        tile = self.tile_size
        if not isinstance(tile, int) or not (tile == 0 or 32 <= tile <= 4096):
            fixes["tile_size"] = defaults.tile_size
        if not isinstance(self.jpeg_quality, int) or not 1 <= self.jpeg_quality <= 100:
            fixes["jpeg_quality"] = defaults.jpeg_quality
        if not isinstance(self.upscale_model, str):
            fixes["upscale_model"] = defaults.upscale_model
        for name in ("recent_models", "recent_diffusion_models"):
            recent = getattr(self, name)
            if not isinstance(recent, (list, tuple)) or not all(isinstance(m, str) for m in recent):
                fixes[name] = getattr(defaults, name)
        if not isinstance(self.diffusion_model, str):
            fixes["diffusion_model"] = defaults.diffusion_model
        if self.diffusion_memory not in DIFFUSION_MEMORY_MODES:
            fixes["diffusion_memory"] = defaults.diffusion_memory
        for name, value in fixes.items():
            log.warning("setting %s=%r is not valid; using %r", name, getattr(self, name), value)
        return replace(self, **fixes)


def with_recent_model(settings: Settings, path: str, keep: int = 12) -> Settings:
    """Put `path` first in the recent models and remember it as the Upscale tab's choice."""
    return replace(with_recent_file(settings, path, keep), upscale_model=path)


def with_recent_file(settings: Settings, path: str, keep: int = 12) -> Settings:
    """Put `path` first in the recent model files (built-in models are always listed anyway)."""
    from studio.models.shipped import models_folder

    if Path(path).parent == models_folder():
        return settings
    recent = (path, *(m for m in settings.recent_models if m != path))[:keep]
    return replace(settings, recent_models=recent)


def with_recent_diffusion_model(settings: Settings, reference: str, keep: int = 12) -> Settings:
    """Put `reference` first in the recent diffusion models; Generate and Inpaint start with it."""
    recent = (reference, *(m for m in settings.recent_diffusion_models if m != reference))[:keep]
    return replace(settings, recent_diffusion_models=recent, diffusion_model=reference)


def settings_path() -> Path:
    return user_dirs().config / "settings.json"


def load_settings(path: Path | None = None) -> Settings:
    path = path or settings_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Settings()
    except (OSError, ValueError) as exc:
        _set_aside(path, f"unreadable ({exc})")
        return Settings()
    version = data.get("version") if isinstance(data, dict) else None
    if version != SETTINGS_VERSION:
        _set_aside(path, f"of unknown version {version!r}")
        return Settings()
    known = {f.name for f in fields(Settings)}
    stored = data.get("settings")
    values = {k: v for k, v in stored.items() if k in known} if isinstance(stored, dict) else {}
    for name in ("recent_models", "recent_diffusion_models"):
        if isinstance(values.get(name), list):
            values[name] = tuple(values[name])
    return Settings(**values).validated()


def save_settings(settings: Settings, path: Path | None = None) -> None:
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    payload = {"version": SETTINGS_VERSION, "settings": asdict(settings)}
    tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _set_aside(path: Path, reason: str) -> None:
    backup = path.with_name(path.name + ".bad")
    log.warning("settings file %s is %s; kept as %s, using defaults", path, reason, backup)
    with contextlib.suppress(OSError):
        os.replace(path, backup)
