"""What the history hands out: immutable records of runs, their files, and what went wrong.

Records are snapshots read from the store; changing a review goes through `HistoryStore` and a
fresh `get()` shows the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any


class Status(str, Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


class Review(str, Enum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"

    def __str__(self) -> str:
        return self.value


INTERRUPTED = "interrupted (Studio closed or crashed while it ran)"


class HistoryError(Exception):
    """A history operation that cannot be done; the message says why and what to do instead."""


class EntryNotFound(HistoryError, LookupError):
    def __init__(self, entry_id: int) -> None:
        super().__init__(f"history entry {entry_id} does not exist (deleted?)")
        self.entry_id = entry_id


class EntryNotRunning(HistoryError):
    """complete/fail/cancel/output_path on an entry that already finished (or was cancelled)."""


@dataclass(frozen=True)
class EntryInput:
    position: int
    sha256: str
    path: Path  # the stored copy, shared by every entry that used the same bytes
    original_name: str


@dataclass(frozen=True)
class EntryOutput:
    position: int
    path: Path
    sha256: str
    size: int
    width: int | None  # None for files that are not images (e.g. .cube LUTs)
    height: int | None
    thumb: Path | None


@dataclass(frozen=True)
class Entry:
    id: int
    tool: str
    request: dict[str, Any]
    status: Status
    review: Review
    rating: int
    note: str
    model_name: str | None
    model_sha256: str | None
    seed: int | None
    device: str | None
    dtype: str | None
    duration_s: float | None
    error: str | None
    parent_id: int | None
    owner: str | None  # '<pid>-<token>' of the Studio process that ran it
    created_at: datetime  # UTC
    finished_at: datetime | None
    facts: dict[str, Any]
    inputs: tuple[EntryInput, ...] = ()
    outputs: tuple[EntryOutput, ...] = ()


@dataclass(frozen=True)
class ExportReport:
    dest_dir: Path
    entry_ids: tuple[int, ...]  # exported, oldest first
    files: tuple[Path, ...]  # the copied outputs
    audit_json: Path
    audit_csv: Path
    skipped: tuple[int, ...] = ()  # requested ids that are missing, unfinished or not approved
