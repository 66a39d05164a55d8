"""Loaded models, kept between runs so that the second upscale with a model does not load it again.

Models are keyed by (file sha256, device, dtype). A model is handed out in a `with` block that
locks it for the block's duration:

    with cache.use(key, loader) as model:
        ...

A miss calls `loader()`. When a new model would not fit the memory budget, the least recently used
models that nobody is using are released (and the device allocator's cache emptied) first. Locked
models are never released. The cache is safe to share between threads.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import torch

from studio.models.device import dtype_name, empty_cache, free_memory_bytes, is_out_of_memory

log = logging.getLogger(__name__)

T = TypeVar("T")

# Without an explicit budget, a new model may take this share of the memory free on its device
# (counting what releasing cached models would free); the rest is left for activations.
DEFAULT_FREE_FRACTION = 0.6


class ModelKey(NamedTuple):
    sha256: str
    device: str
    dtype: str

    @classmethod
    def of(cls, sha256: str, device: torch.device, dtype: torch.dtype) -> ModelKey:
        return cls(sha256, str(device), dtype_name(dtype))


@dataclass
class _Entry:
    model: Any
    size: int
    users: int = 0
    doomed: bool = False  # cleared while in use: dropped when the last user leaves


class ModelCache:
    """Least-recently-used cache of loaded models under a per-device byte budget.

    `budget_bytes` fixes the budget for every device; `None` derives it, per load, from the
    memory free on the device the model is for.
    """

    def __init__(
        self,
        budget_bytes: int | None = None,
        *,
        free_fraction: float = DEFAULT_FREE_FRACTION,
    ) -> None:
        self.budget_bytes = budget_bytes
        self.free_fraction = free_fraction
        self._entries: OrderedDict[ModelKey, _Entry] = OrderedDict()
        self._lock = threading.RLock()

    @contextmanager
    def use(
        self, key: ModelKey, loader: Callable[[], T], *, size_hint: int | None = None
    ) -> Iterator[T]:
        """Yield the model for `key`, loading it on a miss; it stays cached and locked meanwhile.

        `size_hint` (bytes) lets the cache make room before loading, not only after.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.doomed:
                entry = self._load(key, loader, size_hint)
            else:
                self._entries.move_to_end(key)
            entry.users += 1
        try:
            yield entry.model
        finally:
            with self._lock:
                entry.users -= 1
                if entry.doomed and entry.users == 0:
                    self._drop(key, entry)

    def _load(self, key: ModelKey, loader: Callable[[], Any], size_hint: int | None) -> _Entry:
        device = torch.device(key.device)
        if size_hint:
            self._make_room(device, size_hint)
        try:
            model = loader()
        except Exception as exc:
            if not is_out_of_memory(exc) or not self._release_unlocked(device):
                raise
            log.info("out of memory loading %s; released cached models and retrying", key)
            model = loader()
        entry = _Entry(model, estimate_bytes(model))
        self._entries[key] = entry
        entry.users += 1  # the new model must not be released to make room for itself
        try:
            self._make_room(device, 0)
        finally:
            entry.users -= 1
        return entry

    def _make_room(self, device: torch.device, needed: int) -> None:
        budget = self._budget(device)
        released = False
        for key in list(self._entries):
            if self.held_bytes(device) + needed <= budget:
                break
            entry = self._entries[key]
            if key.device == str(device) and entry.users == 0:
                log.info("releasing %s (%d MiB) to make room", key, entry.size >> 20)
                del self._entries[key]
                released = True
        if released:
            empty_cache(device)

    def _budget(self, device: torch.device) -> int:
        if self.budget_bytes is not None:
            return self.budget_bytes
        return self.held_bytes(device) + int(free_memory_bytes(device) * self.free_fraction)

    def _release_unlocked(self, device: torch.device) -> bool:
        keys = [k for k, e in self._entries.items() if k.device == str(device) and e.users == 0]
        for key in keys:
            del self._entries[key]
        if keys:
            empty_cache(device)
        return bool(keys)

    def _drop(self, key: ModelKey, entry: _Entry) -> None:
        if self._entries.get(key) is entry:
            del self._entries[key]
        empty_cache(torch.device(key.device))

    def held_bytes(self, device: torch.device | None = None) -> int:
        """Estimated bytes of the cached models (on `device`, or everywhere)."""
        with self._lock:
            return sum(
                e.size
                for k, e in self._entries.items()
                if not e.doomed and (device is None or k.device == str(device))
            )

    def keys(self) -> list[ModelKey]:
        """Cached keys, least recently used first."""
        with self._lock:
            return [k for k, e in self._entries.items() if not e.doomed]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __len__(self) -> int:
        return len(self.keys())

    def clear(self) -> None:
        """Release every model; one in use is released as soon as its `with` block ends."""
        with self._lock:
            devices = {torch.device(k.device) for k in self._entries}
            for key, entry in list(self._entries.items()):
                if entry.users:
                    entry.doomed = True
                else:
                    del self._entries[key]
        for device in devices:
            empty_cache(device)


def estimate_bytes(model: Any) -> int:
    """Bytes of parameters and buffers of a module, spandrel descriptor or diffusers pipeline."""
    modules = _modules_of(model)
    seen: set[int] = set()
    total = 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.device.type == "meta" or tensor.data_ptr() in seen:
                continue
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total


def _modules_of(model: Any) -> list[torch.nn.Module]:
    if isinstance(model, torch.nn.Module):
        return [model]
    inner = getattr(model, "model", None)  # spandrel's ModelDescriptor
    if isinstance(inner, torch.nn.Module):
        return [inner]
    components = getattr(model, "components", None)  # diffusers pipelines
    if isinstance(components, dict):
        return [c for c in components.values() if isinstance(c, torch.nn.Module)]
    return []
