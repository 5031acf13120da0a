"""The onboarding-summary prompt and its input builder stay in step."""

from __future__ import annotations

import json
import string

import pytest

from autoplay_obs.prompts import ONBOARDING_SUMMARY_PROMPT
from autoplay_obs.user_adoption_state import (
    SessionSnapshot,
    UserAdoptionState,
    build_onboarding_summary_input,
)

T0 = 1_760_000_000.0


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def snapshot(duration_s: float = 754.0) -> SessionSnapshot:
    state = UserAdoptionState(user_id="u1")
    ob = state.onboarding
    ob.upsert_workflow_progress("create_project", status="completed", confidence=1.0, now=T0)
    ob.upsert_workflow_progress("invite_team", status="in_progress", confidence=0.4, now=T0)
    ob.mark_onboarding_complete(now=T0)
    state.record_discovered_features(["export", 'quote "x"'])
    state.set_mastery(rating=6, level="intermediate")
    state.set_journey_state("onboarded")
    return SessionSnapshot.from_adoption_state(
        state,
        session_id="s1",
        session_number=2,
        started_at=T0,
        catalog_workflow_ids=["create_project", "invite_team", "configure_columns"],
        now=T0 + duration_s,
    )


def test_prompt_is_a_versioned_dict_with_content():
    assert set(ONBOARDING_SUMMARY_PROMPT) == {"name", "description", "version", "content"}
    for key in ("name", "description", "version", "content"):
        assert isinstance(ONBOARDING_SUMMARY_PROMPT[key], str)
        assert ONBOARDING_SUMMARY_PROMPT[key].strip()
    major, minor, patch = ONBOARDING_SUMMARY_PROMPT["version"].split(".")
    assert all(part.isdigit() for part in (major, minor, patch))


def test_placeholders_are_exactly_the_input_keys():
    keys = set(build_onboarding_summary_input(snapshot()))
    assert placeholders(ONBOARDING_SUMMARY_PROMPT["content"]) == keys
    assert keys == {
        "session_number",
        "duration_minutes",
        "journey_state",
        "mastery_level",
        "mastery_rating",
        "reached_onboarding_complete",
        "completion_rate",
        "completed_workflow_ids_json",
        "in_progress_workflow_ids_json",
        "untouched_workflow_ids_json",
        "discovered_features_json",
    }


def test_the_prompt_formats_with_the_input():
    prompt_input = build_onboarding_summary_input(snapshot())
    content = ONBOARDING_SUMMARY_PROMPT["content"].format(**prompt_input)
    assert "{" not in content.replace(prompt_input["discovered_features_json"], "").replace(
        prompt_input["completed_workflow_ids_json"], ""
    ).replace(prompt_input["in_progress_workflow_ids_json"], "").replace(
        prompt_input["untouched_workflow_ids_json"], ""
    )
    assert '["create_project"]' in content
    assert "12.6" in content


def test_input_values_follow_the_wire_format():
    snap = snapshot()
    values = build_onboarding_summary_input(snap)
    assert values["session_number"] == 2
    assert values["duration_minutes"] == 12.6  # 754 s / 60 = 12.566...
    assert values["journey_state"] == "onboarded"
    assert values["mastery_level"] == "intermediate"
    assert values["mastery_rating"] == 6
    assert values["reached_onboarding_complete"] is True
    assert values["completion_rate"] == 0.3333
    assert json.loads(values["completed_workflow_ids_json"]) == ["create_project"]
    assert json.loads(values["in_progress_workflow_ids_json"]) == ["invite_team"]
    assert json.loads(values["untouched_workflow_ids_json"]) == ["configure_columns"]
    assert json.loads(values["discovered_features_json"]) == ["export", 'quote "x"']
    assert values["completed_workflow_ids_json"] == '["create_project"]'


@pytest.mark.parametrize(("seconds", "minutes"), [(0.0, 0.0), (29.0, 0.5), (3.0, 0.1), (3600.0, 60.0)])
def test_duration_minutes_is_rounded_to_one_place(seconds, minutes):
    assert build_onboarding_summary_input(snapshot(seconds))["duration_minutes"] == minutes


def test_the_input_does_not_depend_on_how_the_snapshot_was_read():
    snap = snapshot()
    assert build_onboarding_summary_input(SessionSnapshot.from_dict(snap.to_dict())) == (
        build_onboarding_summary_input(snap)
    )
