"""How long work reports progress and learns it was cancelled: engines, downloads, training.

It sits below every layer so that one `Cancelled` is caught wherever work is cancelled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Cancelled(Exception):
    """Raised by work that saw `cancelled()` turn true; it leaves no output behind."""


class Progress(Protocol):
    def __call__(self, fraction: float, message: str, preview: Any | None = None) -> None: ...


CancelCheck = Callable[[], bool]


def no_progress(fraction: float, message: str, preview: Any | None = None) -> None:
    """A progress sink for callers that do not watch."""


def never_cancelled() -> bool:
    return False
