"""Diffusion models: where one comes from, which family it is, and loading it as a pipeline.

A model reference is a Hugging Face repo id (kept in the standard Hugging Face cache, shared with
other tools), a local diffusers folder, or a single-file `.safetensors` / `.ckpt` checkpoint. The
family (SD 1.x, SD 2.x, SDXL; Turbo/Lightning/LCM variants; 9-channel inpainting) decides the native
resolution, defaults and schedulers the UI offers. A single file carries only weights: diffusers
configures it from the family's configuration files, which live in the Hugging Face cache under the
repo id diffusers assigns to that family; Studio looks there offline first and fetches the few
hundred kilobytes once when missing.

torch and diffusers are imported inside functions: this module is read when the window opens.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.errors import UserError
from studio.progress import CancelCheck, Progress, never_cancelled, no_progress

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MEMORY_MODES = ("auto", "off", "balanced", "low")  # low adds model CPU offload to balanced


class DiffusionModelError(UserError):
    """A model Studio cannot use; the message says why and what to pick instead."""


# --- where a model comes from ---------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "repo" | "folder" | "file"
    location: str  # repo id, or an absolute path

    @property
    def name(self) -> str:
        return self.location if self.kind == "repo" else Path(self.location).stem


def resolve_source(reference: str) -> ModelSource:
    """Tell a repo id, a diffusers folder and a checkpoint file apart; refuse anything else."""
    text = (reference or "").strip()
    if not text:
        raise DiffusionModelError(
            "no diffusion model chosen: pick a local model (a diffusers folder or a .safetensors "
            "checkpoint) or download one of the suggested models."
        )
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise DiffusionModelError(
                f"{path} is not a diffusers model folder (it has no model_index.json). Choose the "
                "folder that contains model_index.json, or a single .safetensors checkpoint."
            )
        return ModelSource("folder", str(path.resolve()))
    if path.is_file():
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise DiffusionModelError(
                f"{path.name} is not a diffusion checkpoint: choose a .safetensors or .ckpt file, "
                "or a diffusers folder."
            )
        return ModelSource("file", str(path.resolve()))
    if REPO_ID.match(text) and not path.is_absolute() and not text.startswith("."):
        return ModelSource("repo", text)
    raise DiffusionModelError(f"{text} does not exist (and is not a Hugging Face repo id).")


# --- families -------------------------------------------------------------------------------------

# Latent-to-RGB approximations (ComfyUI's latent_formats): a preview for each step costs one 4x3
# matrix product on the latents instead of a VAE decode.
_SD_PREVIEW = (
    (
        (0.3512, 0.2297, 0.3227),
        (0.3250, 0.4974, 0.2350),
        (-0.2829, 0.1762, 0.2721),
        (-0.2120, -0.2616, -0.7177),
    ),
    (0.0, 0.0, 0.0),
)
_SDXL_PREVIEW = (
    (
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    (0.1084, -0.0175, -0.0011),
)
_ASPECTS = ((1, 1), (4, 3), (3, 4), (3, 2), (2, 3), (16, 9), (9, 16))
ALL_SCHEDULERS = ("euler", "euler_a", "dpmpp_2m_karras", "dpmpp_2m", "ddim", "unipc")
DISTILLED_VARIANTS = ("turbo", "lightning", "lcm")
_TITLES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}


@dataclass(frozen=True)
class Family:
    """What the UI adapts to: native size, defaults, schedulers, preview factors."""

    name: str  # sd1 | sd2 | sdxl
    variant: str = "base"  # base | turbo | lightning | lcm
    inpainting: bool = False
    native: int = 512  # side of the square the model was trained at

    @property
    def title(self) -> str:
        extra = "" if self.variant == "base" else f" {self.variant.capitalize()}"
        return _TITLES[self.name] + extra + (" inpainting" if self.inpainting else "")

    @property
    def distilled(self) -> bool:
        return self.variant in DISTILLED_VARIANTS

    @property
    def default_steps(self) -> int:
        if self.variant == "turbo":
            return 1 if not self.inpainting else 2
        if self.distilled:
            return 4
        return 30 if self.name == "sdxl" else 25

    @property
    def default_guidance(self) -> float:
        if self.variant == "turbo" or self.variant == "lightning":
            return 0.0
        if self.variant == "lcm":
            return 1.5
        return 6.0 if self.name == "sdxl" else 7.0

    @property
    def default_scheduler(self) -> str:
        if self.variant == "lcm":
            return "lcm"
        return "euler" if self.distilled else "dpmpp_2m_karras"

    @property
    def schedulers(self) -> tuple[str, ...]:
        return (*ALL_SCHEDULERS, "lcm") if self.distilled else ALL_SCHEDULERS

    @property
    def size_presets(self) -> list[tuple[int, int]]:
        """Sizes near the native pixel count at common aspect ratios, multiples of 8 (64 for SD)."""
        area = self.native * self.native
        step = 64 if self.native >= 512 else 8
        presets = []
        for a, b in _ASPECTS:
            width = max(step, round((area * a / b) ** 0.5 / step) * step)
            height = max(step, round((area * b / a) ** 0.5 / step) * step)
            presets.append((width, height))
        return presets

    @property
    def preview_factors(self) -> tuple[tuple[tuple[float, ...], ...], tuple[float, ...]]:
        return _SDXL_PREVIEW if self.name == "sdxl" else _SD_PREVIEW


def _variant_from_name(name: str) -> str:
    lowered = name.lower()
    for variant in DISTILLED_VARIANTS:
        if variant in lowered:
            return variant
    return "base"


def family_of_folder(
    folder: Path, *, name_hint: str = "", in_channels: int | None = None
) -> Family:
    """Read a diffusers folder's configuration (no weights) to tell its family."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
        unet = json.loads((folder / "unet" / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise DiffusionModelError(
            f"{folder} is not a complete diffusers model ({exc}); it needs model_index.json, "
            "unet/config.json and vae/config.json."
        ) from exc
    class_name = str(index.get("_class_name", ""))
    if "StableDiffusion" not in class_name:
        raise DiffusionModelError(
            f"{folder.name} is a {class_name or 'unknown'} model; Studio runs Stable Diffusion "
            "1.x, 2.x and SDXL models (and their Turbo, Lightning and LCM variants)."
        )
    if "XL" in class_name:
        name = "sdxl"
    elif unet.get("cross_attention_dim") == 1024:
        name = "sd2"
    else:
        name = "sd1"
    scale = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
    sample = unet.get("sample_size", 64)
    native = int(sample if isinstance(sample, int) else sample[0]) * scale
    scheduler = {}
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    if scheduler_file.is_file():
        scheduler = json.loads(scheduler_file.read_text())
    variant = _variant_from_name(name_hint or folder.name)
    if variant == "base" and scheduler.get("_class_name") == "LCMScheduler":
        variant = "lcm"
    channels = in_channels if in_channels is not None else unet.get("in_channels", 4)
    return Family(name=name, variant=variant, inpainting=channels == 9, native=native)


# diffusers' names for single-file checkpoint types, and our family for each
_SINGLE_FILE_TYPES = {
    "v1": "sd1",
    "inpainting": "sd1",
    "v2": "sd2",
    "inpainting_v2": "sd2",
    "xl_base": "sdxl",
    "xl_inpaint": "sdxl",
}


def checkpoint_layout(path: Path) -> dict[str, Any]:
    """Names and shapes of a checkpoint's tensors, as meta tensors: no weights are read.

    A pickled `.ckpt` is opened with `weights_only=True` (no code runs) and memory-mapped.
    """
    import torch

    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                return {
                    key: torch.empty(handle.get_slice(key).get_shape(), device="meta")
                    for key in handle.keys()  # noqa: SIM118 (safe_open is not a dict)
                }
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # the pre-2020 (non-zip) format cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DiffusionModelError(
            f"{path.name} cannot be read as a checkpoint ({type(exc).__name__}: {exc}). It may be "
            "incomplete or damaged: download it again."
        ) from exc
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise DiffusionModelError(f"{path.name} holds no weights Studio recognises.")
    return {
        key: torch.empty(value.shape, device="meta")
        for key, value in state.items()
        if isinstance(value, torch.Tensor)
    }


def single_file_type(layout: dict[str, Any], path: Path) -> str:
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    if not any(key.startswith("model.diffusion_model.") for key in layout):
        raise DiffusionModelError(
            f"{path.name} is not a Stable Diffusion checkpoint (it has no UNet weights); an "
            "upscaler or restoration model belongs in the Upscale or Restore tab."
        )
    model_type = infer_diffusers_model_type(layout)
    if model_type not in _SINGLE_FILE_TYPES:
        raise DiffusionModelError(
            f"{path.name} looks like a {model_type} checkpoint; Studio runs Stable Diffusion 1.x, "
            "2.x and SDXL checkpoints."
        )
    return model_type


def config_repo_for(model_type: str) -> str:
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS

    return DIFFUSERS_DEFAULT_PIPELINE_PATHS[model_type]["pretrained_model_name_or_path"]


# --- a resolved model: where its files are and what it is -----------------------------------------


@dataclass(frozen=True)
class ResolvedModel:
    source: ModelSource
    family: Family
    folder: Path  # diffusers folder (a snapshot for repos, the config folder for single files)
    model_type: str | None = None  # single files: diffusers' checkpoint type

    @property
    def name(self) -> str:
        return self.source.name


def resolve_model(
    reference: str,
    *,
    progress: Progress = no_progress,
    cancelled: CancelCheck = never_cancelled,
) -> ResolvedModel:
    """Find a model's files (downloading a repo or a family configuration on first use)."""
    source = resolve_source(reference)
    if source.kind == "folder":
        folder = Path(source.location)
        return ResolvedModel(source, family_of_folder(folder), folder)
    if source.kind == "repo":
        folder = _repo_snapshot(source.location, progress=progress, cancelled=cancelled)
        return ResolvedModel(source, family_of_folder(folder, name_hint=source.location), folder)
    path = Path(source.location)
    model_type, in_channels = _checkpoint_facts(path)
    folder = _family_config(config_repo_for(model_type), progress=progress, cancelled=cancelled)
    family = family_of_folder(folder, name_hint=path.name, in_channels=in_channels)
    return ResolvedModel(source, family, folder, model_type)


# Native sides of single-file checkpoint types, before their family's configuration is at hand
_GUESSED_NATIVE = {"v1": 512, "inpainting": 512, "v2": 768, "inpainting_v2": 512}


def peek_family(reference: str) -> tuple[Family | None, str | None]:
    """The family as far as the files on this computer tell, downloading nothing (the model
    pickers ask on every choice): None for a repo not downloaded yet, and for a checkpoint whose
    family configuration is not cached, a guess from its tensor names. The note, if any, says
    what the first run will download."""
    from studio.models import hub

    source = resolve_source(reference)
    if source.kind == "repo":
        snapshot = hub.cached_repo(source.location)
        if snapshot is None:
            return None, (
                f"{source.location} is not downloaded yet: it downloads into the Hugging Face "
                "cache on the first run."
            )
        return family_of_folder(snapshot, name_hint=source.location), None
    if source.kind == "folder":
        return family_of_folder(Path(source.location)), None
    path = Path(source.location)
    model_type, in_channels = _checkpoint_facts(path)
    config = _cached_config(config_repo_for(model_type))
    if config is not None:
        return family_of_folder(config, name_hint=path.name, in_channels=in_channels), None
    family = Family(
        name=_SINGLE_FILE_TYPES[model_type],
        variant=_variant_from_name(path.name),
        inpainting=in_channels == 9,
        native=_GUESSED_NATIVE.get(model_type, 1024),
    )
    return family, "its family's configuration files (under 2 MB) download on the first run"


def _checkpoint_facts(path: Path) -> tuple[str, int]:
    """diffusers' type of a single-file checkpoint and its UNet's input channels (9: inpainting)."""
    layout = checkpoint_layout(path)
    model_type = single_file_type(layout, path)
    return model_type, int(layout["model.diffusion_model.input_blocks.0.0.weight"].shape[1])


def _repo_snapshot(repo_id: str, *, progress: Progress, cancelled: CancelCheck) -> Path:
    """The repo's complete snapshot in the Hugging Face cache, downloaded on first use."""
    from studio.models import hub

    cached = hub.cached_repo(repo_id)
    if cached is not None:
        return cached
    return hub.fetch_repo(repo_id, progress=progress, cancelled=cancelled)


CONFIG_PATTERNS = ["*.json", "**/*.json", "*.txt", "**/*.txt"]


def _family_config(repo_id: str, *, progress: Progress, cancelled: CancelCheck) -> Path:
    from studio.models import hub

    cached = _cached_config(repo_id)
    if cached is not None:
        return cached
    try:
        return hub.fetch_repo(
            repo_id, allow_patterns=CONFIG_PATTERNS, progress=progress, cancelled=cancelled
        )
    except UserError as exc:
        raise DiffusionModelError(
            f"a single-file checkpoint needs its family's configuration files (under 2 MB, from "
            f"the Hugging Face repo {repo_id}) once, and they are not on this computer yet: "
            f"{exc} Connect to the internet and run it again, or use a diffusers folder."
        ) from exc


def _cached_config(repo_id: str) -> Path | None:
    """The family's configuration in the Hugging Face cache (with or without its weights)."""
    from huggingface_hub import snapshot_download

    from studio.models.hub import hub_cache_dir

    try:
        folder = Path(
            snapshot_download(
                repo_id,
                allow_patterns=CONFIG_PATTERNS,
                cache_dir=str(hub_cache_dir()),
                local_files_only=True,
            )
        )
    except Exception:  # not cached (LocalEntryNotFoundError), or a damaged cache entry
        return None
    return folder if (folder / "model_index.json").is_file() else None


def _unet_weights(folder: Path) -> list[Path]:
    unet = folder / "unet"
    return sorted(unet.glob("diffusion_pytorch_model*.safetensors")) or sorted(
        unet.glob("diffusion_pytorch_model*.bin")
    )


# --- identity and hashes --------------------------------------------------------------------------


def model_sha256(model: ResolvedModel) -> str:
    """The sha256 behind Automatic1111's model hash: of the checkpoint, or of the UNet weights."""
    from studio.models.hashing import sha256_of

    if model.source.kind == "file":
        return sha256_of(Path(model.source.location))
    weights = _unet_weights(model.folder)
    if not weights:
        raise DiffusionModelError(
            f"{model.folder} has no UNet weights (unet/diffusion_pytorch_model.*)."
        )
    blob = Path(os.path.realpath(weights[0])).name  # the HF cache names LFS blobs by their sha256
    if re.fullmatch(r"[0-9a-f]{64}", blob):
        return blob
    return sha256_of(weights[0])


# --- loading --------------------------------------------------------------------------------------


def pipeline_class(family: Family, task: str) -> Any:
    """The diffusers pipeline for a family and task ("text2img" or "inpaint")."""
    import diffusers

    if task == "text2img" and family.inpainting:
        raise DiffusionModelError(
            "this is an inpainting model (its UNet reads a mask): use it in the Inpaint tab, or "
            "choose an ordinary model to generate images."
        )
    xl = family.name == "sdxl"
    if task == "inpaint":
        return (
            diffusers.StableDiffusionXLInpaintPipeline
            if xl
            else diffusers.StableDiffusionInpaintPipeline
        )
    return diffusers.StableDiffusionXLPipeline if xl else diffusers.StableDiffusionPipeline


def _base_class(family: Family) -> Any:
    return pipeline_class(family, "inpaint" if family.inpainting else "text2img")


def load_pipeline(model: ResolvedModel, device: Any, dtype: Any) -> Any:
    """Load the model's components once; tasks derive their pipelines from it (`for_task`)."""
    cls = _base_class(model.family)
    options: dict[str, Any] = {"dtype": dtype}
    if model.family.name != "sdxl":
        options.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    try:
        if model.source.kind == "file":
            pipe = cls.from_single_file(
                model.source.location,
                config=str(model.folder),
                local_files_only=True,
                **options,
            )
        else:
            from studio.models.hub import weights_variant

            variant = weights_variant(model.folder)  # downloads keep fp16 copies only; CPU upcasts
            pipe = cls.from_pretrained(
                str(model.folder), variant=variant, local_files_only=True, **options
            )
    except DiffusionModelError:
        raise
    except Exception as exc:
        if "out of memory" in str(exc).lower():
            raise
        raise DiffusionModelError(
            f"{model.name} could not be loaded as a {model.family.title} model "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). The file may "
            "be incomplete or not a Stable Diffusion model."
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


def choose_memory_mode(mode: str, device_type: str, free_bytes: int, needed_bytes: int) -> str:
    """The memory savers a run uses, from the setting and what the device has free.

    `auto`: on a GPU, attention slicing and VAE tiling ("balanced") when free memory is under twice
    what the weights need, plus model CPU offload ("low") when it is under the weights themselves;
    "balanced" on Apple MPS (unified memory, shared with the system); nothing on the CPU. The CPU
    has nowhere to offload to, so "low" there is "balanced".
    """
    if mode not in MEMORY_MODES:
        raise DiffusionModelError(
            f"unknown memory mode {mode!r}; choose one of {', '.join(MEMORY_MODES)}."
        )
    if mode == "auto":
        if device_type == "mps":
            return "balanced"
        if device_type != "cuda":
            return "off"
        if free_bytes < needed_bytes:
            return "low"
        return "balanced" if free_bytes < 2 * needed_bytes else "off"
    if mode == "low" and device_type == "cpu":
        return "balanced"
    return mode


def apply_memory_mode(pipe: Any, device: Any, mode: str, *, needed_bytes: int) -> str:
    """Place the pipeline on `device` with the memory savers `choose_memory_mode` picks."""
    from studio.models.device import free_memory_bytes

    free = free_memory_bytes(device) if device.type == "cuda" else 0
    applied = choose_memory_mode(mode, device.type, free, needed_bytes)
    if applied in ("balanced", "low"):
        pipe.enable_attention_slicing()
        pipe.vae.enable_tiling()
    if applied == "low":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return applied


def for_task(base: Any, family: Family, task: str, scheduler: Any) -> Any:
    """The pipeline for `task`, sharing the cached one's modules (nothing is loaded twice), with
    the run's scheduler; the cached pipeline's own scheduler is left alone. Derived pipelines are
    kept with the cached one: deriving costs more than a tiny model's step."""
    tasks = base.__dict__.setdefault("_studio_tasks", {})
    pipe = tasks.get(task)
    if pipe is None:
        pipe = pipeline_class(family, task).from_pipe(base)
        pipe.set_progress_bar_config(disable=True)
        tasks[task] = pipe
    pipe.scheduler = scheduler
    return pipe


@contextmanager
def use_pipeline(
    model: ResolvedModel, device: Any, dtype: Any, memory: str, cache: Any, identity: str
) -> Iterator[tuple[Any, str]]:
    """Hold the loaded pipeline from the model cache (loading it on a miss) for the block."""
    from studio.models.cache import ModelKey

    size_hint = _weights_bytes(model, dtype)

    def loader() -> Any:
        pipe = load_pipeline(model, device, dtype)
        pipe._studio_memory_mode = apply_memory_mode(pipe, device, memory, needed_bytes=size_hint)
        return pipe

    key = ModelKey.of(f"{identity}|{memory}", device, dtype)
    with cache.use(key, loader, size_hint=size_hint) as pipe:
        yield pipe, getattr(pipe, "_studio_memory_mode", memory)


def _weights_bytes(model: ResolvedModel, dtype: Any) -> int:
    """About what the loaded weights take in `dtype`: a folder's fp32 files (or twice its fp16
    copies, all a download may have kept), halved for half precision; a checkpoint's size."""
    if model.source.kind == "file":
        return Path(model.source.location).stat().st_size
    total = 0
    for sub in ("unet", "vae", "text_encoder", "text_encoder_2"):
        files = list((model.folder / sub).glob("*.safetensors"))
        full = [file for file in files if ".fp16." not in file.name]
        total += sum(os.path.getsize(f) for f in full) or 2 * sum(os.path.getsize(f) for f in files)
    return total // 2 if "16" in str(dtype) else total
