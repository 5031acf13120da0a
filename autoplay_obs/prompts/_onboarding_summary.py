"""The versioned onboarding-summary prompt.

Its placeholders are exactly the keys of ``build_onboarding_summary_input``;
bump ``version`` whenever the wording or the placeholders change, so a host
that logs ``prompt_meta`` can tell summaries from different prompts apart.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ONBOARDING_SUMMARY_PROMPT"]

_CONTENT = """\
You write the hand-over note an in-product assistant reads when this user \
comes back. Base it only on the session facts below; do not invent activity.

Session facts
- Session number: {session_number} (1 is the user's first, onboarding session)
- Length: {duration_minutes} minutes
- Journey stage at the end: {journey_state}
- Skill: {mastery_level}, rated {mastery_rating} out of 10
- Finished onboarding during or before this session: {reached_onboarding_complete}
- Share of catalog workflows completed: {completion_rate} (0 to 1)
- Workflows completed: {completed_workflow_ids_json}
- Workflows started but not finished: {in_progress_workflow_ids_json}
- Workflows not yet touched: {untouched_workflow_ids_json}
- Features the user has found: {discovered_features_json}

Write three to five plain sentences, second person avoided, no lists and no \
headings: what the user got done, where they stopped, and the single most \
useful thing to offer next time (usually the unfinished workflow closest to \
done, otherwise the first untouched one). Use workflow ids exactly as given. \
If nothing was completed, say so plainly rather than praising effort.\
"""

ONBOARDING_SUMMARY_PROMPT: Final[dict[str, str]] = {
    "name": "autoplay_obs.onboarding_summary",
    "description": (
        "Turns the frozen snapshot of a finished session into a short note the "
        "agent reads at the user's next session start."
    ),
    "version": "1.0.0",
    "content": _CONTENT,
}
