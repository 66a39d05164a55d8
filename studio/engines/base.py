"""What every engine shares: progress reports, cancellation, user-facing failures, run facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from studio.errors import UserError
from studio.progress import CancelCheck, Cancelled, Progress, never_cancelled, no_progress

__all__ = [
    "CancelCheck",
    "Cancelled",
    "EngineError",
    "Progress",
    "RunFacts",
    "never_cancelled",
    "no_progress",
]


class EngineError(UserError):
    """A failure the user can act on; the message says what failed and what to do next."""


@dataclass(frozen=True)
class RunFacts:
    """What a run discovered that the history records next to its request."""

    model_name: str | None = None
    model_sha256: str | None = None
    seed: int | None = None
    device: str | None = None
    dtype: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
