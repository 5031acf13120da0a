"""One simulated session's activity: workflows, steps, features and mastery on the state.

What an agent observes in a session of a project-management product, applied
to the state the session start returned, with a generator the caller seeds
per session (so a seed gives the same activity).
"""

from __future__ import annotations

import random
from typing import Final

from autoplay_obs.user_adoption_state import JourneyState, MasteryLevel, UserAdoptionState, WorkflowStatus

__all__ = ["CATALOG", "FEATURES", "act"]

CATALOG: Final[dict[str, tuple[str, ...]]] = {
    "create_project": ("name_project", "choose_template", "save_project"),
    "invite_team": ("open_members", "send_invite"),
    "configure_columns": ("open_settings", "add_column", "reorder_columns"),
    "build_automation": ("pick_trigger", "pick_action", "enable_rule"),
    "share_dashboard": ("create_dashboard", "add_widget", "share_link"),
}
FEATURES: Final = (
    "board_view", "timeline_view", "filters", "search", "bulk_edit", "comments",
    "mentions", "templates", "integrations", "keyboard_shortcuts", "export_csv", "api_tokens",
)  # fmt: skip
_BANDS: Final = (
    (9, MasteryLevel.POWER_USER),
    (7, MasteryLevel.PROFICIENT),
    (4, MasteryLevel.INTERMEDIATE),
    (2, MasteryLevel.BEGINNER),
    (0, MasteryLevel.NOVICE),
)


def act(state: UserAdoptionState, rng: random.Random) -> None:
    """One session's activity, applied to the state the agent was given."""
    if not state.onboarding.welcomed:
        state.mark_welcomed()
    progress = state.onboarding.workflow_progress
    open_ = [w for w in CATALOG if w in progress and progress[w].status is WorkflowStatus.IN_PROGRESS]
    untouched = [w for w in CATALOG if w not in progress]
    for workflow in (open_ + untouched)[: rng.randint(1, 2)]:
        steps = CATALOG[workflow]
        belief = progress.get(workflow)
        done = 0 if belief is None else len(belief.completed_step_ids)
        reached = min(len(steps), done + rng.randint(1, 2))
        complete = reached == len(steps)
        state.onboarding.upsert_workflow_progress(
            workflow,
            status=WorkflowStatus.COMPLETED if complete else WorkflowStatus.IN_PROGRESS,
            confidence=round(rng.uniform(0.6, 0.99), 2),
            evidence=f"{reached}/{len(steps)} steps seen",
            source="activity",
        )
        for step in steps[:reached]:
            state.onboarding.upsert_step_progress(
                workflow, step, status=WorkflowStatus.COMPLETED, confidence=0.9
            )
        if not complete:
            state.onboarding.upsert_step_progress(
                workflow, steps[reached], status=WorkflowStatus.IN_PROGRESS, confidence=0.5
            )
    state.record_discovered_features(rng.sample(FEATURES, rng.randint(0, 3)))
    state.onboarding.distinct_features_seen = len(state.discovered_features)
    completed = len([w for w in CATALOG if w in state.onboarding.completed_workflow_ids])
    rating = min(10, 2 * completed + rng.randint(0, 1))
    level = next(band for floor, band in _BANDS if rating >= floor)
    state.set_mastery(rating=rating, level=level, description=f"{completed} of {len(CATALOG)} workflows done")
    if completed == len(CATALOG):
        state.onboarding.mark_onboarding_complete()
        state.set_journey_state(JourneyState.ONBOARDED)
