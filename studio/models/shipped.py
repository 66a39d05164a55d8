"""The models Studio ships inside the package, so a fresh install upscales and restores offline.

The upscalers are compact Real-ESRGAN-family networks (SRVGGNetCompact) trained by
`studio.train.upscale`; the restorer is Studio's restoration VAE trained by `studio.train.restore`.
They are stored as safetensors in `studio/assets/models`, each with a Markdown model card beside
it. They are ordinary model files: the tabs and the CLI load them through `studio.models.upscalers`
exactly like a downloaded Real-ESRGAN or SCUNet file.

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
# The restoration models (scale 1); every other shipped file is an upscaler.
DEFAULT_RESTORER = "studio-restore-vae.safetensors"
RESTORERS = (DEFAULT_RESTORER,)


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
    files = [path for path in files if path.name not in RESTORERS]
    defaults = [folder / DEFAULT_UPSCALERS[s] for s in sorted(DEFAULT_UPSCALERS, reverse=True)]
    first = [path for path in defaults if path in files]
    return first + [path for path in files if path not in first]


def default_restorer() -> Path:
    """The restoration VAE Studio uses when no restoration model is chosen."""
    path = models_folder() / DEFAULT_RESTORER
    if not path.is_file():
        raise MissingShippedModel(
            f"Studio's built-in restoration model {DEFAULT_RESTORER} is missing from "
            f"{path.parent}; reinstall Studio, or choose a model file."
        )
    return path


def shipped_restorers() -> list[Path]:
    """Every shipped restoration model file, the default first."""
    folder = models_folder()
    return [folder / name for name in RESTORERS if (folder / name).is_file()]
