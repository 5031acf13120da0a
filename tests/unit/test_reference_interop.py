"""Documents cross between this package and the reference ``autoplay_sdk`` without loss.

Teams migrate with Redis full of documents the reference wrote, and may run
both side by side, so: what it writes we read cleanly (no repairs, every field
equal), and what we write it reads back to the very same dict.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from autoplay_sdk.user_adoption_state import models as ref
from autoplay_sdk.user_adoption_state import types as ref_types

from autoplay_obs.user_adoption_state import (
    JourneyState,
    MasteryLevel,
    SessionIndexEntry,
    SessionSnapshot,
    StepInAssessment,
    UserAdoptionState,
    WorkflowStatus,
    decode_session_snapshot,
    decode_user_state,
    encode,
)

T0 = 1_760_000_000.0
CATALOG = ["create_project", "invite_team", "configure_columns", "export_report"]
REF_DONE = ref_types.WorkflowStatus.COMPLETED
REF_GOING = ref_types.WorkflowStatus.IN_PROGRESS


def normalised(doc: dict[str, Any]) -> Any:
    """What a JSON store gives back for ``doc`` (tuples become lists, and so on)."""
    return json.loads(json.dumps(doc))


# --- states and snapshots written by the reference ------------------------------------------------


def reference_fresh_state() -> Any:
    return ref.UserAdoptionState(user_id="u_fresh")


def reference_busy_state(sessions: int = 3) -> Any:
    """A user several sessions in, built only with the reference's own API."""
    state = ref.UserAdoptionState(
        user_id="u_123",
        metadata={"role": "admin", "team": {"name": "growth", "size": 12}, "beta": True},
        first_seen_at=T0,
    )
    state.set_journey_state(ref_types.JourneyState.ONBOARDED, reason="finished tour")
    state.set_mastery(
        rating=7, level=ref_types.MasteryLevel.PROFICIENT, description="Moves fast; skips help."
    )
    state.record_discovered_features(["export", " filters ", "export", "column_editor"])
    state.mark_welcomed(now=T0 + 10)
    state.mark_judged(now=T0 + 20)
    ob = state.onboarding
    wp = ob.upsert_workflow_progress(
        "create_project",
        status=REF_GOING,
        confidence=0.4,
        evidence="opened the new-project dialog",
        source="tour",
        now=T0 + 30,
    )
    wp.upsert_step_progress("name", status=REF_DONE, confidence=0.9, evidence="typed", now=T0 + 31)
    wp.upsert_step_progress("save", status=REF_GOING, confidence=1.4, now=T0 + 32)
    ob.upsert_workflow_progress(
        "create_project", status=REF_DONE, confidence=0.95, source="activity", now=T0 + 40
    )
    ob.upsert_workflow_progress(
        "invite_team", status=REF_GOING, confidence=-0.2, evidence="opened invites", now=T0 + 50
    )
    ob.upsert_workflow_progress(
        "configure_columns", status=ref_types.WorkflowStatus.NOT_STARTED, confidence=0.0, now=T0
    )
    ob.record_step_in(
        ref.StepInAssessment(
            decided_at=T0 + 60,
            should_step_in=True,
            timing_assessment="idle for 40s",
            reason="stuck on invites",
            suggested_workflow_ids=["invite_team"],
        )
    )
    ob.mark_onboarding_complete(now=T0 + 70)
    ob.summary = "Created a project; stopped at inviting the team."
    ob.completion_rate = 0.25
    ob.distinct_features_seen = 3
    ob.explore_gate_passed = True
    state.set_current_session(f"sess_{sessions + 1}")
    for n in range(1, sessions + 1):
        state.record_session(
            ref.SessionIndexEntry(
                session_id=f"sess_{n}",
                session_number=n,
                started_at=T0 + n * 1_000,
                captured_at=T0 + n * 1_000 + 321.5,
            )
        )
    return state


def reference_snapshot(state: Any, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "session_id": "sess_9",
        "session_number": 9,
        "started_at": T0 + 9_000,
        "catalog_workflow_ids": CATALOG,
        "now": T0 + 9_000 + 1_234.5678,
    }
    kwargs.update(overrides)
    return ref.SessionSnapshot.from_adoption_state(state, **kwargs)


REFERENCE_STATES = {
    "fresh": reference_fresh_state,
    "busy": reference_busy_state,
    "index_over_cap": lambda: reference_busy_state(sessions=75),
}


@pytest.mark.parametrize("make", REFERENCE_STATES.values(), ids=REFERENCE_STATES.keys())
def test_reference_state_documents_read_cleanly_and_completely(make):
    ref_state = make()
    stored = json.dumps(ref_state.to_dict())
    for raw in (stored.encode(), json.loads(stored)):
        result = decode_user_state(raw)
        assert result.repairs == ()
        assert result.value.to_dict() == normalised(ref_state.to_dict())
    ours = result.value
    assert ours.sessions_count == ref_state.sessions_count
    assert ours.current_session_id == ref_state.current_session_id
    assert [e.session_id for e in ours.sessions_index] == [e.session_id for e in ref_state.sessions_index]


def test_the_reference_index_over_the_cap_keeps_its_lifetime_count():
    result = decode_user_state(json.dumps(reference_busy_state(sessions=75).to_dict()).encode())
    assert result.value.sessions_count == 75
    assert len(result.value.sessions_index) == 50
    assert result.value.sessions_index[0].session_id == "sess_26"


def test_reference_state_values_arrive_as_our_types():
    ours = decode_user_state(json.dumps(reference_busy_state().to_dict())).value
    assert ours.journey_state is JourneyState.ONBOARDED
    assert ours.mastery.level is MasteryLevel.PROFICIENT
    assert ours.mastery.rating == 7
    wp = ours.onboarding.workflow_progress["create_project"]
    assert wp.status is WorkflowStatus.COMPLETED
    assert (wp.completed_at, wp.source) == (T0 + 40, "activity")
    assert wp.steps["save"].confidence == 1.0  # the reference clamps when it writes
    assert ours.onboarding.workflow_progress["invite_team"].confidence == 0.0
    assert ours.onboarding.last_step_in == StepInAssessment(
        decided_at=T0 + 60,
        should_step_in=True,
        timing_assessment="idle for 40s",
        reason="stuck on invites",
        suggested_workflow_ids=("invite_team",),
    )
    assert ours.discovered_features == ["export", "filters", "column_editor"]
    assert ours.role == "admin"


@pytest.mark.parametrize("denominator", ["all_catalog_workflows", "assigned_workflows"])
def test_reference_snapshot_documents_read_cleanly_and_completely(denominator):
    ref_snap = reference_snapshot(reference_busy_state(), completion_rate_denominator=denominator)
    stored = json.dumps(ref_snap.to_dict())
    for raw in (stored.encode(), json.loads(stored)):
        result = decode_session_snapshot(raw)
        assert result.repairs == ()
        assert result.value.to_dict() == normalised(ref_snap.to_dict())
    snap = result.value
    assert snap.completed_workflow_ids == ("create_project",)
    assert snap.untouched_workflow_ids == ("export_report",)
    assert snap.completion_rate_denominator == denominator
    assert snap.duration_s == 1_234.57


def test_reference_snapshot_of_a_fresh_user_with_an_empty_catalog():
    ref_snap = reference_snapshot(reference_fresh_state(), catalog_workflow_ids=[])
    result = decode_session_snapshot(json.dumps(ref_snap.to_dict()))
    assert result.repairs == ()
    assert result.value.to_dict() == normalised(ref_snap.to_dict())
    assert result.value.completion_rate == 0.0


def test_a_reference_completion_rate_over_1_is_clamped_and_reported():
    """The reference counts completed workflows outside the catalog too; we keep 0..1."""
    state = reference_busy_state()
    state.onboarding.upsert_workflow_progress("legacy", status=REF_DONE, confidence=1.0, now=T0)
    ref_snap = reference_snapshot(state, catalog_workflow_ids=["create_project"])
    assert ref_snap.completion_rate == 2.0
    result = decode_session_snapshot(json.dumps(ref_snap.to_dict()))
    assert result.value.completion_rate == 1.0
    assert any(r.startswith("$.completion_rate:") for r in result.repairs)


# --- derivations agree -------------------------------------------------------------------------


def test_our_snapshot_derivation_matches_the_reference_for_the_same_state():
    ref_state = reference_busy_state()
    ours = decode_user_state(json.dumps(ref_state.to_dict())).value
    kwargs: dict[str, Any] = {
        "session_id": "sess_9",
        "session_number": 9,
        "started_at": T0 + 9_000,
        "catalog_workflow_ids": CATALOG,
        "now": T0 + 9_500.125,
    }
    theirs = ref.SessionSnapshot.from_adoption_state(ref_state, **kwargs)
    assert SessionSnapshot.from_adoption_state(ours, **kwargs).to_dict() == normalised(theirs.to_dict())


# --- documents we write, read by the reference ---------------------------------------------------


def our_busy_state() -> UserAdoptionState:
    state = UserAdoptionState(
        user_id="u_456", metadata={"role": "analyst", "seats": [1, 2.5, None]}, first_seen_at=T0
    )
    state.set_journey_state("onboarded")
    state.set_mastery(rating=4, level="beginner", description="Needs help with columns.")
    state.record_discovered_features(["export", "filters"])
    state.mark_welcomed(now=T0 + 1)
    state.mark_judged(now=T0 + 2)
    ob = state.onboarding
    ob.upsert_workflow_progress(
        "create_project", status="completed", confidence=0.9, evidence="saved", source="tour", now=T0
    )
    ob.upsert_step_progress(
        "create_project", "name", status="completed", confidence=1.0, evidence="typed", now=T0
    )
    ob.upsert_workflow_progress("invite_team", status="in_progress", confidence=0.3, now=T0 + 3)
    ob.record_step_in(StepInAssessment(decided_at=T0 + 4, reason="quiet", should_step_in=False))
    ob.mark_onboarding_complete(now=T0 + 5)
    ob.summary = "Done with projects."
    ob.completion_rate = 0.5
    state.set_current_session("sess_3")
    for n in (1, 2):
        state.record_session(
            SessionIndexEntry(
                session_id=f"sess_{n}",
                session_number=n,
                started_at=T0 + n * 100,
                captured_at=T0 + n * 100 + 50,
            )
        )
    return state


def our_snapshot(state: UserAdoptionState) -> SessionSnapshot:
    return SessionSnapshot.from_adoption_state(
        state,
        session_id="sess_3",
        session_number=3,
        started_at=T0 + 300,
        catalog_workflow_ids=CATALOG,
        completion_rate_denominator="assigned_workflows",
        now=T0 + 420.75,
    )


def without_our_extensions(document: dict) -> dict:
    """Our document minus the fields only this package writes (the reference ignores them).

    ``_rev`` (the compare-and-set revision) and ``sessions.onboarding_session_id``
    (the onboarding pointer kept after its index entry is trimmed) are additions;
    everything the reference knows must come through unchanged.
    """
    document = {k: v for k, v in document.items() if k != "_rev"}
    sessions = {k: v for k, v in document["sessions"].items() if k != "onboarding_session_id"}
    return {**document, "sessions": sessions}


OUR_STATES = {
    "fresh": lambda: UserAdoptionState(user_id="u_new"),
    "busy": our_busy_state,
}


@pytest.mark.parametrize("make", OUR_STATES.values(), ids=OUR_STATES.keys())
def test_our_state_documents_are_read_by_the_reference_without_loss(make):
    state = make()
    theirs = ref.UserAdoptionState.from_dict(json.loads(encode(state)))
    assert theirs.to_dict() == without_our_extensions(state.to_dict())
    assert theirs.sessions_count == state.sessions_count
    assert theirs.journey_state.value == state.journey_state.value


@pytest.mark.parametrize("make", OUR_STATES.values(), ids=OUR_STATES.keys())
def test_our_snapshot_documents_are_read_by_the_reference_without_loss(make):
    snapshot = our_snapshot(make())
    theirs = ref.SessionSnapshot.from_dict(json.loads(encode(snapshot)))
    assert theirs.to_dict() == snapshot.to_dict()
    assert theirs._frozen is True
    assert theirs.completion_rate_denominator == "assigned_workflows"


def test_a_document_survives_a_trip_through_both_packages():
    """reference writes -> we update -> reference reads -> we read: nothing lost on the way."""
    ref_state = reference_busy_state()
    ours = decode_user_state(json.dumps(ref_state.to_dict()).encode()).value
    snapshot = SessionSnapshot.from_adoption_state(
        ours,
        session_id="sess_4",
        session_number=4,
        started_at=T0 + 4_000,
        catalog_workflow_ids=CATALOG,
        now=T0 + 4_600,
    )
    assert ours.apply_session_snapshot(snapshot, summary="Fourth session.").recorded
    theirs = ref.UserAdoptionState.from_dict(json.loads(encode(ours)))
    assert theirs.to_dict() == without_our_extensions(ours.to_dict())
    assert theirs.sessions_count == 4
    assert theirs.onboarding.summary == "Fourth session."
    back = decode_user_state(json.dumps(theirs.to_dict()))
    assert back.repairs == ()
    assert back.value.to_dict() == without_our_extensions(ours.to_dict())
