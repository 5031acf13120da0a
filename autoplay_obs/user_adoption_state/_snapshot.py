"""The frozen, write-once capture of one finished session.

Decisions:
- Frozen, and sharing the state's frozen parts (mastery, workflow beliefs):
  nothing it holds can change after capture, so no deep copy is needed. Its
  one dict is its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, Literal

import msgspec
from msgspec import field

from autoplay_obs.errors import InvalidValueError
from autoplay_obs.user_adoption_state._enums import JourneyState
from autoplay_obs.user_adoption_state._parts import (
    Count,
    Denominator,
    Document,
    Duration,
    Mastery,
    SessionIndexEntry,
    Timestamp,
    Unit,
    WorkflowProgress,
    now_or,
    required_id,
    timestamp,
)

if TYPE_CHECKING:
    from autoplay_obs.user_adoption_state._models import UserAdoptionState

__all__ = ["DENOMINATOR_ALL_CATALOG", "DENOMINATOR_ASSIGNED", "SessionSnapshot"]

DENOMINATOR_ALL_CATALOG: Final = "all_catalog_workflows"
DENOMINATOR_ASSIGNED: Final = "assigned_workflows"


# msgspec allows a frozen Struct to extend a mutable one; mypy applies dataclass rules.
class SessionSnapshot(Document, frozen=True, kw_only=True):  # type: ignore[misc]
    """A frozen capture of one finished session, stored write-once."""

    version: Literal[1] = field(default=1, name="_v")
    frozen_: bool = field(default=True, name="_frozen")
    session_id: str
    session_number: Count
    user_id: str
    started_at: Timestamp
    captured_at: Timestamp = field(default_factory=time.time)
    duration_s: Duration = 0.0
    journey_state: JourneyState = JourneyState.ONBOARDING
    mastery: Mastery = field(default_factory=Mastery)
    proactive_support_count: Count = 0
    distinct_features_seen: Count = 0
    discovered_features: tuple[str, ...] = ()
    reached_onboarding_complete: bool = False
    completion_rate: Unit = 0.0
    completion_rate_denominator: Denominator = DENOMINATOR_ALL_CATALOG
    total_catalog_workflows: Count = 0
    completed_workflow_ids: tuple[str, ...] = ()
    in_progress_workflow_ids: tuple[str, ...] = ()
    untouched_workflow_ids: tuple[str, ...] = ()
    workflow_progress: dict[str, WorkflowProgress] = field(default_factory=dict)

    def copy(self) -> SessionSnapshot:
        """A snapshot whose one dict is its own (the parts in it are frozen and shared)."""
        return msgspec.structs.replace(self, workflow_progress=dict(self.workflow_progress))

    def index_entry(self) -> SessionIndexEntry:
        return SessionIndexEntry(
            session_id=self.session_id,
            session_number=self.session_number,
            started_at=self.started_at,
            captured_at=self.captured_at,
        )

    @classmethod
    def from_adoption_state(
        cls,
        state: UserAdoptionState,
        *,
        session_id: str,
        session_number: int,
        started_at: float,
        catalog_workflow_ids: Iterable[str],
        completion_rate_denominator: Denominator = DENOMINATOR_ALL_CATALOG,
        now: float | None = None,
    ) -> SessionSnapshot:
        """Freeze the live state at the end of a session.

        Completion rate counts the catalog workflows the user completed over
        the catalog size (0 for an empty catalog), so it stays within 0..1
        even when progress exists for workflows outside the catalog.
        """
        session_id = required_id(session_id, "session_id")
        if completion_rate_denominator not in (DENOMINATOR_ALL_CATALOG, DENOMINATOR_ASSIGNED):
            raise InvalidValueError(f"unknown completion_rate_denominator {completion_rate_denominator!r}")
        at = now_or(now)
        started = timestamp(started_at, "started_at")
        SessionIndexEntry(
            session_id=session_id, session_number=session_number, started_at=started, captured_at=at
        ).checked()
        catalog = _catalog(catalog_workflow_ids)
        onboarding = state.onboarding
        completed = onboarding.completed_workflow_ids
        completed_in_catalog = len(set(completed).intersection(catalog))
        return cls(
            session_id=session_id,
            session_number=session_number,
            user_id=state.user_id,
            started_at=started,
            captured_at=at,
            duration_s=round(max(0.0, at - started), 2),
            journey_state=state.journey_state,
            mastery=state.mastery,
            proactive_support_count=onboarding.proactive_support_count,
            distinct_features_seen=onboarding.distinct_features_seen,
            discovered_features=tuple(state.discovered_features),
            reached_onboarding_complete=onboarding.is_onboarding_complete,
            completion_rate=round(completed_in_catalog / len(catalog), 4) if catalog else 0.0,
            completion_rate_denominator=completion_rate_denominator,
            total_catalog_workflows=len(catalog),
            completed_workflow_ids=tuple(completed),
            in_progress_workflow_ids=tuple(onboarding.in_progress_workflow_ids),
            untouched_workflow_ids=tuple(wid for wid in catalog if wid not in onboarding.workflow_progress),
            workflow_progress=dict(onboarding.workflow_progress),
        )


def _catalog(ids: Iterable[str]) -> list[str]:
    """The catalog's workflow ids, unique and in order; a str or non-str ids are refused."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise InvalidValueError(f"catalog_workflow_ids must be a sequence of ids, got {ids!r}")
    catalog = list(ids)
    for wid in catalog:
        if not isinstance(wid, str):
            raise InvalidValueError(f"catalog_workflow_ids must hold strings, got {wid!r}")
    return list(dict.fromkeys(catalog))
