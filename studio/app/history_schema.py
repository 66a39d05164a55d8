"""The history database: connection settings and numbered schema migrations.

Migrations are SQL scripts applied in order, each inside one write transaction together with
`PRAGMA user_version = <its number>`, so a crash mid-migration leaves the previous version intact
and two processes opening an old store at once migrate it exactly once. Never edit a released
migration; append a new one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

BUSY_TIMEOUT_MS = 10_000

MIGRATIONS: tuple[str, ...] = (
    # 1: entries with their inputs (content-addressed blobs) and outputs.
    """
    CREATE TABLE entries (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: ids name output files
        tool          TEXT NOT NULL,
        request_json  TEXT NOT NULL,
        status        TEXT NOT NULL DEFAULT 'running'
                      CHECK (status IN ('running', 'done', 'failed', 'cancelled')),
        review        TEXT NOT NULL DEFAULT 'pending'
                      CHECK (review IN ('pending', 'approved', 'rejected')),
        rating        INTEGER NOT NULL DEFAULT 0 CHECK (rating BETWEEN 0 AND 5),
        note          TEXT NOT NULL DEFAULT '',
        model_name    TEXT,
        model_sha256  TEXT,
        seed          INTEGER,
        device        TEXT,
        dtype         TEXT,
        duration_s    REAL,
        error         TEXT,
        parent_id     INTEGER REFERENCES entries (id) ON DELETE SET NULL,
        owner         TEXT,  -- '<pid>-<token>' of the store that runs it (see history_locks)
        created_at    TEXT NOT NULL,  -- ISO 8601, UTC
        finished_at   TEXT,
        facts_json    TEXT NOT NULL DEFAULT '{}'
    );
    -- Newest first is ORDER BY id DESC (ids only grow); each filter index ends in the rowid,
    -- so a filtered page is an index range scan in id order.
    CREATE INDEX entries_tool ON entries (tool);
    CREATE INDEX entries_review ON entries (review);
    CREATE INDEX entries_status ON entries (status);
    CREATE INDEX entries_parent ON entries (parent_id);

    CREATE TABLE entry_inputs (
        entry_id      INTEGER NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
        position      INTEGER NOT NULL,
        sha256        TEXT NOT NULL,
        path          TEXT NOT NULL,  -- relative to the data directory, '/' separated
        original_name TEXT NOT NULL,
        PRIMARY KEY (entry_id, position)
    ) WITHOUT ROWID;
    CREATE INDEX entry_inputs_sha256 ON entry_inputs (sha256, position);
    CREATE INDEX entry_inputs_path ON entry_inputs (path);

    CREATE TABLE entry_outputs (
        entry_id      INTEGER NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
        position      INTEGER NOT NULL,
        path          TEXT NOT NULL UNIQUE,
        sha256        TEXT NOT NULL,
        size          INTEGER NOT NULL,
        width         INTEGER,
        height        INTEGER,
        thumb         TEXT,
        PRIMARY KEY (entry_id, position)
    ) WITHOUT ROWID;
    CREATE INDEX entry_outputs_sha256 ON entry_outputs (sha256);
    """,
)


class SchemaTooNew(RuntimeError):
    """The store was written by a newer Studio; opening it here could corrupt it."""


def connect(path: Path) -> sqlite3.Connection:
    """One connection shared by the GUI and worker threads (the store serialises access with a
    lock). Autocommit mode: the store issues BEGIN/COMMIT itself, so transactions are explicit.

    WAL lets another process (the CLI) read while this one writes. synchronous=NORMAL: in WAL mode
    a commit survives any application crash, SIGKILL included; only an OS crash or power cut can
    lose the last few commits, never corrupt the database, and the files rows point to are
    fsynced before their rows commit. FULL would add an fsync to every rating click for no gain
    against the failure we must survive most: Studio itself dying mid-run.
    """
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


def schema_version(connection: sqlite3.Connection) -> int:
    return connection.execute("PRAGMA user_version").fetchone()[0]


def migrate(connection: sqlite3.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the schema up to `len(migrations)`; returns the version it found."""
    connection.execute("BEGIN IMMEDIATE")  # re-read the version under the write lock
    try:
        found = schema_version(connection)
        if found > len(migrations):
            raise SchemaTooNew(
                f"the history database has schema version {found}, but this Studio knows only "
                f"up to {len(migrations)}; update Studio to open it"
            )
        for number, script in enumerate(migrations[found:], start=found + 1):
            for statement in _statements(script):
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {number}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return found


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (executescript would commit our open transaction)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip() and not _only_comments(pending):
        raise ValueError(f"incomplete SQL statement in migration: {pending.strip()[:80]}")


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())
