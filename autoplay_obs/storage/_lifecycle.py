"""Session start and end: the two calls an agent makes.

``on_session_start`` / ``on_session_end`` have the seed's signatures and
return values; ``start_session`` / ``end_session`` do the same work and return
the whole outcome (what was persisted, what degraded, which adapter did what).

Decisions:
- Storage trouble never raises into the host. A primary that is down or a
  document that cannot be read gives the agent a usable stand-in state,
  ``degraded=True``, and writes nothing over what is stored.
- Session end freezes the snapshot (write-once), resolves the summary outside
  any lock or compare-and-set loop (the summarizer is isolated by a timeout
  and a catch-all), then merges the snapshot into the state by
  compare-and-set. Without a summarizer to run, the snapshot write travels
  with the first compare-and-set; with one, it goes first, so a retry is
  recognised before the summarizer is paid for. The merge is idempotent per
  session id, so a retried end counts once and reports itself as a duplicate.
- Bad arguments (ids, a non-snapshot) are the caller's bug: they raise typed
  errors at once, before any I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from autoplay_obs.errors import DocumentError, InvalidValueError, StorageError
from autoplay_obs.storage._keys import validate_id
from autoplay_obs.storage._manager import Freeze, StateUpdate, StorageManager
from autoplay_obs.storage._protocol import AutoplayStorageAdapter, Stored
from autoplay_obs.storage._results import SessionEndResult, SessionStartResult
from autoplay_obs.telemetry import _hooks as telemetry
from autoplay_obs.user_adoption_state import (
    MAX_SESSION_INDEX,
    SessionRecorded,
    SessionSnapshot,
    UserAdoptionState,
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
    """The pointer kept since it was recorded, else (a document from elsewhere) the index."""
    kept = state.sessions.onboarding_session_id
    if isinstance(kept, str):
        return kept
    for entry in state.sessions.index:
        if entry.session_number == ONBOARDING_SESSION_NUMBER:
            return entry.session_id
    return None


async def _load_onboarding(
    manager: StorageManager, product_id: str, user_id: str, session_id: str
) -> SessionSnapshot | None:
    """The onboarding snapshot, or None; a damaged or missing one is counted, never raised."""
    try:
        decoded = await manager.load_snapshot(product_id, user_id, session_id)
        if decoded is None:
            return None
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
        except (StorageError, DocumentError) as exc:
            state = init_user_state(user_id)
            state.set_current_session(session_id)
            return SessionStartResult(state, False, exc, _calls=calls, degraded=True)

        error: StorageError | DocumentError | None = None
        conflicts = 0
        try:
            update = await manager.open_session(
                product_id, user_id, session_id, create=lambda: init_user_state(user_id), stored=stored
            )
            state, conflicts, repairs = update.state, update.conflicts, update.repairs
        except (StorageError, DocumentError) as exc:  # keep the best-known state, write nothing
            error = exc
            state, repairs = _best_known(stored, user_id)
            state.set_current_session(session_id)
        first_id = _onboarding_session_id(state)
        onboarding = await _load_onboarding(manager, product_id, user_id, first_id) if first_id else None
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


def _best_known(stored: Stored | None, user_id: str) -> tuple[UserAdoptionState, tuple[str, ...]]:
    """The stand-in of a start that could not write: the stored state if readable, else a new one."""
    if stored is not None:
        with contextlib.suppress(DocumentError):
            decoded = decode_user_state(stored.raw, user_id=user_id)
            return decoded.value, decoded.repairs
    return init_user_state(user_id), ()


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


class _Merge:
    """The session-end change to a state: pure, so the compare-and-set loop may run it again.

    It keeps what the lifecycle needs afterwards: whether it counted the
    session, and the last state it saw (the stand-in when the write fails).
    """

    def __init__(self, user_id: str, snapshot: SessionSnapshot, summary: str | None, freeze: Freeze) -> None:
        self.user_id = user_id
        self.snapshot = snapshot
        self.summary = summary
        self.freeze = freeze
        self.recorded = SessionRecorded(False, 0)
        self.state: UserAdoptionState | None = None
        self.repairs: tuple[str, ...] = ()

    def counted(self, state: UserAdoptionState) -> bool:
        """Already in the state: a retried end.

        A session older than everything in a full index is one unless this
        call froze its snapshot (until that is known, it is held back).
        """
        return state.has_session(self.snapshot.session_id) or (
            self.freeze.created is not True and _retry_of_trimmed(state, self.snapshot)
        )

    def __call__(self, state: UserAdoptionState) -> bool:
        self.state = state
        self.recorded = (
            SessionRecorded(False, 0)
            if self.counted(state)
            else state.apply_session_snapshot(self.snapshot, summary=self.summary)
        )
        return self.recorded.recorded

    def stand_in(self) -> UserAdoptionState:
        """The state the host gets when the write failed: the best known, with the session."""
        state = self.state or init_user_state(self.user_id)
        self(state)
        return state

    async def read(
        self, manager: StorageManager, product_id: str, *, fresh: bool
    ) -> tuple[Stored | None, UserAdoptionState | None]:
        """The stored state, decoded."""
        stored = await self._stored(manager, product_id, fresh)
        if stored is None:
            return None, None
        decoded = decode_user_state(stored.raw, user_id=self.user_id)
        self.repairs = decoded.repairs
        return stored, decoded.value

    async def write(
        self,
        manager: StorageManager,
        product_id: str,
        stored: Stored | None,
        state: UserAdoptionState | None,
    ) -> StateUpdate:
        """Merge by compare-and-set; the snapshot, if not yet written, goes out with it."""
        create = functools.partial(init_user_state, self.user_id)
        return await manager.update_state(
            product_id, self.user_id, self, create=create, stored=stored, state=state, freeze=self.freeze
        )

    async def into(self, manager: StorageManager, product_id: str, *, fresh: bool) -> StateUpdate:
        """Merge into the stored state."""
        return await self.write(manager, product_id, await self._stored(manager, product_id, fresh), None)

    async def _stored(self, manager: StorageManager, product_id: str, fresh: bool) -> Stored | None:
        """The stored state: ``fresh``, as the primary has it; else as last seen (cached)."""
        return await (manager.load_state if fresh else manager.read_state)(product_id, self.user_id)


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
    freeze = Freeze(session_id, encode(session_snapshot))
    merge = _Merge(user_id, session_snapshot, summary, freeze)
    summary_error: str | None = None
    update: StateUpdate | None = None
    with manager.recording() as calls:
        if summary is None and summarizer is not None:
            await manager.freeze(product_id, user_id, freeze)
            # Judged before paying for the summarizer -- on the primary's own state when
            # the snapshot was already there -- so a retry never runs it again.
            read, error = await _attempt(merge.read(manager, product_id, fresh=freeze.created is False))
            stored, state = read or (None, None)
            if state is not None and merge.counted(state):
                return SessionEndResult(
                    state, True, freeze.error, merge.repairs, 0, calls,
                    snapshot_created=freeze.created, duplicate=True,
                )  # fmt: skip
            merge.summary, summary_error = await _summarize(summarizer, session_snapshot, summarizer_timeout)
            if error is None:
                update, error = await _attempt(merge.write(manager, product_id, stored, state))
        else:
            update, error = await _attempt(merge.into(manager, product_id, fresh=False))
            if error is None and not merge.recorded.recorded and freeze.created is False:
                # The snapshot was already there: a retry, judged on the primary's own
                # state rather than a cached copy.
                update, error = await _attempt(merge.into(manager, product_id, fresh=True))
        if not freeze.sent:  # the state could not be read; the snapshot is frozen all the same
            await manager.freeze(product_id, user_id, freeze)
        if update is None:
            return SessionEndResult(
                merge.stand_in(), False, error or freeze.error, merge.repairs, 0, calls,
                snapshot_created=freeze.created, summary_error=summary_error,
            )  # fmt: skip
        if merge.recorded.recorded:  # the sinks get a session once, when it is counted
            manager.mirror_snapshot(product_id, user_id, session_id, freeze.raw)
        return SessionEndResult(
            update.state,
            True,
            freeze.error,
            update.repairs or merge.repairs,
            update.conflicts,
            calls,
            snapshot_created=freeze.created,
            duplicate=not merge.recorded.recorded,
            trimmed=merge.recorded.trimmed,
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
