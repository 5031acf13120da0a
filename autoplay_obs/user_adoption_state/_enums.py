"""String enums of the adoption state; their values are the wire values."""

from __future__ import annotations

from enum import Enum

__all__ = ["JourneyState", "MasteryLevel", "WorkflowStatus"]


class JourneyState(str, Enum):
    """Coarse lifecycle stage: still learning, or using the product unaided."""

    ONBOARDING = "onboarding"
    ONBOARDED = "onboarded"


class MasteryLevel(str, Enum):
    """Competence band, independent of the journey stage."""

    NOVICE = "novice"
    BEGINNER = "beginner"
    INTERMEDIATE = "intermediate"
    PROFICIENT = "proficient"
    POWER_USER = "power_user"


class WorkflowStatus(str, Enum):
    """The agent's belief about one workflow or step, inferred from activity."""

    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
