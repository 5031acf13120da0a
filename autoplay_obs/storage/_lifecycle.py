"""Session start and end: the two calls an agent makes.

``on_session_start`` / ``on_session_end`` have the seed's signatures and
return values; ``start_session`` / ``end_session`` do the same work and return
the whole outcome (what was persisted, what degraded, which adapter did what).

Decisions:
- Storage trouble never raises into the host. A primary that is down or a
  document that cannot be read gives the agent a usable stand-in state,
  ``degraded=True``, and writes nothing over what is stored.
- Session end has one order (``_session_end``): freeze the snapshot, return a
  duplicate, run the summarizer (isolated: ``_summary``), merge by
  compare-and-set; with an outbox, an end the primary did not acknowledge is
  queued before the call returns.
- Bad arguments are the caller's bug: they raise typed errors at once, before
  any I/O.
"""

from __future__ import annotations

import functools
from typing import Any

from autoplay_obs.errors import DocumentError, InvalidValueError, StorageError
from autoplay_obs.storage._keys import validate_id
from autoplay_obs.storage._manager import StorageManager
from autoplay_obs.storage._protocol import AutoplayStorageAdapter
from autoplay_obs.storage._results import SessionEndResult, SessionStartResult
from autoplay_obs.storage._session_end import SessionEnd
from autoplay_obs.storage._state_writer import Current
from autoplay_obs.storage._summary import Summarizer
from autoplay_obs.telemetry import _hooks as telemetry
from autoplay_obs.user_adoption_state import SessionSnapshot, UserAdoptionState
from autoplay_obs.user_adoption_state._json_values import plain_json

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
    manager.start_replaying()
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
        end = SessionEnd(manager, product_id, user_id, snapshot, calls)
        return await end.run(summary, None if summary is not None else summarizer, summarizer_timeout)


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
