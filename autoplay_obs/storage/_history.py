"""``list_sessions``: every frozen snapshot of a user, not only the 50 the index keeps.

Decisions:
- The store is scanned for the user's snapshot keys (``OperatorStore``), so a
  session trimmed from the index, or never merged into it, is listed too.
- A snapshot that cannot be read is listed with its error, not dropped: an
  operator looking for a lost write must see the broken one. Readable ones
  come oldest first (capture time, then session id, the index's own order),
  unreadable ones after them.
- Reads go out in bounded batches, one key each.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from autoplay_obs.errors import DocumentError
from autoplay_obs.storage._doc_trace import trace_id_of
from autoplay_obs.storage._keys import validate_id
from autoplay_obs.storage._operator_protocol import OperatorStore, operator_store
from autoplay_obs.user_adoption_state import SessionSnapshot, decode_session_snapshot

if TYPE_CHECKING:
    from autoplay_obs.storage._manager import StorageManager

__all__ = ["SessionRecord", "list_sessions", "read_sessions"]

BATCH: Final = 64


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One stored snapshot: decoded, or the error that kept it from being read."""

    session_id: str
    snapshot: SessionSnapshot | None
    trace_id: str | None = None
    """The trace of the session end that froze it, when one was recording."""
    error: DocumentError | None = None

    @property
    def sort_key(self) -> tuple[int, float, str]:
        if self.snapshot is None:
            return (1, 0.0, self.session_id)
        return (0, self.snapshot.captured_at, self.session_id)


async def _read_one(
    store: OperatorStore, product_id: str, user_id: str, session_id: str
) -> SessionRecord | None:
    try:
        raw = await store.load_snapshot(product_id, user_id, session_id)
    except DocumentError as exc:  # e.g. the key holds a Redis hash
        return SessionRecord(session_id, None, None, exc)
    if raw is None:  # deleted or expired since the scan
        return None
    trace_id = trace_id_of(raw)
    try:
        snapshot = decode_session_snapshot(raw).value
    except DocumentError as exc:
        return SessionRecord(session_id, None, trace_id, exc)
    return SessionRecord(session_id, snapshot, trace_id)


async def read_sessions(
    store: OperatorStore, product_id: str, user_id: str, session_ids: list[str]
) -> list[SessionRecord]:
    """The given snapshots read and sorted (see the module docstring)."""
    records: list[SessionRecord] = []
    for start in range(0, len(session_ids), BATCH):
        batch = session_ids[start : start + BATCH]
        found = await asyncio.gather(*(_read_one(store, product_id, user_id, s) for s in batch))
        records.extend(r for r in found if r is not None)
    return sorted(records, key=lambda r: r.sort_key)


async def list_sessions(manager: StorageManager, product_id: str, user_id: str) -> list[SessionRecord]:
    """Every stored snapshot of the user, oldest first."""
    validate_id(product_id, "product_id")
    validate_id(user_id, "user_id")
    store = operator_store(manager.primary)
    ids = [ref.session_id async for ref in store.scan_keys(product_id, user_id) if ref.session_id is not None]
    return await read_sessions(store, product_id, user_id, ids)
