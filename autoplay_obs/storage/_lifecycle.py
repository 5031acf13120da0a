"""Session start and end: the two calls an agent makes.

``on_session_start`` / ``on_session_end`` have the seed's signatures and
return values; ``start_session`` / ``end_session`` do the same work and return
the whole outcome (what was persisted, what degraded, which adapter did what).

Decisions:
- Storage trouble never raises into the host. A primary that is down or a
  document that cannot be read gives the agent a usable stand-in state,
  ``degraded=True``, and writes nothing over what is stored.
- Session end freezes the snapshot (write-once) while it reads the state,
  resolves the summary outside any lock or compare-and-set loop (the summarizer
  is isolated by a timeout and a catch-all), then merges the snapshot into the
  state by compare-and-set. The merge is idempotent per session id, so a
  retried end counts once and reports itself as a duplicate.
- Bad arguments (ids, a non-snapshot) are the caller's bug: they raise typed
  errors at once, before any I/O.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from autoplay_obs.errors import DocumentError, InvalidValueError, StorageError
from autoplay_obs.storage._keys import validate_id
from autoplay_obs.storage._manager import StorageManager
from autoplay_obs.storage._protocol import AutoplayStorageAdapter
from autoplay_obs.storage._results import SessionEndResult, SessionStartResult
from autoplay_obs.telemetry import _hooks as telemetry
from autoplay_obs.user_adoption_state import (
    MAX_SESSION_INDEX,
    SessionRecorded,
    SessionSnapshot,
    UserAdoptionState,
    decode_session_snapshot,
    decode_user_state,
    encode,
)

__all__ = [
    "Summarizer",
    "build_agent_context",
    "end_session",
    "init_user_state",
    "on_session_end",
    "on_session_start",
    "start_session",
]


Summarizer = Callable[[SessionSnapshot], Awaitable[str]]
"""Turns a frozen snapshot into the onboarding summary (your LLM call)."""

ONBOARDING_SESSION_NUMBER = 1
_TROUBLE = (StorageError, DocumentError)
T = TypeVar("T")


def init_user_state(user_id: str, *, metadata: dict[str, Any] | None = None) -> UserAdoptionState:
    """A fresh record for a user never seen before."""
    return UserAdoptionState(user_id=validate_id(user_id, "user_id"), metadata=dict(metadata or {}))


def _manager_for(storage: AutoplayStorageAdapter) -> StorageManager:
    """Lifecycle calls always go through a manager.

    A bare adapter gets a throwaway one per call (no cache, no cross-call
    queueing); pass a long-lived ``StorageManager`` to have both.
    """
    return storage if isinstance(storage, StorageManager) else StorageManager([storage])


def _retry_of_trimmed(state: UserAdoptionState, snapshot: SessionSnapshot) -> bool:
    """A session older than everything in a full index whose snapshot already existed.

    The index only remembers the newest 50 sessions; an end for one older than
    all of them, whose frozen snapshot was already there, is a retry that
    arrived late -- counting it again would break idempotency.
    """
    index = state.sessions.index
    return len(index) >= MAX_SESSION_INDEX and (snapshot.captured_at, snapshot.session_id) < (
        index[0].captured_at,
        index[0].session_id,
    )


async def _attempt(step: Awaitable[T]) -> tuple[T | None, StorageError | DocumentError | None]:
    """A primary step's value, or the storage trouble that stopped it (anything else raises)."""
    try:
        return await step, None
    except _TROUBLE as exc:
        return None, exc


def _onboarding_session_id(state: UserAdoptionState) -> str | None:
    """From the index, or from the pointer kept once its entry was trimmed."""
    for entry in state.sessions.index:
        if entry.session_number == ONBOARDING_SESSION_NUMBER:
            return entry.session_id
    kept = state.sessions.onboarding_session_id
    return kept if isinstance(kept, str) else None


async def _load_onboarding(
    manager: StorageManager, product_id: str, user_id: str, session_id: str
) -> SessionSnapshot | None:
    """The onboarding snapshot, or None; a damaged or missing one is counted, never raised."""
    try:
        raw = await manager.load_snapshot(product_id, user_id, session_id)
        if raw is None:
            return None
        decoded = decode_session_snapshot(raw)
    except (StorageError, DocumentError) as exc:
        telemetry.document_refused("snapshot", exc)
        return None
    telemetry.document_repaired("snapshot", len(decoded.repairs))
    return decoded.value


@telemetry.traced_session("start")
async def start_session(
    product_id: str, user_id: str, session_id: str, storage: AutoplayStorageAdapter
) -> SessionStartResult:
    """Load or create the user's state, mark the session open, fetch the onboarding snapshot."""
    for value, what in ((product_id, "product_id"), (user_id, "user_id"), (session_id, "session_id")):
        validate_id(value, what)
    manager = _manager_for(storage)
    with manager.recording() as calls:
        try:
            stored = await manager.read_state(product_id, user_id)
            decoded = None if stored is None else decode_user_state(stored.raw, user_id=user_id)
        except (StorageError, DocumentError) as exc:
            state = init_user_state(user_id)
            state.set_current_session(session_id)
            return SessionStartResult(state, False, exc, _calls=calls, degraded=True)
        known = None if decoded is None else decoded.value
        repairs = () if decoded is None else decoded.repairs
        first_id = None if known is None else _onboarding_session_id(known)
        onboarding_task = (
            asyncio.ensure_future(_load_onboarding(manager, product_id, user_id, first_id))
            if first_id
            else None
        )

        def mark_open(s: UserAdoptionState) -> bool:
            s.set_current_session(session_id)
            return True

        error: StorageError | DocumentError | None = None
        conflicts = 0
        try:
            update = await manager.update_state(
                product_id,
                user_id,
                mark_open,
                create=lambda: init_user_state(user_id),
                stored=stored,
                state=known,
            )
            state, conflicts = update.state, update.conflicts
        except (StorageError, DocumentError) as exc:  # keep the best-known state, write nothing
            error = exc
            state = known or init_user_state(user_id)
            mark_open(state)
        onboarding = await onboarding_task if onboarding_task else None
        latest_first_id = _onboarding_session_id(state)
        if latest_first_id and latest_first_id != first_id:
            onboarding = await _load_onboarding(manager, product_id, user_id, latest_first_id)
        return SessionStartResult(
            state,
            error is None,
            error,
            repairs,
            conflicts,
            calls,
            onboarding_session=onboarding,
            degraded=error is not None,
        )


@telemetry.traced_summarizer
async def _summarize(
    summarizer: Callable[[SessionSnapshot], Any], snapshot: SessionSnapshot, timeout: float
) -> tuple[str | None, str | None]:
    """Run the host's summarizer; any failure is returned as its type name, never raised."""
    try:
        produced = summarizer(snapshot)
        if inspect.isawaitable(produced):
            produced = await asyncio.wait_for(produced, timeout)
    except asyncio.TimeoutError:
        return None, "TimeoutError"
    except Exception as exc:
        return None, type(exc).__name__
    if not isinstance(produced, str):
        return None, "TypeError"
    return produced, None


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
    """Freeze the snapshot once, resolve the summary, merge the session into the state."""
    for value, what in ((product_id, "product_id"), (user_id, "user_id")):
        validate_id(value, what)
    if not isinstance(session_snapshot, SessionSnapshot):
        raise InvalidValueError(
            f"session_snapshot must be a SessionSnapshot, got {type(session_snapshot).__name__}"
        )
    session_id = validate_id(session_snapshot.session_id, "session_id")
    manager = _manager_for(storage)
    with manager.recording() as calls:
        snapshot_raw = encode(session_snapshot)
        (created, snapshot_error), (stored, load_error) = await asyncio.gather(
            _attempt(manager.create_snapshot(product_id, user_id, session_id, snapshot_raw)),
            _attempt(manager.read_state(product_id, user_id)),
        )
        if created is False and load_error is None:
            # The snapshot was already there: most likely a retry. Judge it on the primary's
            # state rather than a cached copy, so a retry never runs the summarizer again.
            stored, load_error = await _attempt(manager.load_state(product_id, user_id))
        state: UserAdoptionState | None = None
        repairs: tuple[str, ...] = ()
        if stored is not None:
            try:
                decoded = decode_user_state(stored.raw, user_id=user_id)
                state, repairs = decoded.value, decoded.repairs
            except DocumentError as exc:
                load_error = exc
        error = load_error or snapshot_error
        readable = load_error is None

        def counted(s: UserAdoptionState) -> bool:
            """Already in the state: a retried end (checked again on every compare-and-set attempt)."""
            return s.has_session(session_id) or (created is False and _retry_of_trimmed(s, session_snapshot))

        if readable and state is not None and counted(state):  # skip the summarizer for a retry
            return SessionEndResult(
                state, True, error, repairs, 0, calls, snapshot_created=created, duplicate=True
            )

        resolved, summary_error = summary, None
        if summary is None and summarizer is not None:
            resolved, summary_error = await _summarize(summarizer, session_snapshot, summarizer_timeout)

        recorded = SessionRecorded(False, 0)

        def merge(s: UserAdoptionState) -> bool:
            nonlocal recorded
            recorded = (
                SessionRecorded(False, 0)
                if counted(s)
                else s.apply_session_snapshot(session_snapshot, summary=resolved)
            )
            return recorded.recorded

        if not readable:
            stand_in = init_user_state(user_id)
            merge(stand_in)
            return SessionEndResult(
                stand_in, False, error, repairs, 0, calls,
                snapshot_created=created, summary_error=summary_error,
            )  # fmt: skip
        try:
            update = await manager.update_state(
                product_id,
                user_id,
                merge,
                create=lambda: init_user_state(user_id),
                stored=stored,
                state=state,
            )
        except (StorageError, DocumentError) as exc:
            stand_in = state or init_user_state(user_id)
            merge(stand_in)
            return SessionEndResult(
                stand_in, False, exc, repairs, 0, calls,
                snapshot_created=created, summary_error=summary_error,
            )  # fmt: skip
        if recorded.recorded:  # the sinks get a session once, when it is counted
            manager.mirror_snapshot(product_id, user_id, session_id, snapshot_raw)
        return SessionEndResult(
            update.state,
            True,
            error,
            update.repairs or repairs,
            update.conflicts,
            calls,
            snapshot_created=created,
            duplicate=not recorded.recorded,
            trimmed=recorded.trimmed,
            summary_error=summary_error,
        )


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
