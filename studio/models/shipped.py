"""The upscalers Studio ships inside the package, so a fresh install upscales with no network.

They are compact Real-ESRGAN-family networks (SRVGGNetCompact) trained by `studio.train.upscale`
and stored as fp16 safetensors in `studio/assets/models`, each with a Markdown model card beside
it. They are ordinary model files: the Upscale tab and `studio upscale` load them through
`studio.models.upscalers` exactly like a downloaded Real-ESRGAN file.

They live inside the package (not in the repository's top-level `assets/`) so that every kind of
install finds them with `importlib.resources`: an editable checkout reads the source folder, a
wheel carries them as package data.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from studio.errors import UserError

# The default upscaler of each scale: the sharper GAN-stage model where it measured better.
DEFAULT_UPSCALERS = {
    4: "studio-compact-x4.safetensors",
    2: "studio-compact-x2.safetensors",
}


class MissingShippedModel(UserError):
    """A model that should come with Studio is not where the installation put it."""


def models_folder() -> Path:
    """The folder of shipped model files (and their cards)."""
    return Path(str(resources.files("studio") / "assets" / "models"))


def default_upscaler(scale: int = 4) -> Path:
    """The shipped upscaler Studio uses when none is chosen, for `scale` (2 or 4)."""
    name = DEFAULT_UPSCALERS.get(scale)
    if name is None:
        shipped = ", ".join(f"x{s}" for s in sorted(DEFAULT_UPSCALERS))
        raise MissingShippedModel(
            f"Studio ships {shipped} upscalers, not x{scale}; choose a model file for x{scale}, "
            "or upscale with a shipped one and set the output scale."
        )
    path = models_folder() / name
    if not path.is_file():
        raise MissingShippedModel(
            f"Studio's built-in upscaler {name} is missing from {path.parent}; "
            "reinstall Studio, or choose a model file."
        )
    return path


def shipped_upscalers() -> list[Path]:
    """Every shipped upscaler file, defaults first (by scale, largest first), then by name."""
    folder = models_folder()
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    defaults = [folder / DEFAULT_UPSCALERS[s] for s in sorted(DEFAULT_UPSCALERS, reverse=True)]
    first = [path for path in defaults if path in files]
    return first + [path for path in files if path not in first]
