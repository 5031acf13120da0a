"""The steps of one session end, in their one order; shared by ``end_session`` and the outbox replay.

Decisions:
- One order: freeze the snapshot (``SET NX``); if the session is already
  counted, return the duplicate without running the summarizer; run the
  summarizer outside any lock; merge by compare-and-set with a pure change
  function (``merge``). When no summarizer has to run and the known state
  already decides whether the session is new, the snapshot write and the
  first compare-and-set share one round trip -- still snapshot first.
- No session lost to an outage: when the primary cannot be reached or does
  not answer (or the merge keeps losing), a manager with an outbox queues the
  session end before the call returns (``queued=True``); the summary goes
  with it, so the summarizer runs first even when the freeze failed. A
  document the primary refuses is not queued: replaying cannot fix it.
- Everything here is values passed in and returned; the only state is the
  call's own arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from autoplay_obs.errors import (
    ConflictError,
    DocumentError,
    OutboxError,
    StorageError,
    StorageUnavailableError,
    UserErasedError,
)
from autoplay_obs.storage._doc_trace import stamped
from autoplay_obs.storage._erasure import undo_erased_freeze
from autoplay_obs.storage._outbox_types import OutboxItem
from autoplay_obs.storage._protocol import headed
from autoplay_obs.storage._results import AdapterCall, SessionEndResult
from autoplay_obs.storage._state_writer import Current
from autoplay_obs.storage._summary import Summarizer, bounded, summarize
from autoplay_obs.telemetry import _hooks as telemetry
from autoplay_obs.user_adoption_state import MAX_SESSION_INDEX, SessionSnapshot, UserAdoptionState, encode

if TYPE_CHECKING:
    from autoplay_obs.storage._manager import StorageManager

__all__ = ["SessionEnd", "merge"]

T = TypeVar("T")
_TROUBLE = (StorageError, DocumentError)
_QUEUED_FOR = (StorageUnavailableError, ConflictError)
"""Failures a later replay can get past: the primary away, slow, or contended."""


def _undecided(state: UserAdoptionState, snapshot: SessionSnapshot) -> bool:
    """A session older than everything in a full index: the index cannot say whether it was
    counted (a late retry) or not, so the snapshot write's answer must."""
    index = state.sessions.index
    return len(index) >= MAX_SESSION_INDEX and snapshot.index_entry().recency < index[0].recency


def _counted(state: UserAdoptionState, snapshot: SessionSnapshot, created: bool | None) -> bool:
    """Already in the state: a retried end. Undecided ones count only when this call froze them."""
    return state.has_session(snapshot.session_id) or (created is not True and _undecided(state, snapshot))


def merge(
    snapshot: SessionSnapshot, summary: str | None, created: bool | None, state: UserAdoptionState
) -> UserAdoptionState | None:
    """The session-end change: the session merged into ``state``, or None when already counted."""
    if _counted(state, snapshot, created):
        return None
    state.apply_session_snapshot(snapshot, summary=summary)
    return state


async def _attempt(step: Awaitable[T]) -> tuple[T | None, StorageError | DocumentError | None]:
    """A primary step's value, or the storage trouble that stopped it (anything else raises)."""
    try:
        return await step, None
    except _TROUBLE as exc:
        return None, exc


class SessionEnd:
    """One session end of ``snapshot`` for ``user_id``; ``queue=False`` for a replay."""

    def __init__(
        self,
        manager: StorageManager,
        product_id: str,
        user_id: str,
        snapshot: SessionSnapshot,
        calls: list[AdapterCall],
        *,
        raw: bytes | None = None,
        queue: bool = True,
    ) -> None:
        self.manager, self.product_id, self.user_id = manager, product_id, user_id
        self.snapshot, self.calls = snapshot, calls
        self.raw = raw if raw is not None else stamped(headed(encode(snapshot)))  # _trace_id: this end
        self.outbox = manager.outbox if queue else None

    async def run(
        self, summary: str | None, summarizer: Summarizer | None, timeout: float
    ) -> SessionEndResult:
        """Freeze; return a duplicate; run the summarizer; merge (see the module docstring)."""
        result = await self._steps(summary, summarizer, timeout)
        if isinstance(result.error, UserErasedError):  # erased meanwhile: take back its freeze (_erasure)
            await undo_erased_freeze(self.manager, self.product_id, self.user_id, self.snapshot.session_id)
        return result

    async def _steps(
        self, summary: str | None, summarizer: Summarizer | None, timeout: float
    ) -> SessionEndResult:
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
            if first.persisted is False or not first.duplicate:  # merged, or the round trip failed
                return first
            if first.error is not None:  # nothing merged, and the snapshot write failed
                return await self._failed(current, first.error, None, summary)
            # The first compare-and-set lost, or the session was already counted: go on as
            # usual, now that the snapshot write's answer is known.
            created, conflicts = first.snapshot_created, first.conflicts
            current, error = await _attempt(manager.read_state(self.product_id, self.user_id))
        else:
            created, freeze_error = await _attempt(
                manager.create_snapshot(self.product_id, self.user_id, snapshot.session_id, self.raw)
            )
            if freeze_error is not None:
                if self.outbox is not None and summarizer is not None:  # the summary is queued too
                    summary, summary_error = await summarize(summarizer, snapshot, timeout)
                    return await self._failed(current, freeze_error, None, summary, summary_error)
                return await self._failed(current, freeze_error, None, summary)
        if error is None and created is False:  # maybe a retry: judged on the primary's own state
            current, error = await _attempt(manager.read_state(self.product_id, self.user_id, fresh=True))
        if error is not None:
            return await self._failed(current, error, created, summary)
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
        change = functools.partial(merge, self.snapshot, summary, created)
        freeze = (self.snapshot.session_id, self.raw) if bundle else None
        update, error = await _attempt(
            self.manager.update_state(self.product_id, self.user_id, change, current=current, freeze=freeze)
        )
        if update is None:
            return await self._failed(current, error, created, summary, summary_error, truncated)
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

    async def _failed(
        self,
        current: Current | None,
        error: Any,
        created: bool | None,
        summary: str | None = None,
        summary_error: str | None = None,
        truncated: int = 0,
    ) -> SessionEndResult:
        """Not persisted: queued when it can be replayed; the host gets the best-known state with
        the session merged in (a stand-in: nothing here is written over what is stored)."""
        summary, cut = bounded(summary, self.manager.max_summary_chars)
        state = UserAdoptionState(user_id=self.user_id) if current is None else current.state.copy()
        state.apply_session_snapshot(self.snapshot, summary=summary)
        queued, outbox_error = await self._queue(error, summary)
        return SessionEndResult(
            state,
            False,
            error,
            () if current is None else current.repairs,
            0,
            self.calls,
            snapshot_created=created,
            summary_error=summary_error,
            summary_truncated=truncated or cut,
            queued=queued,
            outbox_error=outbox_error,
        )

    async def _queue(self, error: Any, summary: str | None) -> tuple[bool, OutboxError | None]:
        """Durably queue this end for replay; never raises."""
        if self.outbox is None or not isinstance(error, _QUEUED_FOR):
            return False, None
        item = OutboxItem(self.product_id, self.user_id, self.snapshot.session_id, self.raw, summary)
        try:
            with telemetry.outbox_put():
                put = await self.outbox.put(item)
        except OutboxError as exc:
            return False, exc
        telemetry.outbox_status(put.depth, None)
        self.manager.outbox_queued()
        return True, None


def _undecided_for(current: Current | None, snapshot: SessionSnapshot) -> bool:
    return current is not None and _undecided(current.state, snapshot)
