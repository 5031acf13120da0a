"""The outbox file's schema, and opening it safely.

Decisions:

- ``PRAGMA application_id`` marks the file as ours: a foreign SQLite file is
  refused before anything is written to it (not even switched to WAL), and
  ``user_version`` is the schema version; a newer one is refused, not
  migrated down. A garbage file fails SQLite's own header check.
- The file is created owner-only (0600) before SQLite opens it, because the
  entries hold user data; SQLite gives the ``-wal`` and ``-shm`` files the
  main file's permissions.
- The schema is created under the write lock, so two processes opening a new
  file at once create it once.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import time
from collections.abc import Iterator
from typing import Final
from urllib.parse import quote

from autoplay_obs.errors import OutboxCorruptError, OutboxTimeoutError, OutboxWriteError

__all__ = ["APPLICATION_ID", "MAX_TEXT", "SCHEMA_VERSION", "OutboxConnection", "connect", "write"]

APPLICATION_ID: Final = 0x4150_4F42  # "APOB"
SCHEMA_VERSION: Final = 1
WAL_SIZE_LIMIT: Final = 8 * 1024 * 1024
MAX_TEXT: Final = 1000  # an error or park reason is kept to this many characters

# Small columns first and the blobs last: a row whose snapshot spills to overflow pages is
# filtered and counted without reading them. The indexes cover every scan (claim, bounds,
# status), so no scan reads a snapshot.
_SCHEMA: Final = """
CREATE TABLE entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    queued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'parked')),
    claimed_by TEXT,
    lease_until REAL,
    traceparent TEXT,
    tracestate TEXT,
    last_error TEXT,
    park_reason TEXT,
    summary TEXT,
    snapshot BLOB NOT NULL,
    UNIQUE (product_id, user_id, session_id)
);
CREATE INDEX entries_by_user ON entries (product_id, user_id, state, id);
CREATE INDEX entries_by_age ON entries (queued_at, state, size);
CREATE INDEX entries_leased ON entries (lease_until, product_id, user_id) WHERE lease_until IS NOT NULL;
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE settings (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""


def connect(path: str, *, timeout_s: float, synchronous: str, create: bool) -> OutboxConnection:
    """Open (or create) the outbox file in WAL mode; refuse a file that is not an outbox."""
    if create:
        # Created here, owner-only, because the entries hold user data; SQLite gives the -wal
        # and -shm files the main file's permissions.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    uri = f"file:{quote(os.path.abspath(path))}?mode={'rwc' if create else 'rw'}"
    conn = sqlite3.connect(
        uri,
        uri=True,
        timeout=timeout_s,
        isolation_level=None,
        check_same_thread=False,
        factory=OutboxConnection,
    )
    try:
        _check_identity(conn, path)  # before WAL: a foreign file is not converted
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OutboxWriteError(f"outbox {path} cannot use WAL mode (got {mode!r}); use a local disk")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")  # truncate the WAL after checkpoints
        with write(conn):
            if _check_identity(conn, path):  # again, under the write lock: another process may have won
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.close()
        raise
    return conn


def _check_identity(conn: sqlite3.Connection, path: str) -> bool:
    """True when the file is empty (a new outbox); raise when it is someone else's or newer."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if app_id == 0 and tables == 0:
        return True
    if app_id != APPLICATION_ID:
        raise OutboxCorruptError(f"{path} is an SQLite file but not an autoplay outbox; left untouched")
    if version > SCHEMA_VERSION:
        raise OutboxCorruptError(
            f"outbox {path} has schema {version}, newer than {SCHEMA_VERSION}; left untouched"
        )
    return False


class OutboxConnection(sqlite3.Connection):
    """A connection that knows the deadline (``time.monotonic``) of the call it runs."""

    deadline: float = math.inf


@contextlib.contextmanager
def write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction; rolled back, not committed, once the call's caller gave up."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        if time.monotonic() > getattr(conn, "deadline", math.inf):
            raise OutboxTimeoutError(
                "outbox call ran past its timeout before committing; nothing was written"
            )
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
