"""Handing approved results over: the images, plus an audit trail of how each one was made.

The audit (JSON for programs, CSV for spreadsheets) has one row per exported file: who-what-when of
the run, the parameters, the model by name and hash, and the inputs and output by hash, so anyone
can check later that a delivered file is the one that was reviewed.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import studio
from studio.app.history_files import copy_verified, write_atomically
from studio.app.history_model import Entry, EntryOutput, ExportReport

AUDIT_FIELDS = (
    "entry_id",
    "tool",
    "created_at",
    "finished_at",
    "status",
    "review",
    "rating",
    "note",
    "model_name",
    "model_sha256",
    "seed",
    "device",
    "dtype",
    "duration_s",
    "parameters",
    "input_names",
    "input_sha256",
    "output_file",
    "output_sha256",
)


def export_entries(
    entries: Sequence[Entry], dest_dir: Path, skipped: Sequence[int] = ()
) -> ExportReport:
    """Copy the outputs first and write the audit last, so an audit never lists a missing file."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    rows: list[dict[str, Any]] = []
    for entry in entries:
        for output in entry.outputs:
            dest = dest_dir / export_name(entry, output)
            copy_verified(output.path, dest, output.sha256)
            files.append(dest)
            rows.append(audit_row(entry, output, dest.name))
    audit_json = dest_dir / "audit.json"
    audit_csv = dest_dir / "audit.csv"
    document = {
        "studio_version": studio.__version__,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": rows,
    }
    write_atomically(audit_json, json.dumps(document, ensure_ascii=False, indent=2).encode())
    write_atomically(audit_csv, _csv_bytes(rows))
    return ExportReport(
        dest_dir=dest_dir,
        entry_ids=tuple(entry.id for entry in entries),
        files=tuple(files),
        audit_json=audit_json,
        audit_csv=audit_csv,
        skipped=tuple(skipped),
    )


def export_name(entry: Entry, output: EntryOutput) -> str:
    tool = re.sub(r"[^A-Za-z0-9_-]+", "_", entry.tool) or "run"
    return f"{entry.id}-{tool}-{output.position}{output.path.suffix}"


def audit_row(entry: Entry, output: EntryOutput, output_file: str) -> dict[str, Any]:
    return {
        "entry_id": entry.id,
        "tool": entry.tool,
        "created_at": entry.created_at.isoformat(),
        "finished_at": entry.finished_at.isoformat() if entry.finished_at else None,
        "status": entry.status.value,
        "review": entry.review.value,
        "rating": entry.rating,
        "note": entry.note,
        "model_name": entry.model_name,
        "model_sha256": entry.model_sha256,
        "seed": entry.seed,
        "device": entry.device,
        "dtype": entry.dtype,
        "duration_s": entry.duration_s,
        "parameters": entry.request,
        "input_names": [item.original_name for item in entry.inputs],
        "input_sha256": [item.sha256 for item in entry.inputs],
        "output_file": output_file,
        "output_sha256": output.sha256,
    }


def _csv_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    """Structured cells (parameters, input lists) are JSON, so the CSV stays unambiguous."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=AUDIT_FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_cell(value) for key, value in row.items()})
    return text.getvalue().encode()


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return "" if value is None else value
