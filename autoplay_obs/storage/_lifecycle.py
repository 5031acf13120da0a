"""Session start and end: the two calls an agent makes.

``on_session_start`` / ``on_session_end`` have the seed's signatures and
return values; ``start_session`` / ``end_session`` do the same work and return
the whole outcome (what was persisted, what degraded, which adapter did what).

Decisions:
- Storage trouble never raises into the host. A primary that is down or a
  document that cannot be read gives the agent a usable stand-in state,
  ``degraded=True``, and writes nothing over what is stored.
- Session end has one order: freeze the snapshot (``SET NX``); if the session
  is already counted, return the duplicate without running the summarizer;
  run the summarizer outside any lock (isolated by a timeout and a
  catch-all, its output bounded); merge by compare-and-set with a pure change
  function. When no summarizer has to run and the known state already decides
  whether the session is new, the snapshot write and the first
  compare-and-set share one round trip -- still snapshot first.
- Bad arguments are the caller's bug: they raise typed errors at once, before
  any I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable
from typing import Any, TypeVar

from autoplay_obs.errors import DocumentError, InvalidValueError, StorageError, UserErasedError
from autoplay_obs.storage._doc_trace import stamped
from autoplay_obs.storage._erasure import undo_erased_freeze
from autoplay_obs.storage._keys import validate_id
from autoplay_obs.storage._manager import StorageManager
from autoplay_obs.storage._protocol import AutoplayStorageAdapter, headed
from autoplay_obs.storage._results import AdapterCall, SessionEndResult, SessionStartResult
from autoplay_obs.storage._state_writer import Current
from autoplay_obs.storage._summary import Summarizer, bounded, summarize
from autoplay_obs.telemetry import _hooks as telemetry
from autoplay_obs.user_adoption_state import (
    MAX_SESSION_INDEX,
    SessionSnapshot,
    UserAdoptionState,
    encode,
)
from autoplay_obs.user_adoption_state._models import plain_json

__all__ = [
    "Summarizer",
    "build_agent_context",
    "end_session",
    "init_user_state",
    "on_session_end",
    "on_session_start",
    "start_session",
]

ONBOARDING_SESSION_NUMBER = 1
_TROUBLE = (StorageError, DocumentError)
T = TypeVar("T")


def init_user_state(user_id: str, *, metadata: dict[str, Any] | None = None) -> UserAdoptionState:
    """A fresh record for a user never seen before."""
    return UserAdoptionState(
        user_id=validate_id(user_id, "user_id"), metadata=plain_json(dict(metadata or {}))
    )


def _manager_for(storage: AutoplayStorageAdapter) -> StorageManager:
    """Lifecycle calls always go through a manager.

    A bare adapter gets a throwaway one per call (no cache, no cross-call
    queueing); pass a long-lived ``StorageManager`` to have both.
    """
    manager = storage if isinstance(storage, StorageManager) else StorageManager([storage])
    manager.check_loop()
    return manager


def _onboarding_session_id(state: UserAdoptionState) -> str | None:
    """The pointer kept since it was recorded, else (a document from elsewhere) the index."""
    kept = state.sessions.onboarding_session_id
    if isinstance(kept, str):
        return kept
    for entry in state.sessions.index:
        if entry.session_number == ONBOARDING_SESSION_NUMBER:
            return entry.session_id
    return None


async def _load_onboarding(
    manager: StorageManager, product_id: str, user_id: str, state: UserAdoptionState
) -> SessionSnapshot | None:
    """The onboarding snapshot, or None; a damaged or missing one is counted, never raised."""
    session_id = _onboarding_session_id(state)
    if session_id is None:
        return None
    try:
        return await manager.load_snapshot(product_id, user_id, session_id)
    except _TROUBLE as exc:
        telemetry.document_refused("snapshot", exc)
        return None


def _open(session_id: str, state: UserAdoptionState) -> UserAdoptionState:
    state.set_current_session(session_id)
    return state


@telemetry.traced_session("start")
async def start_session(
    product_id: str, user_id: str, session_id: str, storage: AutoplayStorageAdapter
) -> SessionStartResult:
    """Load or create the user's state, mark the session open, fetch the onboarding snapshot."""
    for value, what in ((product_id, "product_id"), (user_id, "user_id"), (session_id, "session_id")):
        validate_id(value, what)
    manager = _manager_for(storage)
    mark_open = functools.partial(_open, session_id)
    with manager.recording() as calls:
        current: Current | None = None
        try:
            current = await manager.read_state(product_id, user_id)
            update = await manager.update_state(product_id, user_id, mark_open, current=current)
        except _TROUBLE as exc:  # keep the best-known state, write nothing
            state = mark_open(init_user_state(user_id) if current is None else current.state.copy())
            repairs = () if current is None else current.repairs
            return SessionStartResult(state, False, exc, repairs, 0, calls, degraded=True)
        onboarding = await _load_onboarding(manager, product_id, user_id, update.state)
        return SessionStartResult(
            update.state, True, None, update.repairs, update.conflicts, calls, onboarding_session=onboarding
        )


def _undecided(state: UserAdoptionState, snapshot: SessionSnapshot) -> bool:
    """A session older than everything in a full index: the index cannot say whether it was
    counted (a late retry) or not, so the snapshot write's answer must."""
    index = state.sessions.index
    return len(index) >= MAX_SESSION_INDEX and snapshot.index_entry().recency < index[0].recency


def _counted(state: UserAdoptionState, snapshot: SessionSnapshot, created: bool | None) -> bool:
    """Already in the state: a retried end. Undecided ones count only when this call froze them."""
    return state.has_session(snapshot.session_id) or (created is not True and _undecided(state, snapshot))


def _merge(
    snapshot: SessionSnapshot, summary: str | None, created: bool | None, state: UserAdoptionState
) -> UserAdoptionState | None:
    """The session-end change: the session merged into ``state``, or None when already counted."""
    if _counted(state, snapshot, created):
        return None
    state.apply_session_snapshot(snapshot, summary=summary)
    return state


def _check_end(product_id: str, user_id: str, snapshot: object) -> SessionSnapshot:
    for value, what in ((product_id, "product_id"), (user_id, "user_id")):
        validate_id(value, what)
    if not isinstance(snapshot, SessionSnapshot):
        raise InvalidValueError(f"session_snapshot must be a SessionSnapshot, got {type(snapshot).__name__}")
    validate_id(snapshot.session_id, "session_id")
    if snapshot.user_id != user_id:
        raise InvalidValueError(
            "session_snapshot belongs to another user (snapshot.user_id != user_id); "
            "a snapshot is merged only into its own user's state"
        )
    return snapshot


@telemetry.traced_session("end")
async def end_session(
    product_id: str,
    user_id: str,
    session_snapshot: SessionSnapshot,
    storage: AutoplayStorageAdapter,
    *,
    summarizer: Summarizer | None = None,
    summary: str | None = None,
    summarizer_timeout: float = 30.0,
) -> SessionEndResult:
    """Freeze the snapshot once, resolve the summary, merge the session into the state.

    A precomputed ``summary`` takes precedence over ``summarizer``; either is
    cut to the manager's ``max_summary_chars`` (``summary_truncated`` says by how much).
    """
    snapshot = _check_end(product_id, user_id, session_snapshot)
    if summary is not None and not isinstance(summary, str):
        raise InvalidValueError(f"summary must be a str, got {type(summary).__name__}")
    manager = _manager_for(storage)
    with manager.recording() as calls:
        end = _SessionEnd(manager, product_id, user_id, snapshot, calls)
        result = await end.run(summary, None if summary is not None else summarizer, summarizer_timeout)
        if isinstance(result.error, UserErasedError):  # erased meanwhile: take back its freeze (_erasure)
            await undo_erased_freeze(manager, product_id, user_id, snapshot.session_id)
        return result


class _SessionEnd:
    """The steps of one session end, in their one order (see the module docstring)."""

    def __init__(
        self,
        manager: StorageManager,
        product_id: str,
        user_id: str,
        snapshot: SessionSnapshot,
        calls: list[AdapterCall],
    ) -> None:
        self.manager, self.product_id, self.user_id = manager, product_id, user_id
        self.snapshot, self.calls = snapshot, calls
        self.raw = stamped(headed(encode(snapshot)))  # _trace_id: the end that froze it

    async def run(
        self, summary: str | None, summarizer: Summarizer | None, timeout: float
    ) -> SessionEndResult:
        """Freeze; return a duplicate; run the summarizer; merge (see the module docstring)."""
        manager, snapshot = self.manager, self.snapshot
        current, error = await _attempt(manager.read_state(self.product_id, self.user_id))
        created: bool | None
        conflicts = 0
        if (
            manager.bundles_freeze
            and error is None
            and summarizer is None
            and not _undecided_for(current, snapshot)
        ):
            first = await self._merge(current, summary, None, None, bundle=True)
            if first.persisted is False or not first.duplicate or first.snapshot_created is None:
                return first
            created, conflicts = first.snapshot_created, first.conflicts  # lost the first try, or counted
            current, error = await _attempt(manager.read_state(self.product_id, self.user_id))
        else:
            created, freeze_error = await _attempt(
                manager.create_snapshot(self.product_id, self.user_id, snapshot.session_id, self.raw)
            )
            if freeze_error is not None:
                return self._failed(current, freeze_error, None)
        if error is None and created is False:  # maybe a retry: judged on the primary's own state
            current, error = await _attempt(manager.read_state(self.product_id, self.user_id, fresh=True))
        if error is not None:
            return self._failed(current, error, created)
        if current is not None and _counted(current.state, snapshot, created):
            return self._result(current.state.copy(), None, current.repairs, 0, created, duplicate=True)
        summary_error = None
        if summarizer is not None:
            summary, summary_error = await summarize(summarizer, snapshot, timeout)
        return await self._merge(current, summary, created, summary_error, bundle=False, conflicts=conflicts)

    async def _merge(
        self,
        current: Current | None,
        summary: str | None,
        created: bool | None,
        summary_error: str | None,
        *,
        bundle: bool,
        conflicts: int = 0,
    ) -> SessionEndResult:
        summary, truncated = bounded(summary, self.manager.max_summary_chars)
        change = functools.partial(_merge, self.snapshot, summary, created)
        freeze = (self.snapshot.session_id, self.raw) if bundle else None
        update, error = await _attempt(
            self.manager.update_state(self.product_id, self.user_id, change, current=current, freeze=freeze)
        )
        if update is None:
            return self._failed(current, error, created, summary, summary_error, truncated)
        frozen = update.snapshot_created if bundle else created
        if update.written:  # the sinks get a session once, when it is counted
            self.manager.mirror_snapshot(self.product_id, self.user_id, self.snapshot.session_id, self.raw)
        before = update.before
        return self._result(
            update.state,
            frozen if isinstance(frozen, Exception) else None,
            update.repairs,
            conflicts + update.conflicts,
            frozen if isinstance(frozen, bool) else None,
            duplicate=not update.written,
            trimmed=int(
                update.written and before is not None and len(before.sessions.index) >= MAX_SESSION_INDEX
            ),
            summary_error=summary_error,
            summary_truncated=truncated,
        )

    def _result(
        self,
        state: UserAdoptionState,
        error: Any,
        repairs: tuple[str, ...],
        conflicts: int,
        created: bool | None,
        **fields: Any,
    ) -> SessionEndResult:
        return SessionEndResult(
            state, True, error, repairs, conflicts, self.calls, snapshot_created=created, **fields
        )

    def _failed(
        self,
        current: Current | None,
        error: Any,
        created: bool | None,
        summary: str | None = None,
        summary_error: str | None = None,
        truncated: int = 0,
    ) -> SessionEndResult:
        """Not persisted: the host gets the best-known state with the session merged in."""
        state = init_user_state(self.user_id) if current is None else current.state.copy()
        state.apply_session_snapshot(self.snapshot, summary=summary)
        return SessionEndResult(
            state,
            False,
            error,
            () if current is None else current.repairs,
            0,
            self.calls,
            snapshot_created=created,
            summary_error=summary_error,
            summary_truncated=truncated,
        )


def _undecided_for(current: Current | None, snapshot: SessionSnapshot) -> bool:
    return current is not None and _undecided(current.state, snapshot)


async def _attempt(step: Awaitable[T]) -> tuple[T | None, StorageError | DocumentError | None]:
    """A primary step's value, or the storage trouble that stopped it (anything else raises)."""
    try:
        return await step, None
    except _TROUBLE as exc:
        return None, exc


async def on_session_start(
    product_id: str, user_id: str, session_id: str, storage: AutoplayStorageAdapter
) -> tuple[UserAdoptionState, SessionSnapshot | None]:
    """The seed's session start: ``(state, onboarding_session)``; see ``start_session``."""
    result = await start_session(product_id, user_id, session_id, storage)
    return result.state, result.onboarding_session


async def on_session_end(
    product_id: str,
    user_id: str,
    session_snapshot: SessionSnapshot,
    storage: AutoplayStorageAdapter,
    *,
    summarizer: Summarizer | None = None,
    summary: str | None = None,
    summarizer_timeout: float = 30.0,
) -> UserAdoptionState:
    """The seed's session end: the updated state; see ``end_session`` for the outcome."""
    result = await end_session(
        product_id,
        user_id,
        session_snapshot,
        storage,
        summarizer=summarizer,
        summary=summary,
        summarizer_timeout=summarizer_timeout,
    )
    return result.state


def build_agent_context(
    state: UserAdoptionState, onboarding_session: SessionSnapshot | None = None
) -> dict[str, Any]:
    """The small agent-facing projection (``context_extra``), not the raw documents."""
    context: dict[str, Any] = {
        "user_journey_state": state.journey_state.value,
        "user_mastery_level": state.mastery.level.value,
        "user_mastery_rating": state.mastery.rating,
        "session_count": state.sessions.count,
        "is_returning_user": state.sessions.count > 0,
        "onboarding_complete": state.onboarding.is_onboarding_complete,
        "completion_rate": state.onboarding.completion_rate,
    }
    if state.onboarding.summary:
        context["onboarding_summary"] = state.onboarding.summary
    if onboarding_session is not None:
        context["onboarding_session_completed_workflows"] = list(onboarding_session.completed_workflow_ids)
        context["onboarding_session_in_progress_workflows"] = list(
            onboarding_session.in_progress_workflow_ids
        )
        context["onboarding_session_untouched_workflows"] = list(onboarding_session.untouched_workflow_ids)
    return context
