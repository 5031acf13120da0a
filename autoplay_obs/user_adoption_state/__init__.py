"""The per-user adoption record and the frozen per-session snapshot.

The Structs here are the stored documents; see ``_parts`` (the frozen parts)
and ``_models`` for the rules they keep, and ``_codec`` for how documents from
the wild are read. Layering: enums <- parts <- models, snapshot <- codec.
"""

from __future__ import annotations

from autoplay_obs.user_adoption_state._codec import (
    Decoded,
    decode_session_snapshot,
    decode_user_state,
    encode,
)
from autoplay_obs.user_adoption_state._enums import JourneyState, MasteryLevel, WorkflowStatus
from autoplay_obs.user_adoption_state._models import (
    MAX_SESSION_INDEX,
    OnboardingState,
    SessionRecorded,
    Sessions,
    UserAdoptionState,
)
from autoplay_obs.user_adoption_state._parts import (
    Mastery,
    SessionIndexEntry,
    StepInAssessment,
    StepProgress,
    WorkflowProgress,
)
from autoplay_obs.user_adoption_state._snapshot import (
    DENOMINATOR_ALL_CATALOG,
    DENOMINATOR_ASSIGNED,
    SessionSnapshot,
)
from autoplay_obs.user_adoption_state._summary_input import build_onboarding_summary_input

__all__ = [
    "DENOMINATOR_ALL_CATALOG",
    "DENOMINATOR_ASSIGNED",
    "Decoded",
    "JourneyState",
    "MAX_SESSION_INDEX",
    "Mastery",
    "MasteryLevel",
    "OnboardingState",
    "SessionIndexEntry",
    "SessionRecorded",
    "SessionSnapshot",
    "Sessions",
    "StepInAssessment",
    "StepProgress",
    "UserAdoptionState",
    "WorkflowProgress",
    "WorkflowStatus",
    "build_onboarding_summary_input",
    "decode_session_snapshot",
    "decode_user_state",
    "encode",
]
