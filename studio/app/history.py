"""The review history: every run Studio makes, its inputs and outputs, and a person's verdict on it.

Layout under the data directory:

    history.sqlite                        runs, inputs, outputs (schema in history_schema)
    inputs/<sha[:2]>/<sha256><ext>        input images, stored once per distinct content
    outputs/<YYYY-MM>/<entry_id>-<n><ext> results; the month is the run's start month (UTC)
    thumbs/<entry_id>-<n>.jpg             256 px previews for the history panel
    locks/<pid>-<token>.lock              one per open store: which processes are alive

The one rule: a row never points to a file that is missing or incomplete. Files are complete
(written to a temporary name, flushed, renamed) before the row that names them commits; files
are deleted only after the rows naming them are gone. A crash in between leaves at most files no
row names, and opening the store removes those, and fails the runs of processes that died.

Threads: one SQLite connection guarded by a re-entrant lock serves the GUI and worker threads.
Writes are short (hashing, copying outputs and thumbnails happen outside them), and a single
connection can be closed from any thread, which one-connection-per-thread cannot.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from studio.app.history_export import export_entries
from studio.app.history_files import (
    copy_hashing,
    file_facts,
    fsync_path,
    remove_quietly,
    sha256_of,
    temp_path_for,
    write_thumbnail,
)
from studio.app.history_locks import OwnerLock, new_owner_id, owner_alive, remove_stale_locks
from studio.app.history_model import (
    INTERRUPTED,
    Entry,
    EntryInput,
    EntryNotFound,
    EntryNotRunning,
    EntryOutput,
    ExportReport,
    HistoryError,
    Review,
    Status,
)
from studio.app.history_schema import connect, migrate
from studio.paths import user_dirs

__all__ = [
    "INTERRUPTED",
    "Entry",
    "EntryInput",
    "EntryNotFound",
    "EntryNotRunning",
    "EntryOutput",
    "ExportReport",
    "HistoryError",
    "HistoryStore",
    "Review",
    "Status",
]

_log = logging.getLogger(__name__)

_ENTRY_COLUMNS = (
    "id, tool, request_json, status, review, rating, note, model_name, model_sha256, seed, "
    "device, dtype, duration_s, error, parent_id, owner, created_at, finished_at, facts_json"
)
_ENTRY_FIELDS = tuple(name.strip() for name in _ENTRY_COLUMNS.split(","))
_RUN_FACTS = ("model_name", "model_sha256", "seed", "device", "dtype", "duration_s")
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,16}")  # long enough for .safetensors
_ENTRY_FILE = re.compile(r"\.?(\d+)-")  # outputs, thumbs and their temporaries start '<id>-'
_ID_CHUNK = 500  # stays far below SQLite's bound-parameter limit
_SEARCHED = (
    "tool || char(10) || note || char(10) || coalesce(model_name, '') || char(10) || request_json"
)


class _Cleanup(NamedTuple):
    """Files to delete once the commit that stopped naming them has succeeded."""

    entry_id: int
    created_at: str
    blobs: tuple[str, ...] = ()  # input copies to delete unless another entry still uses them


class HistoryStore:
    """The history of one data directory. Open it once per process; close it when done."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        for name in ("inputs", "outputs", "thumbs"):
            (self.data_dir / name).mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._depth = 0
        self._after_commit: list[_Cleanup] = []
        self._db: sqlite3.Connection | None = None
        self._owner = OwnerLock(self._locks_dir, new_owner_id())
        try:
            self._db = connect(self.data_dir / "history.sqlite")
            self._db.create_function("studio_fold", 1, _fold, deterministic=True)
            migrate(self._db)
            self._recover()
        except BaseException:
            if self._db is not None:
                self._db.close()
            self._owner.release()
            raise

    @classmethod
    def open_default(cls) -> HistoryStore:
        return cls(user_dirs().data)

    def close(self) -> None:
        """Runs of this store still going are failed as interrupted: the worker is stopping."""
        with self._lock:
            if self._db is None:
                return
            try:
                with self.transaction() as db:
                    rows = db.execute(
                        "SELECT id, created_at FROM entries WHERE status = 'running' AND owner = ?",
                        (self._owner.owner,),
                    ).fetchall()
                    for entry_id, created_at in rows:
                        self._finish(db, entry_id, created_at, Status.FAILED, INTERRUPTED, {})
            finally:
                self._db.close()
                self._db = None
                self._owner.release()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Group store calls into one atomic commit (nested calls become savepoints). File
        deletions that depend on the commit wait until the outermost one succeeds."""
        with self._lock:
            db = self._connection()
            savepoint = f"s{self._depth}" if self._depth else None
            db.execute(f"SAVEPOINT {savepoint}" if savepoint else "BEGIN IMMEDIATE")
            pending_mark = len(self._after_commit)
            self._depth += 1
            try:
                yield db
            except BaseException:
                self._depth -= 1
                del self._after_commit[pending_mark:]
                if savepoint and db.in_transaction:
                    db.execute(f"ROLLBACK TO {savepoint}")
                    db.execute(f"RELEASE {savepoint}")
                elif db.in_transaction:  # SQLite may have rolled back already (disk full)
                    db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if savepoint:
                db.execute(f"RELEASE {savepoint}")
                return
            try:
                db.execute("COMMIT")
            except BaseException:
                self._after_commit.clear()
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            self._run_after_commit()

    # -- runs ---------------------------------------------------------------------------------

    def start(
        self,
        tool: str,
        request: dict[str, Any],
        inputs: Sequence[Path] = (),
        parent_id: int | None = None,
    ) -> int:
        """Record a run before it computes anything, with copies of its inputs, so the history
        shows it (running) and a crash is remembered. Without `parent_id`, an input that is an
        earlier run's output makes that run the parent (an upscale of a generated image)."""
        if not tool:
            raise ValueError("a history entry needs a tool name")
        request_json = _to_json(request, "request")
        sources = [Path(path) for path in inputs]
        for source in sources:
            if not source.is_file():
                raise FileNotFoundError(f"input file {source} does not exist")
        hashes = [sha256_of(source) for source in sources]  # outside the lock: may be slow
        staged = [self._stage_input(s, sha) for s, sha in zip(sources, hashes, strict=True)]
        try:
            return self._start_with(tool, request_json, sources, staged, parent_id)
        finally:
            for _sha, temp in staged:
                if temp is not None:
                    temp.unlink(missing_ok=True)  # not needed: the blob was there already

    def _start_with(
        self,
        tool: str,
        request_json: str,
        sources: list[Path],
        staged: list[tuple[str, Path | None]],
        parent_id: int | None,
    ) -> int:
        with self.transaction() as db:
            stored = [
                self._store_input(db, source, sha, temp)
                for source, (sha, temp) in zip(sources, staged, strict=True)
            ]
            if parent_id is None:
                parent_id = self._parent_of(db, [sha for sha, _ in stored])
            elif not self._exists(db, parent_id):
                raise EntryNotFound(parent_id)
            entry_id = db.execute(
                "INSERT INTO entries (tool, request_json, parent_id, owner, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (tool, request_json, parent_id, self._owner.owner, _now()),
            ).lastrowid
            db.executemany(
                "INSERT INTO entry_inputs (entry_id, position, sha256, path, original_name) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (entry_id, position, sha, path, source.name)
                    for position, (source, (sha, path)) in enumerate(
                        zip(sources, stored, strict=True)
                    )
                ],
            )
        return entry_id

    def output_path(self, entry_id: int, position: int, suffix: str) -> Path:
        """Where output `position` of a running entry goes. Write it atomically: to a temporary
        name in the same folder that starts with '<entry_id>-' or '.<entry_id>-' (for example
        `history_files.temp_path_for(path)`), then `os.replace` onto this path."""
        if position < 0:
            raise ValueError(f"output position must be 0 or more, got {position}")
        suffix = _checked_suffix(suffix)
        with self._lock:
            created_at = self._running_created_at(self._connection(), entry_id)
        path = self._output_file(entry_id, created_at, position, suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def complete(
        self,
        entry_id: int,
        outputs: Sequence[Path],
        *,
        model_name: str | None = None,
        model_sha256: str | None = None,
        seed: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        duration_s: float | None = None,
        facts: dict[str, Any] | None = None,
    ) -> Entry:
        """Record a finished run. `outputs[n]` must be the file written at `output_path(entry_id,
        n, ...)`. Hashes, sizes, dimensions and thumbnails are made first; the rows and the status
        change then commit together. Without `duration_s`, the time since start() is recorded.
        On an error the entry stays running: call fail()."""
        run_facts = {
            "model_name": model_name,
            "model_sha256": model_sha256,
            "seed": seed,
            "device": device,
            "dtype": dtype,
            "duration_s": duration_s,
        }
        _check_run_facts(run_facts)
        extra_json = _to_json(facts or {}, "facts")
        with self._lock:
            created_at = self._running_created_at(self._connection(), entry_id)
        thumbs: list[Path] = []
        try:
            rows = [
                self._describe_output(entry_id, created_at, n, Path(path), thumbs)
                for n, path in enumerate(outputs)
            ]
            fsync_path(self._thumbs_dir)
            fsync_path(self._output_file(entry_id, created_at, 0, "").parent)
            with self.transaction() as db:
                self._running_created_at(db, entry_id)  # cancelled meanwhile from another thread?
                db.executemany(
                    "INSERT INTO entry_outputs (entry_id, position, path, sha256, size, width, "
                    "height, thumb) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._finish(db, entry_id, created_at, Status.DONE, None, run_facts, extra_json)
        except BaseException:
            for thumb in thumbs:
                remove_quietly(thumb)
            if self._status(entry_id) in (Status.FAILED, Status.CANCELLED):
                self._remove_entry_files({entry_id: created_at})  # renamed in after a cancel
            raise
        return self.get(entry_id)

    def fail(self, entry_id: int, error: str, **facts: Any) -> None:
        """Record why a run failed and remove any outputs it had written. Keyword facts named like
        complete()'s (model_name, seed, device, dtype, duration_s, ...) fill those columns; any
        others are kept with the entry's extra facts."""
        run_facts = {key: facts.pop(key) for key in _RUN_FACTS if key in facts}
        _check_run_facts(run_facts)
        extra_json = _to_json(facts, "facts")
        with self.transaction() as db:
            created_at = self._running_created_at(db, entry_id)
            self._finish(db, entry_id, created_at, Status.FAILED, error, run_facts, extra_json)

    def cancel(self, entry_id: int) -> None:
        """The user stopped the run: keep the record, remove any outputs it had written."""
        with self.transaction() as db:
            created_at = self._running_created_at(db, entry_id)
            self._finish(db, entry_id, created_at, Status.CANCELLED, None, {})

    # -- reading ------------------------------------------------------------------------------

    def get(self, entry_id: int) -> Entry:
        with self._snapshot() as db:
            rows = db.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE id = ?", (entry_id,)
            ).fetchall()
            if not rows:
                raise EntryNotFound(entry_id)
            return self._assemble(db, rows)[0]

    def query(
        self,
        *,
        tool: str | None = None,
        review: Review | str | None = None,
        status: Status | str | None = None,
        text: str | None = None,
        offset: int = 0,
        limit: int = 60,
    ) -> list[Entry]:
        """One page of the history panel, newest first. `text` matches note, model name, tool and
        parameters, ignoring case (Unicode case folding, not just ASCII)."""
        if offset < 0 or limit < 1:
            raise ValueError(f"need offset >= 0 and limit >= 1, got offset={offset} limit={limit}")
        where, params = _filters(tool, review, status, text)
        with self._snapshot() as db:
            rows = db.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries {where} ORDER BY id DESC LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
            return self._assemble(db, rows)

    def count(
        self,
        *,
        tool: str | None = None,
        review: Review | str | None = None,
        status: Status | str | None = None,
        text: str | None = None,
    ) -> int:
        where, params = _filters(tool, review, status, text)
        with self._lock:
            return (
                self._connection()
                .execute(f"SELECT count(*) FROM entries {where}", params)
                .fetchone()[0]
            )

    def siblings(self, entry_id: int) -> list[Entry]:
        """Runs on the same first input image, this one included, newest first: the candidates
        for a side-by-side comparison of models or settings. Empty for runs without inputs."""
        columns = ", ".join(f"e.{name}" for name in _ENTRY_FIELDS)
        with self._snapshot() as db:
            if not self._exists(db, entry_id):
                raise EntryNotFound(entry_id)
            rows = db.execute(
                f"SELECT {columns} FROM entries e "
                "JOIN entry_inputs i ON i.entry_id = e.id AND i.position = 0 "
                "WHERE i.sha256 = (SELECT sha256 FROM entry_inputs "
                "                  WHERE entry_id = ? AND position = 0) "
                "ORDER BY e.id DESC",
                (entry_id,),
            ).fetchall()
            return self._assemble(db, rows)

    # -- review -------------------------------------------------------------------------------

    def set_review(self, entry_id: int, review: Review | str) -> None:
        """Only a finished run can be approved: approval is what lets a file leave the studio."""
        review = Review(review)
        with self.transaction() as db:
            row = db.execute("SELECT status FROM entries WHERE id = ?", (entry_id,)).fetchone()
            if row is None:
                raise EntryNotFound(entry_id)
            if review is Review.APPROVED and row[0] != Status.DONE.value:
                raise HistoryError(
                    f"entry {entry_id} is {row[0]}; only a finished run can be approved"
                )
            db.execute("UPDATE entries SET review = ? WHERE id = ?", (review.value, entry_id))

    def set_rating(self, entry_id: int, stars: int) -> None:
        if isinstance(stars, bool) or not isinstance(stars, int) or not 0 <= stars <= 5:
            raise ValueError(f"a rating is 0 to 5 stars, got {stars!r}")
        self._update(entry_id, "rating", stars)

    def set_note(self, entry_id: int, note: str) -> None:
        if not isinstance(note, str):
            raise TypeError(f"a note is text, got {type(note).__name__}")
        self._update(entry_id, "note", note)

    def delete(self, entry_id: int) -> None:
        """Forget a finished run: its row, outputs and thumbnails, and the input copies no other
        run uses. Its children keep their files and lose only the link to it."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT status, created_at FROM entries WHERE id = ?", (entry_id,)
            ).fetchone()
            if row is None:
                raise EntryNotFound(entry_id)
            status, created_at = row
            if status == Status.RUNNING.value:
                raise EntryNotRunning(f"entry {entry_id} is still running; cancel it first")
            blobs = [
                path
                for (path,) in db.execute(
                    "SELECT path FROM entry_inputs WHERE entry_id = ?", (entry_id,)
                )
            ]
            db.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
            self._after_commit.append(_Cleanup(entry_id, created_at, tuple(blobs)))

    # -- export -------------------------------------------------------------------------------

    def export_approved(self, dest_dir: Path, ids: Iterable[int] | None = None) -> ExportReport:
        """Copy approved outputs to `dest_dir` as '<entry_id>-<tool>-<n><ext>' with audit.json
        and audit.csv. With `ids`, only those entries; ids that are not approved and finished are
        left out and listed in the report's `skipped`."""
        with self._snapshot() as db:
            approved = [
                entry_id
                for (entry_id,) in db.execute(
                    "SELECT id FROM entries WHERE review = 'approved' AND status = 'done' "
                    "ORDER BY id"
                )
            ]
            wanted = approved
            skipped: list[int] = []
            if ids is not None:
                requested = sorted(set(ids))
                chosen = set(approved)
                wanted = [entry_id for entry_id in requested if entry_id in chosen]
                skipped = [entry_id for entry_id in requested if entry_id not in chosen]
            entries = self._load(db, wanted)
        return export_entries(entries, Path(dest_dir), skipped)

    # -- internals: files ---------------------------------------------------------------------

    @property
    def _locks_dir(self) -> Path:
        return self.data_dir / "locks"

    @property
    def _thumbs_dir(self) -> Path:
        return self.data_dir / "thumbs"

    def _output_file(self, entry_id: int, created_at: str, position: int, suffix: str) -> Path:
        return self.data_dir / "outputs" / created_at[:7] / f"{entry_id}-{position}{suffix}"

    def _relative(self, path: Path) -> str:
        return PurePosixPath(path.relative_to(self.data_dir)).as_posix()

    def _stage_input(self, source: Path, sha: str) -> tuple[str, Path | None]:
        """Copy an input beside where its blob goes, before taking the write lock: a large TIFF
        must not hold the store while other processes wait. None when a blob is already there.
        Returns the sha of the bytes actually copied (the source may have changed)."""
        if self._blob_for(sha, source).is_file():
            return sha, None
        folder = self._blob_for(sha, source).parent
        folder.mkdir(parents=True, exist_ok=True)
        temp, copied_sha = copy_hashing(source, folder)
        if copied_sha != sha:  # changed since it was hashed: name it by what we copied
            target = self._blob_for(copied_sha, source)
            target.parent.mkdir(parents=True, exist_ok=True)
            moved = temp_path_for(target)
            os.replace(temp, moved)
            temp = moved
        return copied_sha, temp

    def _blob_for(self, sha: str, source: Path) -> Path:
        suffix = source.suffix.lower() if _SUFFIX.fullmatch(source.suffix) else ""
        return self.data_dir / "inputs" / sha[:2] / f"{sha}{suffix}"

    def _store_input(
        self, db: sqlite3.Connection, source: Path, sha: str, staged: Path | None
    ) -> tuple[str, str]:
        """Reuse the stored copy of these bytes or put the staged copy in place. Runs inside the
        write transaction: a blob is only ever deleted under the same lock, after checking no row
        uses it. A staged copy that went missing (another process swept it) is copied again."""
        row = db.execute(
            "SELECT path FROM entry_inputs WHERE sha256 = ? LIMIT 1", (sha,)
        ).fetchone()
        if row is not None and (self.data_dir / row[0]).is_file():
            return sha, row[0]
        blob = self._blob_for(sha, source)
        if blob.is_file():  # left by a crash before its row committed; complete by construction
            return sha, self._relative(blob)
        blob.parent.mkdir(parents=True, exist_ok=True)
        try:
            if staged is None:
                raise FileNotFoundError(blob)
            os.replace(staged, blob)
        except FileNotFoundError:
            temp, copied_sha = copy_hashing(source, blob.parent)
            if copied_sha != sha:
                sha = copied_sha
                blob = self._blob_for(sha, source)
                blob.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, blob)
        fsync_path(blob.parent)
        return sha, self._relative(blob)

    def _describe_output(
        self, entry_id: int, created_at: str, position: int, path: Path, thumbs: list[Path]
    ) -> tuple[Any, ...]:
        expected = self._output_file(entry_id, created_at, position, path.suffix)
        if path.resolve() != expected.resolve():
            raise ValueError(
                f"output {position} of entry {entry_id} is {path}; write it to "
                f"output_path({entry_id}, {position}, {path.suffix!r}) = {expected}"
            )
        if not path.is_file():
            raise FileNotFoundError(
                f"output {position} of entry {entry_id} was not written: {path}"
            )
        fsync_path(path)
        facts = file_facts(path)
        thumb = self._thumbs_dir / f"{entry_id}-{position}.jpg"
        thumb_rel = None
        if write_thumbnail(path, thumb):
            thumbs.append(thumb)
            thumb_rel = self._relative(thumb)
        return (
            entry_id,
            position,
            self._relative(path),
            facts.sha256,
            facts.size,
            facts.width,
            facts.height,
            thumb_rel,
        )

    def _remove_entry_files(self, created: dict[int, str]) -> None:
        """Delete the outputs, thumbnails and temporaries of entries {id: created_at}, listing
        each folder once (closing with many unfinished runs must not glob per run)."""
        folders: dict[Path, set[int]] = {self._thumbs_dir: set(created)}
        for entry_id, created_at in created.items():
            month = self._output_file(entry_id, created_at, 0, "").parent
            folders.setdefault(month, set()).add(entry_id)
        for folder, ids in folders.items():
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                match = _ENTRY_FILE.match(path.name)
                if match and int(match.group(1)) in ids:
                    remove_quietly(path)

    def _collect_blobs(self, paths: Iterable[str]) -> None:
        """Delete input copies no entry uses any more, under the write lock so that no start()
        can pick one up in between."""
        with self.transaction() as db:
            for path in set(paths):
                used = db.execute("SELECT 1 FROM entry_inputs WHERE path = ? LIMIT 1", (path,))
                if used.fetchone() is None:
                    remove_quietly(self.data_dir / path)

    def _run_after_commit(self) -> None:
        cleanups, self._after_commit = self._after_commit, []
        if not cleanups:
            return
        try:
            self._remove_entry_files({item.entry_id: item.created_at for item in cleanups})
            blobs = [path for item in cleanups for path in item.blobs]
            if blobs:
                self._collect_blobs(blobs)
        except (OSError, sqlite3.Error) as error:  # leftovers only; the next open removes them
            _log.warning("history cleanup after commit failed: %s", error)

    # -- internals: recovery ------------------------------------------------------------------

    def _recover(self) -> None:
        """Fail the runs of Studio processes that died, then remove files no row names. Runs of
        other live processes (a CLI next to the GUI) and their files are left alone."""
        with self.transaction() as db:
            owners = [
                owner
                for (owner,) in db.execute(
                    "SELECT DISTINCT owner FROM entries WHERE status = 'running'"
                )
            ]
            now = _now()
            for owner in owners:
                if owner is not None and owner_alive(self._locks_dir, owner):
                    continue
                db.execute(
                    "UPDATE entries SET status = 'failed', error = ?, finished_at = ? "
                    "WHERE status = 'running' AND owner IS ?",
                    (INTERRUPTED, now, owner),
                )
            self._sweep(db)
        remove_stale_locks(self._locks_dir, self._owner.owner)

    def _sweep(self, db: sqlite3.Connection) -> None:
        running = {
            entry_id
            for (entry_id,) in db.execute("SELECT id FROM entries WHERE status = 'running'")
        }
        outputs = {path for (path,) in db.execute("SELECT path FROM entry_outputs")}
        thumbs = {
            path
            for (path,) in db.execute("SELECT thumb FROM entry_outputs WHERE thumb IS NOT NULL")
        }
        inputs = {path for (path,) in db.execute("SELECT DISTINCT path FROM entry_inputs")}
        for folder, named in (("outputs", outputs), ("thumbs", thumbs), ("inputs", inputs)):
            for path in _files_under(self.data_dir / folder):
                if self._relative(path) in named:
                    continue
                match = _ENTRY_FILE.match(path.name)
                if folder != "inputs" and match and int(match.group(1)) in running:
                    continue  # a live run writing its outputs
                _log.info("removing leftover history file %s", path)
                remove_quietly(path)

    # -- internals: rows ----------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise HistoryError("the history store is closed")
        return self._db

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A consistent read over several statements (another process may write in between)."""
        with self._lock:
            db = self._connection()
            if self._depth:
                yield db
                return
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("COMMIT")

    def _status(self, entry_id: int) -> Status | None:
        """None when the entry or the store is gone (used while already handling an error)."""
        with self._lock:
            if self._db is None:
                return None
            row = self._db.execute("SELECT status FROM entries WHERE id = ?", (entry_id,))
            found = row.fetchone()
        return Status(found[0]) if found else None

    def _exists(self, db: sqlite3.Connection, entry_id: int) -> bool:
        return db.execute("SELECT 1 FROM entries WHERE id = ?", (entry_id,)).fetchone() is not None

    def _running_created_at(self, db: sqlite3.Connection, entry_id: int) -> str:
        row = db.execute(
            "SELECT status, created_at FROM entries WHERE id = ?", (entry_id,)
        ).fetchone()
        if row is None:
            raise EntryNotFound(entry_id)
        if row[0] != Status.RUNNING.value:
            raise EntryNotRunning(f"entry {entry_id} is already {row[0]}")
        return row[1]

    def _parent_of(self, db: sqlite3.Connection, input_hashes: Sequence[str]) -> int | None:
        for sha in input_hashes:
            row = db.execute(
                "SELECT max(entry_id) FROM entry_outputs WHERE sha256 = ?", (sha,)
            ).fetchone()
            if row[0] is not None:
                return row[0]
        return None

    def _finish(
        self,
        db: sqlite3.Connection,
        entry_id: int,
        created_at: str,
        status: Status,
        error: str | None,
        run_facts: dict[str, Any],
        extra_json: str = "{}",
    ) -> None:
        facts = {key: value for key, value in run_facts.items() if value is not None}
        if facts.get("duration_s") is None:
            started = datetime.fromisoformat(created_at)
            facts["duration_s"] = round((datetime.now(timezone.utc) - started).total_seconds(), 3)
        old = db.execute("SELECT facts_json FROM entries WHERE id = ?", (entry_id,)).fetchone()[0]
        merged = {**json.loads(old), **json.loads(extra_json)}
        assignments = "".join(f", {key} = ?" for key in facts)
        db.execute(
            f"UPDATE entries SET status = ?, error = ?, finished_at = ?, facts_json = ?"
            f"{assignments} WHERE id = ?",
            (status.value, error, _now(), _to_json(merged, "facts"), *facts.values(), entry_id),
        )
        if status is not Status.DONE:
            self._after_commit.append(_Cleanup(entry_id, created_at))

    def _update(self, entry_id: int, column: str, value: Any) -> None:
        with self.transaction() as db:
            cursor = db.execute(f"UPDATE entries SET {column} = ? WHERE id = ?", (value, entry_id))
            if cursor.rowcount == 0:
                raise EntryNotFound(entry_id)

    def _load(self, db: sqlite3.Connection, ids: Sequence[int]) -> list[Entry]:
        entries: list[Entry] = []
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE id IN ({marks}) ORDER BY id", chunk
            ).fetchall()
            entries.extend(self._assemble(db, rows))
        return entries

    def _assemble(self, db: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> list[Entry]:
        """Entries for a page of rows, with their inputs and outputs in one query each."""
        ids = [row[0] for row in rows]
        inputs: dict[int, list[EntryInput]] = {entry_id: [] for entry_id in ids}
        outputs: dict[int, list[EntryOutput]] = {entry_id: [] for entry_id in ids}
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            marks = ",".join("?" * len(chunk))
            for entry_id, position, sha, path, name in db.execute(
                "SELECT entry_id, position, sha256, path, original_name FROM entry_inputs "
                f"WHERE entry_id IN ({marks}) ORDER BY entry_id, position",
                chunk,
            ):
                inputs[entry_id].append(EntryInput(position, sha, self.data_dir / path, name))
            for entry_id, position, path, sha, size, width, height, thumb in db.execute(
                "SELECT entry_id, position, path, sha256, size, width, height, thumb "
                f"FROM entry_outputs WHERE entry_id IN ({marks}) ORDER BY entry_id, position",
                chunk,
            ):
                outputs[entry_id].append(
                    EntryOutput(
                        position,
                        self.data_dir / path,
                        sha,
                        size,
                        width,
                        height,
                        self.data_dir / thumb if thumb else None,
                    )
                )
        return [_entry(row, tuple(inputs[row[0]]), tuple(outputs[row[0]])) for row in rows]


def _entry(
    row: tuple[Any, ...], inputs: tuple[EntryInput, ...], outputs: tuple[EntryOutput, ...]
) -> Entry:
    values = dict(zip(_ENTRY_FIELDS, row, strict=True))
    request = json.loads(values.pop("request_json"))
    facts = json.loads(values.pop("facts_json"))
    finished_at = values.pop("finished_at")
    values["status"] = Status(values["status"])
    values["review"] = Review(values["review"])
    values["created_at"] = datetime.fromisoformat(values["created_at"])
    return Entry(
        **values,
        request=request,
        finished_at=datetime.fromisoformat(finished_at) if finished_at else None,
        facts=facts,
        inputs=inputs,
        outputs=outputs,
    )


def _filters(
    tool: str | None,
    review: Review | str | None,
    status: Status | str | None,
    text: str | None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if tool is not None:
        clauses.append("tool = ?")
        params.append(tool)
    if review is not None:
        clauses.append("review = ?")
        params.append(Review(review).value)
    if status is not None:
        clauses.append("status = ?")
        params.append(Status(status).value)
    if text:
        clauses.append(f"instr(studio_fold({_SEARCHED}), ?) > 0")
        params.append(text.casefold())
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


def _files_under(folder: Path) -> Iterator[Path]:
    for root, _dirs, names in os.walk(folder):
        for name in names:
            yield Path(root) / name


def _fold(value: str | None) -> str | None:
    return value.casefold() if value is not None else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"the {what} must be plain JSON data (dict, list, str, number): {error}"
        ) from None


def _checked_suffix(suffix: str) -> str:
    if not _SUFFIX.fullmatch(suffix):
        raise ValueError(f"an output suffix looks like '.png', got {suffix!r}")
    return suffix.lower()


def _check_run_facts(facts: dict[str, Any]) -> None:
    seed = facts.get("seed")
    if seed is not None and not -(2**63) <= seed < 2**63:
        raise ValueError(f"seed {seed} does not fit in 64 bits (SQLite's integer)")
