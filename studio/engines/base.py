"""What every engine shares: progress reports, cancellation, user-facing failures, run facts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from studio.errors import UserError
from studio.progress import CancelCheck, Cancelled, Progress, never_cancelled, no_progress

__all__ = [
    "ENSEMBLE_SIZES",
    "CancelCheck",
    "Cancelled",
    "EngineError",
    "Progress",
    "Request",
    "RunFacts",
    "check_ensemble",
    "never_cancelled",
    "no_progress",
]

# How many of a square's symmetries a network's tiles can be averaged over
# (`studio.engines.tiling.dihedral_mean`), a choice engines offer without importing torch.
ENSEMBLE_SIZES = (1, 2, 4, 8)


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


class Request:
    """What every tool's request shares: JSON for the history, the CLI and re-run, and the files
    it reads, which the history stores with the entry (a re-run reads those copies). Subclasses
    are frozen dataclasses that validate themselves."""

    tool: ClassVar[str]
    image_fields: ClassVar[tuple[str, ...]] = ()  # the images it reads, in order
    file_fields: ClassVar[tuple[str, ...]] = ()  # other files it reads (a LUT, a preset)
    required: ClassVar[tuple[str, ...]] = ()  # keys a stored request must have

    def to_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, **asdict(self)}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Rebuild a request from `to_dict` output (history, CLI); unknown keys are ignored."""
        if data.get("tool", cls.tool) != cls.tool:
            raise EngineError(f"this is a {data.get('tool')!r} request, not a {cls.tool!r} one.")
        missing = set(cls.required) - data.keys()
        if missing:
            raise EngineError(f"a {cls.tool} request needs {', '.join(sorted(missing))}.")
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**cls._coerce({key: value for key, value in data.items() if key in known}))

    @classmethod
    def _coerce(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Undo what a JSON round trip changed (e.g. 1.0 stored as 1)."""
        return values

    def input_fields(self) -> list[str]:
        """The fields naming a file this request reads: its images first, then other files."""
        return [name for name in (*self.image_fields, *self.file_fields) if getattr(self, name)]

    def input_paths(self) -> list[str]:
        """The files to store with the entry, in `input_fields` order."""
        files = (self.input_file(name) for name in self.input_fields())
        return [path for path in files if path is not None]

    def input_file(self, name: str) -> str | None:
        """The file that stores field `name`'s input, or None when it cannot be stored as one
        file (a re-run then reads it where it is)."""
        return getattr(self, name)


def check_ensemble(count: Any) -> None:
    """Refuse an ensemble size a request cannot run (2.0 from a JSON file included)."""
    if type(count) is not int or count not in ENSEMBLE_SIZES:
        raise EngineError(
            f"ensemble must be one of {', '.join(map(str, ENSEMBLE_SIZES))}, not {count!r}."
        )
