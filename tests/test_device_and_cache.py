"""The device and precision policy, and the loaded-model cache."""

from __future__ import annotations

import threading

import pytest
import torch

from studio.models import cache as cache_module
from studio.models.cache import ModelCache, ModelKey, estimate_bytes
from studio.models.device import (
    DeviceError,
    choose_dtype,
    describe_device,
    dtype_name,
    free_memory_bytes,
    is_out_of_memory,
    resolve_device,
    resolve_dtype,
)

CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)  # a device object needs no GPU until something runs on it

no_gpu = pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(), reason="a GPU is present"
)


# -- device ---------------------------------------------------------------------------------------


def test_explicit_cpu_is_honoured():
    assert resolve_device("cpu") == CPU


@no_gpu
def test_auto_falls_back_to_cpu_without_a_gpu():
    assert resolve_device("auto") == CPU
    assert resolve_device("") == CPU


@no_gpu
def test_unavailable_explicit_device_is_a_clear_error():
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="MPS is not available"):
        resolve_device("mps")


def test_unknown_device_name_is_refused():
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_cpu_is_described_with_its_threads_and_free_memory_is_positive():
    assert describe_device(CPU) == f"CPU · {torch.get_num_threads()} threads"
    assert free_memory_bytes(CPU) > 0


# -- precision ------------------------------------------------------------------------------------


def test_cpu_runs_in_fp32_even_when_the_model_supports_half():
    assert resolve_dtype(CPU, supports_half=True, supports_bf16=True) == torch.float32


def test_gpu_runs_half_precision_when_the_model_supports_it():
    assert resolve_dtype(CUDA, supports_half=True, supports_bf16=True) == torch.float16


def test_gpu_uses_bf16_when_the_model_only_supports_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype(CUDA, supports_half=False, supports_bf16=True) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    choice = choose_dtype(CUDA, supports_half=False, supports_bf16=True)
    assert choice.dtype == torch.float32
    assert choice.reason


def test_explicit_precision_is_respected_when_the_model_can():
    choice = choose_dtype(CPU, "bf16", supports_half=True, supports_bf16=True)
    assert choice == choice.__class__(torch.bfloat16, None)
    assert resolve_dtype(CUDA, "fp32", supports_half=True, supports_bf16=True) == torch.float32


def test_explicit_precision_falls_back_to_fp32_with_a_reason():
    choice = choose_dtype(CPU, "fp16", supports_half=False, supports_bf16=False)
    assert choice.dtype == torch.float32
    assert "does not support fp16" in choice.reason


def test_unknown_precision_is_refused():
    with pytest.raises(DeviceError, match="unknown precision"):
        choose_dtype(CPU, "fp8", supports_half=True, supports_bf16=True)


def test_dtypes_have_the_names_the_history_uses():
    assert [dtype_name(d) for d in (torch.float16, torch.bfloat16, torch.float32)] == [
        "fp16",
        "bf16",
        "fp32",
    ]


def test_out_of_memory_is_recognised_on_every_backend():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: 9 GB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


# -- cache ----------------------------------------------------------------------------------------


def _module(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(16, 16)  # 272 float32 parameters: 1088 bytes


MODULE_BYTES = estimate_bytes(_module(0))


class Loader:
    """Counts loads per key, like a real loader would read a file each time."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, name: str):
        def load() -> torch.nn.Module:
            self.calls.append(name)
            return _module(len(self.calls))

        return load


def key(name: str) -> ModelKey:
    return ModelKey.of(name, CPU, torch.float32)


def test_a_cached_model_is_loaded_once():
    cache, loader = ModelCache(budget_bytes=10 * MODULE_BYTES), Loader()
    with cache.use(key("a"), loader("a")) as first:
        pass
    with cache.use(key("a"), loader("a")) as second:
        pass
    assert first is second
    assert loader.calls == ["a"]


def test_least_recently_used_model_is_released_first(monkeypatch):
    emptied: list[torch.device] = []
    monkeypatch.setattr(cache_module, "empty_cache", emptied.append)
    cache, loader = ModelCache(budget_bytes=2 * MODULE_BYTES), Loader()
    for name in ("a", "b", "a"):  # "a" used last, so "b" is the least recently used
        with cache.use(key(name), loader(name)):
            pass
    with cache.use(key("c"), loader("c")):
        pass
    assert cache.keys() == [key("a"), key("c")]
    assert emptied == [CPU]
    assert cache.held_bytes(CPU) == 2 * MODULE_BYTES


def test_a_model_in_use_is_never_released():
    cache, loader = ModelCache(budget_bytes=MODULE_BYTES), Loader()
    with cache.use(key("a"), loader("a")):
        with cache.use(key("b"), loader("b")):
            assert key("a") in cache and key("b") in cache  # over budget, but both locked
        with cache.use(key("c"), loader("c")):
            pass
        assert key("a") in cache
        assert key("b") not in cache


def test_size_hint_makes_room_before_loading():
    cache, loader = ModelCache(budget_bytes=2 * MODULE_BYTES), Loader()
    with cache.use(key("a"), loader("a")):
        pass
    seen_during_load: list[list[ModelKey]] = []

    def load_big() -> torch.nn.Module:
        seen_during_load.append(cache.keys())
        return _module(9)

    with cache.use(key("big"), load_big, size_hint=2 * MODULE_BYTES):
        pass
    assert seen_during_load == [[]]


def test_clear_releases_everything_and_waits_for_models_in_use():
    cache, loader = ModelCache(budget_bytes=10 * MODULE_BYTES), Loader()
    with cache.use(key("a"), loader("a")):
        pass
    with cache.use(key("b"), loader("b")):
        cache.clear()
        assert len(cache) == 0
    assert len(cache) == 0
    with cache.use(key("b"), loader("b")):
        pass
    assert loader.calls == ["a", "b", "b"]


def test_default_budget_follows_free_memory(monkeypatch):
    free = {"bytes": 100 * MODULE_BYTES}
    monkeypatch.setattr(cache_module, "free_memory_bytes", lambda device: free["bytes"])
    cache, loader = ModelCache(), Loader()
    with cache.use(key("a"), loader("a")):
        pass
    free["bytes"] = MODULE_BYTES  # memory got scarce: a new model must push "a" out
    with cache.use(key("b"), loader("b"), size_hint=MODULE_BYTES):
        pass
    assert cache.keys() == [key("b")]


def test_concurrent_users_of_one_key_share_one_load():
    cache, loader = ModelCache(budget_bytes=10 * MODULE_BYTES), Loader()
    models: list[torch.nn.Module] = []
    start = threading.Barrier(4)

    def use() -> None:
        start.wait()
        with cache.use(key("a"), loader("a")) as model:
            models.append(model)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loader.calls == ["a"]
    assert all(model is models[0] for model in models)


def test_estimated_size_counts_parameters_and_buffers():
    model = torch.nn.BatchNorm2d(8)  # 16 parameters, 16 running stats, 1 int64 counter
    assert estimate_bytes(model) == 32 * 4 + 8
