"""msgspec Structs that ARE the stored JSON documents (see WIRE_FORMAT.md).

Decisions:
- Field names, nesting and defaults mirror the JSON, so ``msgspec.json``
  encodes and decodes a document in one pass with no mapping code.
- Range rules live in the types (``Meta(ge=..., le=...)``): a strict decode
  rejects an out-of-range value and the lenient reader (``_codec``) clamps it
  and reports the repair. Mutations clamp in code.
- Schema evolution: new fields get defaults, old annotations never change,
  unknown fields are ignored (never forbidden), so older readers read newer
  documents.
- ``SessionSnapshot`` is frozen and holds tuples; its workflow progress is a
  deep copy taken at capture, never an alias of the live state.
"""

from __future__ import annotations

import json
import math
import operator
import time
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Final, Literal, NamedTuple, cast

import msgspec
from msgspec import Meta, field

from autoplay_obs.errors import InvalidIdError, InvalidValueError
from autoplay_obs.user_adoption_state._copy import copier, deep_copy
from autoplay_obs.user_adoption_state._enums import JourneyState, MasteryLevel, WorkflowStatus

__all__ = [
    "DENOMINATOR_ALL_CATALOG",
    "DENOMINATOR_ASSIGNED",
    "MAX_SESSION_INDEX",
    "Mastery",
    "OnboardingState",
    "SessionIndexEntry",
    "SessionRecorded",
    "SessionSnapshot",
    "Sessions",
    "StepInAssessment",
    "StepProgress",
    "UserAdoptionState",
    "WorkflowProgress",
]

MAX_SESSION_INDEX: Final = 50
SOURCE_UNKNOWN: Final = "unknown"
DENOMINATOR_ALL_CATALOG: Final = "all_catalog_workflows"
DENOMINATOR_ASSIGNED: Final = "assigned_workflows"
_TIMESTAMP_MAX: Final = 1e11

Unit = Annotated[float, Meta(ge=0.0, le=1.0)]
Rating = Annotated[int, Meta(ge=0, le=10)]
Count = Annotated[int, Meta(ge=0)]
# Unix seconds. Bounded so that a decoder never hands the agent inf, a
# negative time, or a date in another millennium.
Timestamp = Annotated[float, Meta(ge=0.0, le=_TIMESTAMP_MAX)]
# Bounded above only so that it is finite: msgspec would write inf as null.
Duration = Annotated[float, Meta(ge=0.0, le=_TIMESTAMP_MAX)]
Denominator = Literal["all_catalog_workflows", "assigned_workflows"]

_json = msgspec.json.Encoder()


def dump(document: object) -> bytes:
    """JSON bytes of a document, whatever its strings hold.

    msgspec writes UTF-8 and so cannot write a lone surrogate (which a stored
    ``"\\ud800"`` escape decodes to); the rare document holding one is
    written with ASCII escapes instead, so it still round-trips unchanged.
    """
    try:
        return _json.encode(document)
    except UnicodeEncodeError:
        text = json.dumps(msgspec.to_builtins(document), ensure_ascii=True, separators=(",", ":"))
        return text.encode("ascii")


def _now(now: float | None) -> float:
    if now is None:
        return time.time()
    return _timestamp(now, "now")


def _timestamp(value: float, what: str) -> float:
    """A finite time within the range a stored document accepts, else an error."""
    number = _finite(value, what)
    if not 0.0 <= number <= _TIMESTAMP_MAX:
        raise InvalidValueError(f"{what} must be unix seconds in [0, 1e11], got {value!r}")
    return number


def _finite(value: float, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"{what} must be a number, got {value!r}") from exc
    if not math.isfinite(number):
        raise InvalidValueError(f"{what} must be finite, got {value!r}")
    return number


def _unit(value: float, what: str) -> float:
    return min(1.0, max(0.0, _finite(value, what)))


def _status(value: WorkflowStatus | str) -> WorkflowStatus:
    try:
        return WorkflowStatus(value)
    except ValueError as exc:
        raise InvalidValueError(f"unknown workflow status {value!r}") from exc


def _required_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidIdError(f"{what} must be a non-empty string, got {value!r}")
    return value


class _Document(msgspec.Struct, kw_only=True, gc=False):
    """Shared settings of every stored (sub-)document."""

    def to_dict(self) -> dict[str, Any]:
        """The plain JSON dict custom adapters receive (exactly what is stored)."""
        try:
            result: dict[str, Any] = msgspec.json.decode(_json.encode(self))
        except UnicodeEncodeError:  # a lone surrogate, which msgspec cannot read back
            result = json.loads(dump(self))
        return result

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Read a plain dict, repairing what can be repaired (see ``_codec``)."""
        from autoplay_obs.user_adoption_state._codec import read

        return read(cls, data).value


class Mastery(_Document):
    """A 0-10 rating, its band, and the reason the agent gave."""

    rating: Rating = 0
    level: MasteryLevel = MasteryLevel.NOVICE
    description: str = ""


class StepProgress(_Document):
    """The agent's belief about one step of a workflow."""

    step_id: str
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    confidence: Unit = 0.0
    evidence: str = ""
    completed_at: Timestamp | None = None
    last_evaluated_at: Timestamp = field(default_factory=time.time)


class WorkflowProgress(_Document):
    """The agent's belief about one workflow; ``source`` says who wrote it."""

    workflow_id: str
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    confidence: Unit = 0.0
    evidence: str = ""
    source: str = SOURCE_UNKNOWN
    first_detected_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    last_evaluated_at: Timestamp = field(default_factory=time.time)
    steps: dict[str, StepProgress] = {}

    @property
    def completed_step_ids(self) -> list[str]:
        return [sid for sid, step in self.steps.items() if step.status is WorkflowStatus.COMPLETED]

    def upsert_step_progress(
        self,
        step_id: str,
        *,
        status: WorkflowStatus | str,
        confidence: float,
        evidence: str = "",
        now: float | None = None,
    ) -> StepProgress:
        """Create or update a step; ``completed_at`` is stamped the first time only."""
        step_id = _required_id(step_id, "step_id")
        status = _status(status)
        confidence = _unit(confidence, "confidence")
        now = _now(now)
        step = self.steps.get(step_id)
        if step is None:
            step = self.steps[step_id] = StepProgress(step_id=step_id, last_evaluated_at=now)
        step.status = status
        step.confidence = confidence
        if evidence:
            step.evidence = evidence
        step.last_evaluated_at = now
        if status is WorkflowStatus.COMPLETED and step.completed_at is None:
            step.completed_at = now
        return step


class StepInAssessment(_Document):
    """The agent's latest "should I step in?" decision, kept even when it stayed quiet."""

    decided_at: Timestamp = field(default_factory=time.time)
    should_step_in: bool = False
    timing_assessment: str = ""
    reason: str = ""
    suggested_workflow_ids: list[str] = []


class OnboardingState(_Document):
    """Welcome lifecycle, per-workflow progress and the cross-session summary."""

    welcomed: bool = False
    exploration_started_at: Timestamp = field(default_factory=time.time)
    distinct_features_seen: Count = 0
    explore_gate_passed: bool = False
    workflow_progress: dict[str, WorkflowProgress] = {}
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
        """Create or update a workflow belief.

        ``source=None`` keeps the existing source, so a defensive re-stamp does
        not relabel who established the status. ``completed_at`` is stamped
        the first time the status becomes completed and never moves after.
        """
        workflow_id = _required_id(workflow_id, "workflow_id")
        status = _status(status)
        confidence = _unit(confidence, "confidence")
        now = _now(now)
        wp = self.workflow_progress.get(workflow_id)
        if wp is None:
            wp = self.workflow_progress[workflow_id] = WorkflowProgress(
                workflow_id=workflow_id,
                first_detected_at=now,
                last_evaluated_at=now,
                source=(source or "").strip() or SOURCE_UNKNOWN,
            )
        elif source and source.strip():
            wp.source = source.strip()
        wp.status = status
        wp.confidence = confidence
        if evidence:
            wp.evidence = evidence
        wp.last_evaluated_at = now
        if status is WorkflowStatus.COMPLETED and wp.completed_at is None:
            wp.completed_at = now
        return wp

    def record_step_in(self, assessment: StepInAssessment) -> None:
        _timestamp(assessment.decided_at, "decided_at")
        self.last_step_in = assessment
        self.last_reasoned_at = assessment.decided_at

    def mark_onboarding_complete(self, *, now: float | None = None) -> bool:
        """Stamp completion once; returns False when it was already stamped."""
        if self.onboarding_completed_at is not None:
            return False
        self.onboarding_completed_at = _now(now)
        return True


class SessionIndexEntry(_Document):
    """Pointer to one finished session; its detail lives in the snapshot."""

    session_id: str
    session_number: Count
    started_at: Timestamp
    captured_at: Timestamp


class Sessions(_Document):
    """Lifetime count (never goes down) and the most recent index entries."""

    count: Count = 0
    current_session_id: str | None = None
    index: list[SessionIndexEntry] = []
    onboarding_session_id: str | msgspec.UnsetType = msgspec.UNSET
    """The first (onboarding) session, remembered after its index entry is trimmed, so a
    long-time user still gets their onboarding context. Absent until known."""


class SessionRecorded(NamedTuple):
    """What ``record_session`` did: whether it counted, how many entries it trimmed."""

    recorded: bool
    trimmed: int


class UserAdoptionState(_Document, kw_only=True):
    """The mutable per-user record, read at session start and merged at session end."""

    revision: str | msgspec.UnsetType = field(default=msgspec.UNSET, name="_rev")
    """Opaque; a fresh random token on every write through a manager. Declared first so
    it is the document's first bytes: a compare-and-set reads 42 bytes, not the document.
    Absent (not written) until then, so documents stay exactly what other readers expect."""
    version: Literal[1] = field(default=1, name="_v")
    user_id: str
    metadata: dict[str, Any] = {}
    journey_state: JourneyState = JourneyState.ONBOARDING
    mastery: Mastery = field(default_factory=Mastery)
    discovered_features: list[str] = []
    onboarding: OnboardingState = field(default_factory=OnboardingState)
    first_seen_at: Timestamp = field(default_factory=time.time)
    last_updated_at: Timestamp = field(default_factory=time.time)
    last_judged_at: Timestamp | None = None
    sessions: Sessions = field(default_factory=Sessions)

    def __post_init__(self) -> None:
        _required_id(self.user_id, "user_id")

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
        self.last_updated_at = _now(now)

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
        clamped = int(min(10.0, max(0.0, _finite(rating, "rating"))))
        self.mastery = Mastery(rating=clamped, level=band, description=description)
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
        now = _now(now)
        self.onboarding.welcomed = True
        self.onboarding.last_welcome_at = now
        self.onboarding.proactive_support_count += 1
        self._touch(now)

    def mark_judged(self, *, now: float | None = None) -> None:
        now = _now(now)
        self.last_judged_at = now
        self._touch(now)

    def set_current_session(self, session_id: str | None) -> None:
        self.sessions.current_session_id = (session_id or "").strip() or None
        self._touch()

    def has_session(self, session_id: str) -> bool:
        return session_id in map(_session_id_of, self.sessions.index)

    def record_session(self, entry: SessionIndexEntry) -> SessionRecorded:
        """Count a finished session once and keep the index to the newest 50.

        A session already in the index is not counted again (a retried end).
        The index stays ordered oldest first by capture time (then session id,
        so concurrent ends merged in any order give the same index).
        """
        _check_entry(entry)
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
        entry = SessionIndexEntry(
            session_id=snapshot.session_id,
            session_number=snapshot.session_number,
            started_at=snapshot.started_at,
            captured_at=snapshot.captured_at,
        )
        _check_entry(entry)
        if self.has_session(entry.session_id):
            return SessionRecorded(recorded=False, trimmed=0)
        newest = max(map(_recency, self.sessions.index), default=None)
        if newest is None or _recency(entry) > newest:
            self.journey_state = snapshot.journey_state
            self.mastery = deep_copy(snapshot.mastery)
            self.onboarding.completion_rate = snapshot.completion_rate
            if summary is not None:
                self.onboarding.summary = summary
        if snapshot.reached_onboarding_complete:
            self.onboarding.mark_onboarding_complete(now=snapshot.captured_at)
        progress = self.onboarding.workflow_progress
        newer = {
            wid: theirs
            for wid, theirs in snapshot.workflow_progress.items()
            if wid not in progress or theirs.last_evaluated_at > progress[wid].last_evaluated_at
        }
        if newer:  # copied, so the state never aliases the frozen snapshot
            progress.update(_copy_progress(newer))
        onboarding = self.onboarding
        onboarding.distinct_features_seen = max(
            onboarding.distinct_features_seen, snapshot.distinct_features_seen
        )
        onboarding.proactive_support_count = max(
            onboarding.proactive_support_count, snapshot.proactive_support_count
        )
        self.record_discovered_features(snapshot.discovered_features)
        return self.record_session(entry)


_recency: Final[Callable[[SessionIndexEntry], tuple[float, str]]] = operator.attrgetter(
    "captured_at", "session_id"
)
"""An index entry's place in time order: capture time, then session id."""
_session_id_of: Final[Callable[[SessionIndexEntry], str]] = operator.attrgetter("session_id")


def _check_entry(entry: SessionIndexEntry) -> None:
    """Built in code, a Struct is not validated; a bad entry would corrupt the index order."""
    _required_id(entry.session_id, "session_id")
    _timestamp(entry.started_at, "started_at")
    _timestamp(entry.captured_at, "captured_at")
    if isinstance(entry.session_number, bool) or not isinstance(entry.session_number, int):
        raise InvalidValueError(f"session_number must be an int, got {entry.session_number!r}")
    if entry.session_number < 0:
        raise InvalidValueError(f"session_number must be >= 0, got {entry.session_number}")


def _copy_progress(progress: dict[str, WorkflowProgress]) -> dict[str, WorkflowProgress]:
    return cast("dict[str, WorkflowProgress]", copier(dict[str, WorkflowProgress])(progress))


class _StateTail(msgspec.Struct, gc=False):
    """The last fields of ``UserAdoptionState``, in its order (a test keeps them so)."""

    last_updated_at: float
    last_judged_at: float | None
    sessions: Sessions


_TAIL_KEY: Final = b',"last_updated_at":'


def encode_tail(state: UserAdoptionState) -> tuple[bytes, bytes] | None:
    """The key that starts a state's tail fields in ``encode``'s output, and their bytes.

    A change confined to them (marking a session open) re-encodes a few
    hundred bytes instead of the whole document; ``storage`` splices them onto
    the unchanged rest. None when msgspec cannot write them (a lone surrogate).
    """
    try:
        tail = _json.encode(_StateTail(state.last_updated_at, state.last_judged_at, state.sessions))
    except UnicodeEncodeError:
        return None
    return _TAIL_KEY, b"," + tail[1:]


# msgspec allows a frozen Struct to extend a mutable one; mypy applies dataclass rules.
class SessionSnapshot(_Document, frozen=True, kw_only=True):  # type: ignore[misc]
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
    workflow_progress: dict[str, WorkflowProgress] = {}

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
        session_id = _required_id(session_id, "session_id")
        if completion_rate_denominator not in (DENOMINATOR_ALL_CATALOG, DENOMINATOR_ASSIGNED):
            raise InvalidValueError(f"unknown completion_rate_denominator {completion_rate_denominator!r}")
        now = _now(now)
        started = _timestamp(started_at, "started_at")
        _check_entry(
            SessionIndexEntry(
                session_id=session_id,
                session_number=session_number,
                started_at=started,
                captured_at=now,
            )
        )
        catalog = list(dict.fromkeys(str(wid) for wid in catalog_workflow_ids))
        onboarding = state.onboarding
        completed = onboarding.completed_workflow_ids
        completed_in_catalog = len(set(completed).intersection(catalog))
        return cls(
            session_id=session_id,
            session_number=session_number,
            user_id=state.user_id,
            started_at=started,
            captured_at=now,
            duration_s=round(max(0.0, now - started), 2),
            journey_state=state.journey_state,
            mastery=deep_copy(state.mastery),
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
            workflow_progress=_copy_progress(onboarding.workflow_progress),
        )
