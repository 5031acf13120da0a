"""The outbox's operations: one blocking function each, on an open connection.

Decisions:

- Entries are unique per (product, user, session), so queuing a session
  again keeps the first copy. ``id`` is AUTOINCREMENT: it follows commit
  order across every process sharing the file and is never reused, so an ack
  for an old id can never hit a newer entry.
- Every write is one ``BEGIN IMMEDIATE`` transaction: the write lock is taken
  up front, so two processes never deadlock upgrading a read to a write (the
  busy timeout then does its job), and a crash leaves all of a put or none.
- Per-user order: a claim hands out only a user's oldest pending entry, and
  none of a user's entries while one of them is leased, so a user's sessions
  replay strictly in queue order whatever fails. Parked entries do not block.
- Bounds are enforced inside the put's transaction, oldest first by id,
  whatever the entry's state; each drop bumps a persisted counter.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Sequence
from typing import Final

from autoplay_obs.errors import OutboxWriteError
from autoplay_obs.storage._outbox_schema import MAX_TEXT, write
from autoplay_obs.storage._outbox_types import (
    DROP_REASONS,
    DropReason,
    OutboxEntry,
    OutboxItem,
    OutboxStatus,
    PutResult,
)

__all__ = [
    "Limits",
    "ack",
    "claim",
    "expire",
    "park",
    "pending_for",
    "purge_user",
    "put",
    "record_settings",
    "release",
    "status",
]

_COLUMNS: Final = (
    "id, product_id, user_id, session_id, snapshot, summary, queued_at, attempts, state,"
    " traceparent, tracestate, last_error, park_reason, claimed_by, lease_until"
)
# Each user's oldest pending entry, and the users with an entry leased (being replayed, or
# released with a retry delay): both from an index alone.
_HEADS: Final = (
    "SELECT product_id, user_id, min(id) FROM entries WHERE state = 'pending' GROUP BY product_id, user_id"
)
_BUSY: Final = "SELECT product_id, user_id FROM entries WHERE lease_until > ?"
# Not leased by another claimer right now: ours, free, or with a lapsed lease.
_NOT_HELD: Final = "(claimed_by IS NULL OR claimed_by = :owner OR lease_until <= :now)"


class Limits:
    """The three bounds, checked once at construction."""

    __slots__ = ("max_age_s", "max_bytes", "max_entries")

    def __init__(self, max_entries: int, max_bytes: int, max_age_s: float) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s


def _bump(conn: sqlite3.Connection, name: str, by: int) -> None:
    if by:
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )


def record_settings(conn: sqlite3.Connection, limits: Limits, synchronous: str) -> None:
    """Note the bounds this writer enforces, so a status read elsewhere reports them."""
    with write(conn):
        conn.executemany(
            "INSERT INTO settings (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [
                ("max_entries", limits.max_entries),
                ("max_bytes", limits.max_bytes),
                ("max_age_s", limits.max_age_s),
                ("synchronous", synchronous),
            ],
        )


def _entry(row: Sequence[object]) -> OutboxEntry:
    return OutboxEntry(*row)  # type: ignore[arg-type]  # columns in _COLUMNS order


def _expire(conn: sqlite3.Connection, now: float, limits: Limits) -> int:
    dropped = conn.execute("DELETE FROM entries WHERE queued_at < ?", (now - limits.max_age_s,)).rowcount
    _bump(conn, "dropped:max_age", dropped)
    return int(dropped)


def _enforce(conn: sqlite3.Connection, limits: Limits) -> tuple[dict[DropReason, int], int, int]:
    """Drop the oldest entries past the count and byte bounds; return drops, depth and bytes."""
    dropped: dict[DropReason, int] = {}
    count, total = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM entries").fetchone()
    if count > limits.max_entries:
        last = conn.execute(
            "SELECT id FROM entries ORDER BY id LIMIT 1 OFFSET ?", (count - limits.max_entries - 1,)
        ).fetchone()[0]
        dropped["max_entries"] = conn.execute("DELETE FROM entries WHERE id <= ?", (last,)).rowcount
        count, total = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM entries").fetchone()
    if total > limits.max_bytes:
        last = conn.execute(
            "SELECT id FROM (SELECT id, sum(size) OVER (ORDER BY id) AS upto FROM entries)"
            " WHERE upto >= ? ORDER BY id LIMIT 1",
            (total - limits.max_bytes,),
        ).fetchone()[0]
        dropped["max_bytes"] = conn.execute("DELETE FROM entries WHERE id <= ?", (last,)).rowcount
        count, total = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM entries").fetchone()
    for reason, n in dropped.items():
        _bump(conn, f"dropped:{reason}", n)
    return dropped, int(count), int(total)


def put(
    conn: sqlite3.Connection,
    item: OutboxItem,
    trace: tuple[str | None, str | None],
    now: float,
    limits: Limits,
) -> PutResult:
    if item.size > limits.max_bytes:
        raise OutboxWriteError(
            f"session of {item.size} bytes exceeds the outbox's max_bytes={limits.max_bytes}"
        )
    with write(conn):
        expired = _expire(conn, now, limits)
        cur = conn.execute(
            "INSERT INTO entries (product_id, user_id, session_id, snapshot, summary, size, queued_at,"
            " traceparent, tracestate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (product_id, user_id, session_id) DO NOTHING",
            (
                item.product_id,
                item.user_id,
                item.session_id,
                item.snapshot,
                item.summary,
                item.size,
                now,
                *trace,
            ),
        )
        queued = cur.rowcount == 1
        _bump(conn, "queued", int(queued))
        dropped, depth, total = _enforce(conn, limits)
        entry_id = conn.execute(
            "SELECT id FROM entries WHERE product_id = ? AND user_id = ? AND session_id = ?",
            (item.product_id, item.user_id, item.session_id),
        ).fetchone()[0]
    if expired:
        dropped["max_age"] = expired
    return PutResult(entry_id=int(entry_id), queued=queued, dropped=dropped, depth=depth, total_bytes=total)


def expire(conn: sqlite3.Connection, now: float, limits: Limits) -> int:
    with write(conn):
        return _expire(conn, now, limits)


def claim(
    conn: sqlite3.Connection, owner: str, limit: int, lease_s: float, now: float, limits: Limits
) -> tuple[list[OutboxEntry], int]:
    """Lease up to ``limit`` entries (one per user, oldest first); also expire, returning that count."""
    with write(conn):
        expired = _expire(conn, now, limits)
        busy = set(conn.execute(_BUSY, (now,)).fetchall())
        ids = heapq.nsmallest(
            limit, (head for *user, head in conn.execute(_HEADS) if tuple(user) not in busy)
        )
        until = now + lease_s
        marks = ",".join("?" * len(ids))
        conn.execute(
            f"UPDATE entries SET claimed_by = ?, lease_until = ? WHERE id IN ({marks})", (owner, until, *ids)
        )
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM entries WHERE id IN ({marks}) ORDER BY id", ids
        ).fetchall()
    return [_entry(row) for row in rows], expired


def ack(conn: sqlite3.Connection, entry_ids: Sequence[int]) -> int:
    with write(conn):
        done = sum(
            conn.execute(f"DELETE FROM entries WHERE id IN ({','.join('?' * len(chunk))})", chunk).rowcount
            for chunk in (entry_ids[i : i + 500] for i in range(0, len(entry_ids), 500))
        )
        _bump(conn, "replayed", done)
    return int(done)


def release(
    conn: sqlite3.Connection, entry_id: int, owner: str, error: str, now: float, retry_after_s: float
) -> bool:
    with write(conn):
        cur = conn.execute(
            "UPDATE entries SET attempts = attempts + 1, last_error = :error, claimed_by = NULL,"
            " lease_until = :retry WHERE id = :id AND state = 'pending' AND " + _NOT_HELD,
            {
                "error": error[:MAX_TEXT],
                "retry": now + retry_after_s if retry_after_s > 0 else None,
                "id": entry_id,
                "owner": owner,
                "now": now,
            },
        )
    return cur.rowcount == 1


def park(conn: sqlite3.Connection, entry_id: int, owner: str, reason: str, now: float) -> bool:
    with write(conn):
        cur = conn.execute(
            "UPDATE entries SET state = 'parked', park_reason = :reason, claimed_by = NULL,"
            " lease_until = NULL WHERE id = :id AND state = 'pending' AND " + _NOT_HELD,
            {"reason": reason[:MAX_TEXT], "id": entry_id, "owner": owner, "now": now},
        )
        _bump(conn, "parked", cur.rowcount)
    return cur.rowcount == 1


def purge_user(conn: sqlite3.Connection, product_id: str, user_id: str) -> int:
    with write(conn):
        cur = conn.execute("DELETE FROM entries WHERE product_id = ? AND user_id = ?", (product_id, user_id))
    return int(cur.rowcount)


def pending_for(conn: sqlite3.Connection, product_id: str, user_id: str) -> list[OutboxEntry]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM entries"
        " WHERE product_id = ? AND user_id = ? AND state = 'pending' ORDER BY id",
        (product_id, user_id),
    ).fetchall()
    return [_entry(row) for row in rows]


def status(conn: sqlite3.Connection, now: float, path: str, limits: Limits, synchronous: str) -> OutboxStatus:
    """Every figure ``Outbox.status`` reports, read in one snapshot of the file; the bounds are
    those the last writer to open the file recorded (processes may differ), else ours."""
    conn.execute("BEGIN")
    try:
        by_state = {
            state: (count, size, oldest)
            for state, count, size, oldest in conn.execute(
                "SELECT state, count(*), sum(size), min(queued_at) FROM entries GROUP BY state"
            )
        }
        leased = conn.execute(
            "SELECT count(*) FROM entries WHERE lease_until > ? AND claimed_by IS NOT NULL", (now,)
        ).fetchone()[0]
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        settings = dict(conn.execute("SELECT name, value FROM settings").fetchall())
        pages = (
            conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
        )
    finally:
        conn.execute("COMMIT")
    pending, pending_bytes, oldest = by_state.get("pending", (0, 0, None))
    parked, parked_bytes, _ = by_state.get("parked", (0, 0, None))
    return OutboxStatus(
        path=path,
        pending=int(pending),
        parked=int(parked),
        leased=int(leased),
        total_bytes=int(pending_bytes) + int(parked_bytes),
        file_bytes=int(pages),
        oldest_age_s=None if oldest is None else max(0.0, now - float(oldest)),
        queued_total=int(counters.get("queued", 0)),
        replayed_total=int(counters.get("replayed", 0)),
        parked_total=int(counters.get("parked", 0)),
        dropped_total={reason: int(counters.get(f"dropped:{reason}", 0)) for reason in DROP_REASONS},
        max_entries=int(settings.get("max_entries", limits.max_entries)),
        max_bytes=int(settings.get("max_bytes", limits.max_bytes)),
        max_age_s=float(settings.get("max_age_s", limits.max_age_s)),
        synchronous=str(settings.get("synchronous", synchronous)),
    )
