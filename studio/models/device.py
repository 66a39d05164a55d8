"""The one place that decides where models run and in which precision.

`auto` means CUDA, then Apple MPS, then the CPU. Half precision is used on GPUs when the model
supports it (fp16, or bf16 where only that works), fp32 on the CPU; an explicit choice from the user
is respected unless the model or the device cannot do it, in which case we fall back to fp32 and say
why. Everything that reads free memory or empties an allocator cache goes through here too.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass

import psutil
import torch

from studio.errors import UserError

log = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
PRECISION_CHOICES = ("auto", "fp16", "bf16", "fp32")

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
GIB = 1024**3


class DeviceError(UserError):
    """The requested device does not exist on this machine (or the choice is not a device)."""


@dataclass(frozen=True)
class DtypeChoice:
    """The precision a model will run in, and why it differs from what was asked (if it does)."""

    dtype: torch.dtype
    reason: str | None = None


def resolve_device(preference: str = "auto") -> torch.device:
    """`auto`, `cuda`, `cuda:N`, `mps` or `cpu` -> a device that exists here.

    An explicit choice that this machine cannot honour raises `DeviceError` instead of silently
    running somewhere else.
    """
    choice = (preference or "auto").strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "mps":
        if not _mps_available():
            raise DeviceError("Apple MPS is not available on this machine; choose auto or cpu.")
        return torch.device("mps")
    if choice == "cuda" or choice.startswith("cuda:"):
        return _cuda_device(choice)
    raise DeviceError(f"unknown device {preference!r}; choose one of {', '.join(DEVICE_CHOICES)}.")


def _cuda_device(choice: str) -> torch.device:
    if not torch.cuda.is_available():
        raise DeviceError(
            "CUDA is not available (no NVIDIA GPU, or this PyTorch build has no CUDA); "
            "choose auto or cpu."
        )
    try:
        device = torch.device(choice)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {choice!r}.") from exc
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise DeviceError(
            f"there is no GPU {choice!r}; "
            f"this machine has {torch.cuda.device_count()} CUDA device(s)."
        )
    return torch.device("cuda", index)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def choose_dtype(
    device: torch.device,
    preference: str = "auto",
    *,
    supports_half: bool,
    supports_bf16: bool,
) -> DtypeChoice:
    """The precision policy, with the reason whenever the result is not what was asked for."""
    choice = (preference or "auto").strip().lower()
    if choice not in PRECISION_CHOICES:
        raise DeviceError(
            f"unknown precision {preference!r}; choose one of {', '.join(PRECISION_CHOICES)}."
        )
    if choice == "fp32":
        return DtypeChoice(torch.float32)
    if choice == "auto":
        return _auto_dtype(device, supports_half=supports_half, supports_bf16=supports_bf16)
    if choice == "fp16" and not supports_half:
        return DtypeChoice(torch.float32, "this model does not support fp16; running in fp32")
    if choice == "bf16" and not supports_bf16:
        return DtypeChoice(torch.float32, "this model does not support bf16; running in fp32")
    if choice == "bf16" and not device_supports_bf16(device):
        return DtypeChoice(torch.float32, f"{device.type} cannot compute in bf16; running in fp32")
    return DtypeChoice(_DTYPES[choice])


def _auto_dtype(device: torch.device, *, supports_half: bool, supports_bf16: bool) -> DtypeChoice:
    if device.type not in ("cuda", "mps"):
        return DtypeChoice(torch.float32)
    if supports_half:
        return DtypeChoice(torch.float16)
    if supports_bf16 and device_supports_bf16(device):
        return DtypeChoice(torch.bfloat16)
    return DtypeChoice(torch.float32, "this model needs fp32")


def resolve_dtype(
    device: torch.device,
    preference: str = "auto",
    *,
    supports_half: bool,
    supports_bf16: bool,
) -> torch.dtype:
    """`choose_dtype` without the reason (which is logged)."""
    choice = choose_dtype(
        device, preference, supports_half=supports_half, supports_bf16=supports_bf16
    )
    if choice.reason:
        log.info("precision %s on %s: %s", preference, device, choice.reason)
    return choice.dtype


def device_supports_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "mps":
        try:
            torch.zeros(1, dtype=torch.bfloat16, device=device)
        except (RuntimeError, TypeError):
            return False
        return True
    return True  # the CPU computes bf16 everywhere PyTorch runs (slowly without AVX-512)


def dtype_name(dtype: torch.dtype) -> str:
    """torch.float16 -> "fp16", as the history and the settings spell it."""
    return _NAMES.get(dtype, str(dtype).removeprefix("torch."))


def parse_dtype(name: str) -> torch.dtype:
    return _DTYPES[name]


def describe_device(device: torch.device) -> str:
    """One line for the status bar: "CUDA · NVIDIA RTX 4090 · 20.1 GiB free", "CPU · 8 threads"."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"CUDA · {name} · {free_memory_bytes(device) / GIB:.1f} GiB free"
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU · {torch.get_num_threads()} threads"


def free_memory_bytes(device: torch.device) -> int:
    """Memory a new allocation on `device` can use now (GPU memory, or available RAM)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # memory PyTorch holds in its cache is free for PyTorch too
        reserved = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(reserved, 0))
    available = int(psutil.virtual_memory().available)
    if device.type == "mps":
        recommended = getattr(torch.mps, "recommended_max_memory", None)
        allocated = getattr(torch.mps, "driver_allocated_memory", None)
        if recommended is not None and allocated is not None:
            return min(available, max(int(recommended()) - int(allocated()), 0))
    return available


def empty_cache(device: torch.device) -> None:
    """Give memory of released models back: Python garbage first, then the allocator's cache."""
    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps" and _mps_available():
        torch.mps.empty_cache()


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an out-of-memory failure of any backend (CUDA, MPS, CPU allocator)."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    message = str(exc).lower()
    return "out of memory" in message or "can't allocate memory" in message
