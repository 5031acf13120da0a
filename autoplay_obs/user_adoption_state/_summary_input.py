"""The pure input builder for ``ONBOARDING_SUMMARY_PROMPT``; it never calls an LLM."""

from __future__ import annotations

import json
from typing import Any

from autoplay_obs.user_adoption_state._snapshot import SessionSnapshot

__all__ = ["build_onboarding_summary_input"]


def build_onboarding_summary_input(snapshot: SessionSnapshot) -> dict[str, Any]:
    """The prompt's placeholders, filled from a frozen snapshot.

    The keys are exactly the placeholders of the prompt's ``content`` (a test
    keeps the two in step); list fields are JSON so they read unambiguously.
    """
    return {
        "session_number": snapshot.session_number,
        "duration_minutes": round(snapshot.duration_s / 60.0, 1),
        "journey_state": snapshot.journey_state.value,
        "mastery_level": snapshot.mastery.level.value,
        "mastery_rating": snapshot.mastery.rating,
        "reached_onboarding_complete": snapshot.reached_onboarding_complete,
        "completion_rate": snapshot.completion_rate,
        "completed_workflow_ids_json": json.dumps(list(snapshot.completed_workflow_ids)),
        "in_progress_workflow_ids_json": json.dumps(list(snapshot.in_progress_workflow_ids)),
        "untouched_workflow_ids_json": json.dumps(list(snapshot.untouched_workflow_ids)),
        "discovered_features_json": json.dumps(list(snapshot.discovered_features)),
    }
