"""What every engine shares: progress reports, cancellation, user-facing failures, run facts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from studio.errors import UserError


class Cancelled(Exception):
    """Raised by an engine that saw `cancelled()` turn true; it leaves no output behind."""


class EngineError(UserError):
    """A failure the user can act on; the message says what failed and what to do next."""


class Progress(Protocol):
    def __call__(self, fraction: float, message: str, preview: Any | None = None) -> None: ...


CancelCheck = Callable[[], bool]


def no_progress(fraction: float, message: str, preview: Any | None = None) -> None:
    """A progress sink for callers that do not watch."""


def never_cancelled() -> bool:
    return False


@dataclass(frozen=True)
class RunFacts:
    """What a run discovered that the history records next to its request."""

    model_name: str | None = None
    model_sha256: str | None = None
    seed: int | None = None
    device: str | None = None
    dtype: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
