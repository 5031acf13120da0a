"""The mutable per-user document and its two containers.

Decisions:
- Immutable parts, mutable top (see ``_parts``). ``UserAdoptionState`` and
  its two containers (``OnboardingState``, ``Sessions``) are mutable; their
  methods replace the frozen parts they change and keep every WIRE_FORMAT
  rule. ``copy()`` copies the containers and shares the frozen parts, so a
  copy costs a few dict and list copies whatever the document's size.
- ``metadata`` is the host's free-form JSON (``_json_values``); each copy
  gets its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

import msgspec
from msgspec import field

from autoplay_obs.errors import InvalidValueError
from autoplay_obs.user_adoption_state._enums import JourneyState, MasteryLevel, WorkflowStatus
from autoplay_obs.user_adoption_state._json_values import copy_json, plain_json
from autoplay_obs.user_adoption_state._parts import (
    SOURCE_UNKNOWN,
    Count,
    Document,
    Mastery,
    SessionIndexEntry,
    StepInAssessment,
    Timestamp,
    Unit,
    WorkflowProgress,
    finite,
    now_or,
    required_id,
    status_of,
    timestamp,
    unit,
)

if TYPE_CHECKING:
    from autoplay_obs.user_adoption_state._snapshot import SessionSnapshot

__all__ = [
    "MAX_SESSION_INDEX",
    "OnboardingState",
    "SessionRecorded",
    "Sessions",
    "UserAdoptionState",
]

MAX_SESSION_INDEX: Final = 50


class OnboardingState(Document):
    """Welcome lifecycle, per-workflow progress and the cross-session summary."""

    welcomed: bool = False
    exploration_started_at: Timestamp = field(default_factory=time.time)
    distinct_features_seen: Count = 0
    explore_gate_passed: bool = False
    workflow_progress: dict[str, WorkflowProgress] = field(default_factory=dict)
    last_step_in: StepInAssessment | None = None
    last_reasoned_at: Timestamp | None = None
    last_welcome_at: Timestamp | None = None
    proactive_support_count: Count = 0
    onboarding_completed_at: Timestamp | None = None
    summary: str | None = None
    completion_rate: Unit = 0.0

    @property
    def completed_workflow_ids(self) -> list[str]:
        return self._ids_with(WorkflowStatus.COMPLETED)

    @property
    def in_progress_workflow_ids(self) -> list[str]:
        return self._ids_with(WorkflowStatus.IN_PROGRESS)

    def _ids_with(self, status: WorkflowStatus) -> list[str]:
        return [wid for wid, wp in self.workflow_progress.items() if wp.status is status]

    @property
    def is_onboarding_complete(self) -> bool:
        return self.onboarding_completed_at is not None

    def upsert_workflow_progress(
        self,
        workflow_id: str,
        *,
        status: WorkflowStatus | str,
        confidence: float,
        evidence: str = "",
        source: str | None = None,
        now: float | None = None,
    ) -> WorkflowProgress:
        """Create or re-evaluate a workflow belief; returns the new (frozen) belief.

        ``source=None`` keeps the existing source, so a defensive re-stamp does
        not relabel who established the status. ``completed_at`` is stamped
        the first time the status becomes completed and never moves after.
        """
        workflow_id = required_id(workflow_id, "workflow_id")
        new_status, score, at = status_of(status), unit(confidence, "confidence"), now_or(now)
        wp = self.workflow_progress.get(workflow_id) or WorkflowProgress(
            workflow_id=workflow_id,
            first_detected_at=at,
            last_evaluated_at=at,
            source=(source or "").strip() or SOURCE_UNKNOWN,
        )
        wp = wp.evaluated(status=new_status, confidence=score, evidence=evidence, source=source, now=at)
        self.workflow_progress[workflow_id] = wp
        return wp

    def upsert_step_progress(
        self,
        workflow_id: str,
        step_id: str,
        *,
        status: WorkflowStatus | str,
        confidence: float,
        evidence: str = "",
        now: float | None = None,
    ) -> WorkflowProgress:
        """Create or re-evaluate one step of a workflow (created, not started, if absent)."""
        workflow_id = required_id(workflow_id, "workflow_id")
        step_id = required_id(step_id, "step_id")
        new_status, score, at = status_of(status), unit(confidence, "confidence"), now_or(now)
        wp = self.workflow_progress.get(workflow_id) or WorkflowProgress(
            workflow_id=workflow_id, first_detected_at=at, last_evaluated_at=at
        )
        wp = wp.with_step(step_id, status=new_status, confidence=score, evidence=evidence, now=at)
        self.workflow_progress[workflow_id] = wp
        return wp

    def record_step_in(self, assessment: StepInAssessment) -> None:
        timestamp(assessment.decided_at, "decided_at")
        ids = tuple(assessment.suggested_workflow_ids)
        self.last_step_in = msgspec.structs.replace(assessment, suggested_workflow_ids=ids)
        self.last_reasoned_at = assessment.decided_at

    def mark_onboarding_complete(self, *, now: float | None = None) -> bool:
        """Stamp completion once; returns False when it was already stamped."""
        if self.onboarding_completed_at is not None:
            return False
        self.onboarding_completed_at = now_or(now)
        return True


class Sessions(Document):
    """Lifetime count (never goes down) and the most recent index entries."""

    count: Count = 0
    current_session_id: str | None = None
    index: list[SessionIndexEntry] = field(default_factory=list)
    onboarding_session_id: str | msgspec.UnsetType = msgspec.UNSET
    """The first (onboarding) session, remembered after its index entry is trimmed, so a
    long-time user still gets their onboarding context. Absent until known."""


class SessionRecorded(NamedTuple):
    """What ``record_session`` did: whether it counted, how many entries it trimmed."""

    recorded: bool
    trimmed: int


class UserAdoptionState(Document, kw_only=True):
    """The mutable per-user record, read at session start and merged at session end."""

    revision: str | msgspec.UnsetType = field(default=msgspec.UNSET, name="_rev")
    """Opaque; a fresh random token on every write through a manager. Declared first so
    it is the document's first bytes: a compare-and-set reads 42 bytes, not the document.
    Absent (not written) until then, so documents stay exactly what other readers expect."""
    version: Literal[1] = field(default=1, name="_v")
    user_id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    journey_state: JourneyState = JourneyState.ONBOARDING
    mastery: Mastery = field(default_factory=Mastery)
    discovered_features: list[str] = field(default_factory=list)
    onboarding: OnboardingState = field(default_factory=OnboardingState)
    first_seen_at: Timestamp = field(default_factory=time.time)
    last_updated_at: Timestamp = field(default_factory=time.time)
    last_judged_at: Timestamp | None = None
    sessions: Sessions = field(default_factory=Sessions)

    def __post_init__(self) -> None:
        required_id(self.user_id, "user_id")

    def copy(self) -> UserAdoptionState:
        """A state of its own: containers copied, frozen parts shared."""
        return msgspec.structs.replace(
            self,
            metadata=copy_json(self.metadata),
            discovered_features=list(self.discovered_features),
            onboarding=msgspec.structs.replace(
                self.onboarding, workflow_progress=dict(self.onboarding.workflow_progress)
            ),
            sessions=msgspec.structs.replace(self.sessions, index=list(self.sessions.index)),
        )

    # The seed's flat names for the nested ``sessions`` object.
    @property
    def sessions_count(self) -> int:
        return self.sessions.count

    @property
    def current_session_id(self) -> str | None:
        return self.sessions.current_session_id

    @property
    def sessions_index(self) -> list[SessionIndexEntry]:
        return self.sessions.index

    @property
    def role(self) -> str | None:
        role = self.metadata.get("role")
        return None if role is None else str(role)

    def _touch(self, now: float | None = None) -> None:
        self.last_updated_at = now_or(now)

    def set_journey_state(self, journey_state: JourneyState | str) -> None:
        try:
            new = JourneyState(journey_state)
        except ValueError as exc:
            raise InvalidValueError(f"unknown journey state {journey_state!r}") from exc
        if new is not self.journey_state:
            self.journey_state = new
            self._touch()

    def set_mastery(self, *, rating: float, level: MasteryLevel | str, description: str = "") -> None:
        """Set the rating (clamped to 0..10) with its band and reason."""
        try:
            band = MasteryLevel(level)
        except ValueError as exc:
            raise InvalidValueError(f"unknown mastery level {level!r}") from exc
        clamped = int(min(10.0, max(0.0, finite(rating, "rating"))))
        self.mastery = Mastery(rating=clamped, level=band, description=description)
        self._touch()

    def set_metadata(self, key: str, value: Any) -> None:
        """Set one metadata entry, as plain JSON (see ``plain_json``)."""
        if not isinstance(key, str):
            raise InvalidValueError(f"metadata keys must be strings, got {key!r}")
        self.metadata[key] = plain_json(value)
        self._touch()

    def record_discovered_features(self, features: Iterable[str]) -> list[str]:
        """Add features not seen before, in order of discovery; returns the new ones."""
        if isinstance(features, str):  # would otherwise add one feature per character
            raise InvalidValueError(f"features must be an iterable of names, got {features!r}")
        known = set(self.discovered_features)
        added = []
        for feature in features:
            name = feature.strip() if isinstance(feature, str) else ""
            if name and name not in known:
                known.add(name)
                added.append(name)
        if added:
            self.discovered_features.extend(added)
            self._touch()
        return added

    def mark_welcomed(self, *, now: float | None = None) -> None:
        at = now_or(now)
        self.onboarding.welcomed = True
        self.onboarding.last_welcome_at = at
        self.onboarding.proactive_support_count += 1
        self._touch(at)

    def mark_judged(self, *, now: float | None = None) -> None:
        at = now_or(now)
        self.last_judged_at = at
        self._touch(at)

    def set_current_session(self, session_id: str | None) -> None:
        self.sessions.current_session_id = (session_id or "").strip() or None
        self._touch()

    def has_session(self, session_id: str) -> bool:
        return any(entry.session_id == session_id for entry in self.sessions.index)

    def record_session(self, entry: SessionIndexEntry) -> SessionRecorded:
        """Count a finished session once and keep the index to the newest 50.

        A session already in the index is not counted again (a retried end).
        The index stays ordered oldest first by capture time (then session id,
        so concurrent ends merged in any order give the same index).
        """
        entry.checked()
        if self.has_session(entry.session_id):
            return SessionRecorded(recorded=False, trimmed=0)
        index = self.sessions.index
        index.append(entry)
        index.sort(key=_recency)
        if self.sessions.onboarding_session_id is msgspec.UNSET:
            first = next((e.session_id for e in index if e.session_number == 1), None)
            if first is not None:
                self.sessions.onboarding_session_id = first
        trimmed = max(0, len(index) - MAX_SESSION_INDEX)
        del index[:trimmed]
        self.sessions.count += 1
        self._touch()
        return SessionRecorded(recorded=True, trimmed=trimmed)

    def apply_session_snapshot(
        self, snapshot: SessionSnapshot, *, summary: str | None = None
    ) -> SessionRecorded:
        """Merge a finished session into the state; a no-op for a session already counted.

        Order-independent under concurrent ends: the latest-captured session
        decides journey, mastery, completion rate and summary; workflow beliefs
        merge per workflow, newest evaluation wins; features and the completion
        stamp only ever accumulate.
        """
        entry = snapshot.index_entry().checked()
        if self.has_session(entry.session_id):
            return SessionRecorded(recorded=False, trimmed=0)
        onboarding = self.onboarding
        newest = max(map(_recency, self.sessions.index), default=None)
        if newest is None or entry.recency > newest:
            self.journey_state = snapshot.journey_state
            self.mastery = snapshot.mastery
            onboarding.completion_rate = snapshot.completion_rate
            if summary is not None:
                onboarding.summary = summary
        if snapshot.reached_onboarding_complete:
            onboarding.mark_onboarding_complete(now=snapshot.captured_at)
        progress = onboarding.workflow_progress
        for wid, theirs in snapshot.workflow_progress.items():
            ours = progress.get(wid)
            if ours is None or theirs.last_evaluated_at > ours.last_evaluated_at:
                progress[wid] = theirs
        onboarding.distinct_features_seen = max(
            onboarding.distinct_features_seen, snapshot.distinct_features_seen
        )
        onboarding.proactive_support_count = max(
            onboarding.proactive_support_count, snapshot.proactive_support_count
        )
        self.record_discovered_features(snapshot.discovered_features)
        return self.record_session(entry)


def _recency(entry: SessionIndexEntry) -> tuple[float, str]:
    return entry.recency
