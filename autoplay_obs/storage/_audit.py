"""``audit``: read the store and name every lost or broken write, per user and session.

Decisions:
- The findings are the traces of the failures the write path can suffer:
  ``lost_merge`` (a snapshot frozen but never merged: newer than the index's
  oldest entry yet not in it, or not in an index that is not full),
  ``lost_freeze`` (an index entry whose snapshot is gone, unless
  ``snapshot_ttl`` explains it), ``count_below_index``, ``unreadable`` and
  ``unknown_version`` documents, and ``outbox_pending`` entries still waiting
  in the outbox. Each names the session and, when the document recorded it,
  the trace id of its writer (``_trace_id``).
- A product-wide audit scans the product's keys once and groups them by user,
  so a user whose only trace is a snapshot (a first session whose merge was
  lost) is found too. An erased user (tombstone) is not audited.
- ``repair`` re-merges lost merges with the lifecycle's own change
  (``merge``) through ``update_state``: compare-and-set, idempotent, so a
  session end finishing meanwhile is never counted twice.
- A session end in flight can look like a lost merge for an instant; running
  the repair on it is harmless (the merge is idempotent).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from autoplay_obs import _json
from autoplay_obs.errors import DocumentError, UnsupportedVersionError, UserErasedError
from autoplay_obs.storage._doc_trace import trace_id_of
from autoplay_obs.storage._history import SessionRecord, read_sessions
from autoplay_obs.storage._keys import validate_id
from autoplay_obs.storage._operator_protocol import OperatorStore, operator_store
from autoplay_obs.storage._session_end import merge
from autoplay_obs.user_adoption_state import MAX_SESSION_INDEX, UserAdoptionState, decode_user_state

if TYPE_CHECKING:
    from autoplay_obs.storage._manager import StorageManager

__all__ = ["AuditReport", "Finding", "FindingKind", "audit"]

FindingKind = Literal[
    "lost_merge", "lost_freeze", "count_below_index", "unreadable", "unknown_version", "outbox_pending"
]
CLOCK_SLACK_S: Final = 300.0
"""An index entry this close to its snapshot's expiry may have lost it to the TTL, not to a bug."""
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Finding:
    user_id: str
    kind: FindingKind
    session_id: str | None
    trace_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What ``audit`` found, and (with ``repair``) which lost merges it merged again."""

    findings: tuple[Finding, ...]
    repaired: tuple[Finding, ...] = ()
    users_checked: int = 0
    erased_users: int = 0
    unrepaired: tuple[Finding, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "unrepaired", tuple(f for f in self.findings if f not in self.repaired))

    def to_json(self) -> dict[str, Any]:
        return {
            "findings": [f.to_json() for f in self.findings],
            "repaired": [f.to_json() for f in self.repaired],
            "users_checked": self.users_checked,
            "erased_users": self.erased_users,
        }


def _document_finding(
    user_id: str, where: SessionRecord | None, exc: DocumentError, raw: bytes = b""
) -> Finding:
    """An unreadable or unknown-version document: the state (``where`` None) or a snapshot."""
    kind: FindingKind = "unknown_version" if isinstance(exc, UnsupportedVersionError) else "unreadable"
    if where is None:
        return Finding(user_id, kind, None, trace_id_of(raw))
    return Finding(user_id, kind, where.session_id, where.trace_id)


def _stored_count(raw: bytes) -> float:
    """``sessions.count`` as stored (before any repair), or infinity when it is not a number."""
    sessions = (_json.loads_object(raw) or {}).get("sessions")
    count = sessions.get("count") if isinstance(sessions, dict) else None
    return count if isinstance(count, (int, float)) and not isinstance(count, bool) else math.inf


def _traceparent_id(traceparent: str | None) -> str | None:
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


class _UserAudit:
    """One user's documents, checked against each other."""

    def __init__(self, manager: StorageManager, store: OperatorStore, product_id: str, user_id: str) -> None:
        self.manager, self.store = manager, store
        self.product_id, self.user_id = product_id, user_id
        self.findings: list[Finding] = []
        self.lost: list[tuple[Finding, SessionRecord]] = []

    async def run(self, session_ids: list[str]) -> bool:
        """Collect the findings; False when the user is erased (nothing to audit)."""
        try:
            state = await self._state()
        except UserErasedError:
            return False
        records = await read_sessions(self.store, self.product_id, self.user_id, session_ids)
        for record in records:
            if record.error is not None:
                self.findings.append(_document_finding(self.user_id, record, record.error))
        if state is not False:  # a state that cannot be read has no index to check against
            self._check_index(state, records, set(session_ids))
        await self._check_outbox()
        return True

    async def _state(self) -> UserAdoptionState | Literal[False] | None:
        """The decoded state, None when there is none, False (and a finding) when it cannot be read."""
        raw = b""
        try:
            stored = await self.store.load_state(self.product_id, self.user_id)
            if stored is None:
                return None
            raw = stored.raw
            state = decode_user_state(raw, user_id=self.user_id).value
        except DocumentError as exc:  # not JSON, another _v, or a key holding a Redis hash
            self.findings.append(_document_finding(self.user_id, None, exc, raw))
            return False
        if _stored_count(raw) < len(state.sessions.index):  # the decoding raises it: look at the bytes
            self.findings.append(Finding(self.user_id, "count_below_index", None, trace_id_of(raw)))
        return state

    def _check_index(
        self, state: UserAdoptionState | None, records: list[SessionRecord], ids: set[str]
    ) -> None:
        index = [] if state is None else state.sessions.index
        indexed = {entry.session_id for entry in index}
        full = len(index) >= MAX_SESSION_INDEX
        for record in records:
            snapshot = record.snapshot
            if snapshot is None or snapshot.session_id in indexed:
                continue
            if not full or snapshot.index_entry().recency > index[0].recency:
                finding = Finding(self.user_id, "lost_merge", record.session_id, record.trace_id)
                self.findings.append(finding)
                self.lost.append((finding, record))
        ttl, now = self.store.snapshot_ttl, time.time()
        for entry in index:
            expired = ttl is not None and now >= entry.captured_at + ttl - CLOCK_SLACK_S
            if entry.session_id not in ids and not expired:
                self.findings.append(Finding(self.user_id, "lost_freeze", entry.session_id))

    async def _check_outbox(self) -> None:
        outbox = getattr(self.manager, "outbox", None)
        if outbox is None:
            return
        for entry in await outbox.pending_for(self.product_id, self.user_id):
            trace_id = _traceparent_id(entry.traceparent)
            self.findings.append(Finding(self.user_id, "outbox_pending", entry.session_id, trace_id))

    async def repair(self) -> list[Finding]:
        """Merge each lost session again, the way its session end would have."""
        repaired = []
        for finding, record in self.lost:
            assert record.snapshot is not None
            change = functools.partial(merge, record.snapshot, None, True)
            update = await self.manager.update_state(self.product_id, self.user_id, change)
            if update.written or update.state.has_session(record.session_id):
                repaired.append(finding)
        return repaired


async def _users(store: OperatorStore, product_id: str, user_id: str | None) -> dict[str, list[str]]:
    """Each user's snapshot ids, from one scan of the user's (or the product's) keys."""
    users: dict[str, list[str]] = {}
    async for ref in store.scan_keys(product_id, user_id):
        sessions = users.setdefault(ref.user_id, [])
        if ref.session_id is not None:
            sessions.append(ref.session_id)
    return users


async def audit(
    manager: StorageManager,
    product_id: str,
    user_id: str | None = None,
    *,
    repair: bool = False,
    progress: Progress | None = None,
) -> AuditReport:
    """Audit one user, or every user of the product; ``progress(done, total)`` after each user."""
    validate_id(product_id, "product_id")
    if user_id is not None:
        validate_id(user_id, "user_id")
    store = operator_store(manager.primary)
    users = await _users(store, product_id, user_id)
    if user_id is not None:
        users.setdefault(user_id, [])  # the outbox may hold a user the store does not
    findings: list[Finding] = []
    repaired: list[Finding] = []
    erased = 0
    for done, (uid, session_ids) in enumerate(sorted(users.items()), start=1):
        check = _UserAudit(manager, store, product_id, uid)
        if await check.run(session_ids):
            findings.extend(check.findings)
            if repair:
                repaired.extend(await check.repair())
        else:
            erased += 1
        if progress is not None:
            progress(done, len(users))
    return AuditReport(tuple(findings), tuple(repaired), len(users) - erased, erased)
