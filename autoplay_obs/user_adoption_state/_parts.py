"""The frozen parts of the stored documents, and the value rules every mutation keeps.

Decisions:
- Every nested part that is a value (mastery, a workflow or step belief, a
  step-in decision, an index entry) is a frozen Struct. A state, its copies,
  the manager's cache and a frozen snapshot can then share the parts without
  copying them: nothing shared can change. A mutation builds a new part
  (``msgspec.structs.replace``) and puts it where the old one was.
- The dicts inside a frozen part (``WorkflowProgress.steps``) are replaced,
  never edited, by the mutations; treat them as read-only.
- Range rules live in the types (``Meta(ge=..., le=...)``): a strict decode
  rejects an out-of-range value and the lenient reader clamps it and reports
  the repair. Values built in code are checked by the helpers below, which
  raise ``InvalidValueError`` / ``InvalidIdError`` at once.
- Schema evolution: new fields get defaults, old annotations never change,
  unknown fields are ignored (never forbidden), so older readers read newer
  documents.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, field

from autoplay_obs import _json
from autoplay_obs.errors import InvalidIdError, InvalidValueError, UnreadableDocumentError
from autoplay_obs.user_adoption_state._enums import MasteryLevel, WorkflowStatus

__all__ = [
    "Document",
    "Mastery",
    "SessionIndexEntry",
    "StepInAssessment",
    "StepProgress",
    "WorkflowProgress",
]

SOURCE_UNKNOWN: Final = "unknown"
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


def now_or(now: float | None) -> float:
    return time.time() if now is None else timestamp(now, "now")


def timestamp(value: float, what: str) -> float:
    """A finite time within the range a stored document accepts, else an error."""
    number = finite(value, what)
    if not 0.0 <= number <= _TIMESTAMP_MAX:
        raise InvalidValueError(f"{what} must be unix seconds in [0, 1e11], got {value!r}")
    return number


def finite(value: float, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"{what} must be a number, got {value!r}") from exc
    if not math.isfinite(number):
        raise InvalidValueError(f"{what} must be finite, got {value!r}")
    return number


def unit(value: float, what: str) -> float:
    return min(1.0, max(0.0, finite(value, what)))


def status_of(value: WorkflowStatus | str) -> WorkflowStatus:
    try:
        return WorkflowStatus(value)
    except ValueError as exc:
        raise InvalidValueError(f"unknown workflow status {value!r}") from exc


def required_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidIdError(f"{what} must be a non-empty string, got {value!r}")
    return value


class Document(msgspec.Struct, kw_only=True, gc=False):
    """Shared settings of every stored (sub-)document."""

    def to_dict(self) -> dict[str, Any]:
        """The plain JSON dict custom adapters receive (exactly what is stored)."""
        result: dict[str, Any] = _json.loads(_json.dumps(self))
        return result

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Strictly read a dict such as ``to_dict`` gives; documents from the wild go through
        ``decode_user_state`` / ``decode_session_snapshot``, which repair and report."""
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise UnreadableDocumentError(f"{cls.__name__}: {exc}") from exc


# msgspec allows a frozen Struct to extend a mutable one; mypy applies dataclass rules.
class Part(Document, frozen=True):  # type: ignore[misc]
    """Base of the frozen parts: shared between states, copies and snapshots, never changed."""


class Mastery(Part, frozen=True):  # type: ignore[misc]
    """A 0-10 rating, its band, and the reason the agent gave (frozen: ``set_mastery``)."""

    rating: Rating = 0
    level: MasteryLevel = MasteryLevel.NOVICE
    description: str = ""


class StepProgress(Part, frozen=True):  # type: ignore[misc]
    """The agent's belief about one step (frozen: ``OnboardingState.upsert_step_progress``)."""

    step_id: str
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    confidence: Unit = 0.0
    evidence: str = ""
    completed_at: Timestamp | None = None
    last_evaluated_at: Timestamp = field(default_factory=time.time)


class WorkflowProgress(Part, frozen=True):  # type: ignore[misc]
    """The agent's belief about one workflow; ``source`` says who wrote it.

    Frozen: change it with ``OnboardingState.upsert_workflow_progress`` /
    ``upsert_step_progress``.
    """

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

    def evaluated(
        self, *, status: WorkflowStatus, confidence: float, evidence: str, source: str | None, now: float
    ) -> WorkflowProgress:
        """This belief after a new evaluation; ``completed_at`` is stamped the first time only."""
        return msgspec.structs.replace(
            self,
            status=status,
            confidence=confidence,
            evidence=evidence or self.evidence,
            source=source.strip() if source and source.strip() else self.source,
            last_evaluated_at=now,
            completed_at=_completed_at(self.completed_at, status, now),
        )

    def with_step(
        self, step_id: str, *, status: WorkflowStatus, confidence: float, evidence: str, now: float
    ) -> WorkflowProgress:
        """This belief with one step created or re-evaluated (the steps dict is replaced)."""
        step = self.steps.get(step_id) or StepProgress(step_id=step_id, last_evaluated_at=now)
        step = msgspec.structs.replace(
            step,
            status=status,
            confidence=confidence,
            evidence=evidence or step.evidence,
            last_evaluated_at=now,
            completed_at=_completed_at(step.completed_at, status, now),
        )
        return msgspec.structs.replace(self, steps={**self.steps, step_id: step})


def _completed_at(stamped: float | None, status: WorkflowStatus, now: float) -> float | None:
    if stamped is None and status is WorkflowStatus.COMPLETED:
        return now
    return stamped


class StepInAssessment(Part, frozen=True):  # type: ignore[misc]
    """The agent's latest "should I step in?" decision, kept even when it stayed quiet."""

    decided_at: Timestamp = field(default_factory=time.time)
    should_step_in: bool = False
    timing_assessment: str = ""
    reason: str = ""
    suggested_workflow_ids: tuple[str, ...] = ()


class SessionIndexEntry(Part, frozen=True):  # type: ignore[misc]
    """Pointer to one finished session; its detail lives in the snapshot."""

    session_id: str
    session_number: Count
    started_at: Timestamp
    captured_at: Timestamp

    def checked(self) -> SessionIndexEntry:
        """Built in code, a Struct is not validated; a bad entry would corrupt the index order."""
        required_id(self.session_id, "session_id")
        timestamp(self.started_at, "started_at")
        timestamp(self.captured_at, "captured_at")
        number = self.session_number
        if isinstance(number, bool) or not isinstance(number, int):
            raise InvalidValueError(f"session_number must be an int, got {number!r}")
        if number < 0:
            raise InvalidValueError(f"session_number must be >= 0, got {number}")
        return self

    @property
    def recency(self) -> tuple[float, str]:
        """Its place in time order: capture time, then session id."""
        return (self.captured_at, self.session_id)
