"""Reading upscaler and restoration model files: every architecture spandrel detects.

A model file is untrusted input. It is read without ever executing code from it: `.safetensors`
through safetensors, pickles (`.pth`, `.pt`, `.ckpt`) only through `torch.load(weights_only=True)`,
which refuses every global outside plain tensors and containers (TorchScript archives included).
Every refusal is a `ModelFileError` whose message names the file and says what to do instead.

spandrel then detects the architecture from the weights (Studio's own networks are registered
with it, `studio_architectures`); `inspect_model` reports what it found,
`load_model` returns spandrel's `ImageModelDescriptor`, in eval mode on the device and dtype asked.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import spandrel
import torch
from safetensors import safe_open
from spandrel import (
    ImageModelDescriptor,
    ModelTiling,
    UnsupportedDtypeError,
    UnsupportedModelError,
    canonicalize_state_dict,
)

from studio.errors import UserError
from studio.imaging import file_sha256
from studio.models.cache import ModelCache, ModelKey
from studio.models.device import DtypeChoice, choose_dtype, resolve_device
from studio.models.studio_architectures import REGISTRY

log = logging.getLogger(__name__)

MODEL_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")

# Convolutional architectures whose kernels run faster with channels-last tensors (CPU and GPU).
CHANNELS_LAST_ARCHITECTURES = frozenset({"ESRGAN", "Compact"})

# Keys that only checkpoints of diffusion pipelines have (Stable Diffusion 1/2/XL single files,
# diffusers UNets, text encoders, Flux and SD3 transformers) ...
_DIFFUSION_MARKERS = (
    "model.diffusion_model.",
    "first_stage_model.",
    "cond_stage_model.",
    "conditioner.embedders.",
    "text_model.encoder.layers.",
    "time_embedding.linear_1.",
    "double_blocks.0.img_attn.",
    "joint_blocks.0.",
)
# ... and keys of LoRA / LyCORIS adapters for them.
_LORA_MARKERS = ("lora_unet_", "lora_te_", "lora_te1_", ".lora_down.", ".lora_A.", ".lora_B.")


class ModelFileError(UserError):
    """A model file Studio will not use; the message names the file and what to do instead."""


@dataclass(frozen=True)
class SizeRules:
    """What input sizes a network accepts (spandrel's `SizeRequirements`, frozen)."""

    minimum: int = 0
    multiple_of: int = 1
    square: bool = False

    def padded(self, width: int, height: int) -> tuple[int, int]:
        """The smallest size >= (width, height) that satisfies the rules."""
        width, height = max(width, self.minimum), max(height, self.minimum)
        width = -(-width // self.multiple_of) * self.multiple_of
        height = -(-height // self.multiple_of) * self.multiple_of
        if self.square:
            width = height = max(width, height)
        return width, height


@dataclass(frozen=True)
class ModelInfo:
    """What a model file is, as spandrel detected it. `purpose`: "upscale" or "restore"."""

    path: str
    name: str
    sha256: str
    architecture: str
    scale: int
    input_channels: int
    output_channels: int
    parameters: int
    supports_half: bool
    supports_bf16: bool
    size_requirements: SizeRules
    purpose: str
    tiling: str = "supported"  # "supported" | "discouraged" | "internal" (spandrel's advice)
    tags: tuple[str, ...] = ()
    faces: bool = False  # restores aligned 512 px face crops (GFPGAN, RestoreFormer), not photos

    @property
    def channels_last(self) -> bool:
        return self.architecture in CHANNELS_LAST_ARCHITECTURES


_info_lock = threading.Lock()
_info_memo: dict[tuple[str, int, int], ModelInfo] = {}


def inspect_model(path: str | os.PathLike[str]) -> ModelInfo:
    """Detect what a model file is. Raises `ModelFileError` for anything Studio will not run.

    Results are remembered per (path, size, modification time), so inspecting again is free.
    """
    file = _checked_path(path)
    stat = file.stat()
    memo_key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    with _info_lock:
        info = _info_memo.get(memo_key)
    if info is not None:
        return info
    descriptor = _read_descriptor(file)
    info = _describe(file, descriptor, file_sha256(file))
    with _info_lock:
        _info_memo[memo_key] = info
    return info


def load_model(
    path: str | os.PathLike[str],
    device: torch.device,
    dtype: torch.dtype,
    cache: ModelCache | None = None,
) -> ImageModelDescriptor:
    """The model of `path`, in eval mode on `device` in `dtype`, through `cache` when given.

    A model returned from the cache is not locked; use `use_model` to hold it while computing.
    """
    if cache is None:
        return _load(_checked_path(path), device, dtype)
    with use_model(inspect_model(path), device, dtype, cache) as model:
        return model


def placement(info: ModelInfo, device: str, precision: str) -> tuple[torch.device, DtypeChoice]:
    """The device a run asked for (or the best present) and the precision `info` can run in
    there; the choice says why when it differs from the request."""
    where = resolve_device(device)
    choice = choose_dtype(
        where, precision, supports_half=info.supports_half, supports_bf16=info.supports_bf16
    )
    return where, choice


@contextmanager
def use_model(
    info: ModelInfo, device: torch.device, dtype: torch.dtype, cache: ModelCache | None
) -> Iterator[ImageModelDescriptor]:
    """Hold the model of `info` from `cache` (loading it on a miss) for the `with` block;
    without a cache, a fresh copy that is dropped after it."""
    if cache is None:
        yield _load(_checked_path(info.path), device, dtype)
        return
    key = ModelKey.of(info.sha256, device, dtype)
    size_hint = info.parameters * torch.finfo(dtype).bits // 8
    loader = lambda: _load(Path(info.path), device, dtype)  # noqa: E731
    with cache.use(key, loader, size_hint=size_hint) as model:
        yield model


def _load(file: Path, device: torch.device, dtype: torch.dtype) -> ImageModelDescriptor:
    descriptor = _read_descriptor(file)
    try:
        descriptor.to(device=device, dtype=dtype)
    except UnsupportedDtypeError as exc:
        raise ModelFileError(f"{file.name}: {exc}; choose fp32 precision.") from exc
    descriptor.eval()
    if descriptor.architecture.id in CHANNELS_LAST_ARCHITECTURES:
        descriptor.model.to(memory_format=torch.channels_last)
    return descriptor


def _describe(file: Path, descriptor: ImageModelDescriptor, sha256: str) -> ModelInfo:
    req = descriptor.size_requirements
    return ModelInfo(
        path=str(file),
        name=file.stem,
        sha256=sha256,
        architecture=descriptor.architecture.id,
        scale=int(descriptor.scale),
        input_channels=int(descriptor.input_channels),
        output_channels=int(descriptor.output_channels),
        parameters=sum(p.numel() for p in descriptor.model.parameters()),
        supports_half=bool(descriptor.supports_half),
        supports_bf16=bool(descriptor.supports_bfloat16),
        size_requirements=SizeRules(req.minimum, req.multiple_of, req.square),
        purpose="upscale" if descriptor.scale > 1 else "restore",
        tiling=_TILING_ADVICE[descriptor.tiling],
        tags=tuple(descriptor.tags),
        faces=descriptor.purpose == "FaceSR",
    )


_TILING_ADVICE = {
    ModelTiling.SUPPORTED: "supported",
    ModelTiling.DISCOURAGED: "discouraged",
    ModelTiling.INTERNAL: "internal",
}


# -- reading files safely -------------------------------------------------------------------------


def _checked_path(path: str | os.PathLike[str]) -> Path:
    file = Path(path)
    if file.is_dir():
        if (file / "model_index.json").exists():
            raise ModelFileError(
                f"{file.name} is a diffusers pipeline folder, not an upscaler; "
                "use it in the Generate tab."
            )
        raise ModelFileError(f"{file} is a folder; choose a model file (.pth or .safetensors).")
    if not file.exists():
        raise ModelFileError(f"{file.name}: file not found ({file}).")
    if file.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelFileError(
            f"{file.name} is not a model file Studio reads; "
            f"upscalers come as {', '.join(MODEL_SUFFIXES)}."
        )
    if file.stat().st_size == 0:
        raise ModelFileError(
            f"{file.name} is empty (0 bytes); the download probably failed. Download it again."
        )
    return file


def _read_descriptor(file: Path) -> ImageModelDescriptor:
    state_dict = _read_state_dict(file)
    _refuse_foreign_checkpoints(file, state_dict.keys())
    try:
        descriptor = REGISTRY.load(state_dict)
    except UnsupportedModelError as exc:
        raise ModelFileError(
            f"{file.name}: Studio does not recognise this model's architecture. It reads the "
            f"upscalers and restorers spandrel {spandrel.__version__} supports (ESRGAN, "
            "Real-ESRGAN, SwinIR, HAT, DAT, SPAN, …)."
        ) from exc
    except Exception as exc:  # detected, but the weights do not build that architecture
        raise ModelFileError(
            f"{file.name}: the weights do not match the architecture they resemble; the file is "
            f"damaged or modified ({type(exc).__name__}: {exc})."
        ) from exc
    if not isinstance(descriptor, ImageModelDescriptor):
        raise ModelFileError(
            f"{file.name} is a {descriptor.architecture.name} {descriptor.purpose.lower()} model "
            "(it needs a mask as well as an image); choose an image-to-image model."
        )
    return descriptor


def _read_state_dict(file: Path) -> dict[str, Any]:
    safetensors = file.suffix.lower() == ".safetensors"
    raw = _read_safetensors(file) if safetensors else _read_pickle(file)
    if not isinstance(raw, Mapping):
        raise ModelFileError(f"{file.name} holds no model weights (but a {type(raw).__name__}).")
    state_dict = canonicalize_state_dict(dict(raw))
    if not any(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ModelFileError(f"{file.name} holds no model weights.")
    return state_dict


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(file), framework="pt", device="cpu") as archive:
            keys = list(archive.keys())
            _refuse_foreign_checkpoints(file, keys)  # before reading gigabytes of diffusion weights
            return {key: archive.get_tensor(key) for key in keys}
    except ModelFileError:
        raise
    except Exception as exc:  # safetensors' own error type varies between versions
        raise ModelFileError(
            f"{file.name} is not a valid .safetensors file (damaged, or only partly downloaded)."
        ) from exc


_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")


def _read_pickle(file: Path) -> Any:
    with file.open("rb") as handle:
        head = handle.read(4)
    zipped = head == _ZIP_MAGIC
    if not zipped and head[:1] != bytes([_PICKLE_PROTO]):
        raise ModelFileError(
            f"{file.name} is not a PyTorch checkpoint (its content is text, an image, or damaged)."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(file, map_location="cpu", weights_only=True, mmap=zipped)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, KeyError) as exc:
        raise _pickle_refusal(file, exc) from exc


def _pickle_refusal(file: Path, exc: Exception) -> ModelFileError:
    message = str(exc)
    if "TorchScript" in message:
        return ModelFileError(
            f"{file.name} is a TorchScript program, which Studio does not run; "
            "use the model's .pth or .safetensors weights."
        )
    found = _GLOBAL.search(message)
    if found:
        return ModelFileError(
            f"{file.name} would run code when loaded (it calls {found.group(1)}); Studio refused "
            "to open it. Use a .safetensors version of the model from a source you trust."
        )
    return ModelFileError(
        f"{file.name} cannot be read as plain weights (damaged, or pickled with objects Studio "
        "does not load). Try a .safetensors version of the model."
    )


def _refuse_foreign_checkpoints(file: Path, keys: Any) -> None:
    keys = list(keys)
    if any(marker in key for key in keys for marker in _LORA_MARKERS):
        raise ModelFileError(
            f"{file.name} is a LoRA for a diffusion model, not an upscaler; "
            "use it in the Generate tab."
        )
    if any(marker in key for key in keys for marker in _DIFFUSION_MARKERS):
        raise ModelFileError(
            f"{file.name}: this is a diffusion checkpoint (Stable Diffusion or similar), "
            "not an upscaler; use the Generate tab."
        )
