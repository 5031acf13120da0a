"""The rules the models keep when code mutates them (WIRE_FORMAT.md)."""

from __future__ import annotations

import json
import math
import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoplay_obs.errors import InvalidIdError, InvalidValueError
from autoplay_obs.user_adoption_state import (
    DENOMINATOR_ASSIGNED,
    MAX_SESSION_INDEX,
    JourneyState,
    MasteryLevel,
    SessionIndexEntry,
    SessionSnapshot,
    StepInAssessment,
    UserAdoptionState,
    WorkflowStatus,
)

T0 = 1_700_000_000.0
BAD_NUMBERS = [math.nan, math.inf, -math.inf, "abc", [1.0]]


def new_state(user_id: str = "u1") -> UserAdoptionState:
    return UserAdoptionState(user_id=user_id, first_seen_at=T0, last_updated_at=T0)


def entry(n: int, *, captured_at: float | None = None) -> SessionIndexEntry:
    started = T0 + n * 1_000.0
    return SessionIndexEntry(
        session_id=f"s{n:03d}",
        session_number=n,
        started_at=started,
        captured_at=started + 100.0 if captured_at is None else captured_at,
    )


# --- clamping -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_confidence", "stored"), [(1.7, 1.0), (-0.3, 0.0), (0.42, 0.42), (1, 1.0), (0, 0.0)]
)
def test_confidence_is_clamped_on_workflows_and_steps(given_confidence, stored):
    state = new_state()
    wp = state.onboarding.upsert_workflow_progress(
        "w1", status="in_progress", confidence=given_confidence, now=T0
    )
    wp = state.onboarding.upsert_step_progress(
        "w1", "s1", status="in_progress", confidence=given_confidence, now=T0
    )
    step = wp.steps["s1"]
    assert wp.confidence == stored
    assert step.confidence == stored
    assert isinstance(wp.confidence, float)


@pytest.mark.parametrize(("rating", "stored"), [(15, 10), (-3, 0), (7, 7), (7.9, 7), (10, 10)])
def test_mastery_rating_is_clamped_to_0_10(rating, stored):
    state = new_state()
    state.set_mastery(rating=rating, level=MasteryLevel.PROFICIENT, description="why")
    assert state.mastery.rating == stored
    assert type(state.mastery.rating) is int
    assert state.mastery.level is MasteryLevel.PROFICIENT
    assert state.mastery.description == "why"


def test_set_mastery_accepts_the_level_as_its_wire_string():
    state = new_state()
    state.set_mastery(rating=3, level="power_user")
    assert state.mastery.level is MasteryLevel.POWER_USER


# --- stamp-once timestamps ------------------------------------------------------------


def test_workflow_completed_at_is_stamped_once_and_never_moves():
    ob = new_state().onboarding
    wp = ob.upsert_workflow_progress("w1", status="in_progress", confidence=0.2, now=T0)
    assert wp.completed_at is None
    assert wp.first_detected_at == T0
    wp = ob.upsert_workflow_progress("w1", status=WorkflowStatus.COMPLETED, confidence=0.9, now=T0 + 10)
    assert wp.completed_at == T0 + 10
    ob.upsert_workflow_progress("w1", status="completed", confidence=1.0, now=T0 + 20)
    ob.upsert_workflow_progress("w1", status="in_progress", confidence=0.5, now=T0 + 30)
    wp = ob.upsert_workflow_progress("w1", status="completed", confidence=1.0, now=T0 + 40)
    assert wp.completed_at == T0 + 10
    assert wp.first_detected_at == T0
    assert wp.last_evaluated_at == T0 + 40
    assert ob.workflow_progress["w1"] is wp


def test_step_completed_at_is_stamped_once_and_never_moves():
    ob = new_state().onboarding
    ob.upsert_workflow_progress("w1", status="in_progress", confidence=0.2, now=T0)
    wp = ob.upsert_step_progress("w1", "s1", status="in_progress", confidence=0.3, now=T0)
    assert wp.steps["s1"].completed_at is None
    ob.upsert_step_progress("w1", "s1", status="completed", confidence=0.9, now=T0 + 5)
    ob.upsert_step_progress("w1", "s1", status="not_started", confidence=0.1, now=T0 + 6)
    wp = ob.upsert_step_progress("w1", "s1", status="completed", confidence=0.9, now=T0 + 7)
    step = wp.steps["s1"]
    assert step.completed_at == T0 + 5
    assert step.last_evaluated_at == T0 + 7
    assert wp.completed_step_ids == ["s1"]


def test_onboarding_completed_at_is_stamped_once():
    ob = new_state().onboarding
    assert not ob.is_onboarding_complete
    assert ob.mark_onboarding_complete(now=T0) is True
    assert ob.mark_onboarding_complete(now=T0 + 99) is False
    assert ob.onboarding_completed_at == T0
    assert ob.is_onboarding_complete


def test_evidence_and_source_are_kept_unless_given():
    ob = new_state().onboarding
    ob.upsert_workflow_progress(
        "w1", status="in_progress", confidence=0.2, evidence="opened", source="tour", now=T0
    )
    wp = ob.upsert_workflow_progress("w1", status="completed", confidence=0.9, now=T0 + 1)
    assert (wp.evidence, wp.source) == ("opened", "tour")
    wp = ob.upsert_workflow_progress("w1", status="completed", confidence=0.9, source=" judge ", now=T0 + 2)
    assert wp.source == "judge"
    assert ob.upsert_workflow_progress("w2", status="in_progress", confidence=0.1).source == ("unknown")


# --- discovered features ------------------------------------------------------------


def test_features_are_unique_in_order_of_discovery():
    state = new_state()
    assert state.record_discovered_features(["a", " b ", "a", "", "   ", "c"]) == ["a", "b", "c"]
    assert state.record_discovered_features(["c", "d", "b", "d"]) == ["d"]
    assert state.record_discovered_features([]) == []
    assert state.discovered_features == ["a", "b", "c", "d"]


def test_features_given_as_a_bare_string_are_refused_not_split_into_letters():
    state = new_state()
    with pytest.raises(InvalidValueError):
        state.record_discovered_features("export")
    assert state.discovered_features == []


# --- sessions: count, index cap, idempotence --------------------------------------------


def test_index_keeps_newest_50_oldest_first_and_count_is_lifetime():
    state = new_state()
    trimmed = [state.record_session(entry(n)).trimmed for n in range(1, 121)]
    assert state.sessions_count == 120
    assert len(state.sessions_index) == MAX_SESSION_INDEX == 50
    assert [e.session_number for e in state.sessions_index] == list(range(71, 121))
    assert sum(trimmed) == 70
    assert state.sessions.count == state.sessions_count


def test_record_session_is_idempotent_per_session_id():
    state = new_state()
    first = state.record_session(entry(1))
    again = state.record_session(entry(1, captured_at=T0 + 5_000))
    assert first.recorded is True
    assert again.recorded is False
    assert state.sessions_count == 1
    assert [e.session_id for e in state.sessions_index] == ["s001"]
    assert state.has_session("s001")
    assert not state.has_session("s002")


def test_index_is_ordered_by_capture_time_whatever_the_recording_order():
    state = new_state()
    numbers = list(range(1, 11))
    random.Random(3).shuffle(numbers)
    for n in numbers:
        state.record_session(entry(n))
    assert [e.session_number for e in state.sessions_index] == list(range(1, 11))


def test_seed_attribute_names():
    state = new_state()
    assert state.sessions_count == 0
    assert state.sessions_index == []
    assert state.current_session_id is None
    state.set_current_session("sess_abc")
    assert state.current_session_id == "sess_abc"
    state.set_current_session("  ")
    assert state.current_session_id is None
    state.record_session(entry(1))
    assert state.sessions_count == 1
    assert state.sessions_index[0].session_id == "s001"


# --- apply_session_snapshot ---------------------------------------------------------------


def snapshot_of(state: UserAdoptionState, n: int, *, captured_at: float) -> SessionSnapshot:
    return SessionSnapshot.from_adoption_state(
        state,
        session_id=f"s{n:03d}",
        session_number=n,
        started_at=captured_at - 600.0,
        catalog_workflow_ids=["w0", "w1", "w2", "w3"],
        now=captured_at,
    )


def diverse_snapshots(count: int) -> list[SessionSnapshot]:
    """Snapshots of one user's evolving state, each session learning something new."""
    live = new_state()
    snapshots = []
    for n in range(1, count + 1):
        t = T0 + n * 3_600.0
        live.set_mastery(rating=n, level=list(MasteryLevel)[n % 5], description=f"after {n}")
        live.set_journey_state(JourneyState.ONBOARDED if n % 2 else JourneyState.ONBOARDING)
        live.onboarding.upsert_workflow_progress(
            f"w{n % 4}", status=list(WorkflowStatus)[n % 3], confidence=n / 10, now=t
        )
        live.record_discovered_features([f"f{n}"])
        live.onboarding.distinct_features_seen = n
        snapshots.append(snapshot_of(live, n, captured_at=t))
    return snapshots


def merge(snapshots: list[SessionSnapshot]) -> UserAdoptionState:
    state = new_state()
    for snap in snapshots:
        state.apply_session_snapshot(snap, summary=f"summary of {snap.session_id}")
    return state


def test_apply_session_snapshot_is_idempotent():
    snap = diverse_snapshots(1)[0]
    state = new_state()
    assert state.apply_session_snapshot(snap, summary="one").recorded is True
    before = state.to_dict()
    assert state.apply_session_snapshot(snap, summary="two").recorded is False
    assert state.to_dict() == before
    assert state.sessions_count == 1
    assert state.onboarding.summary == "one"


@settings(max_examples=60, deadline=None)
@given(order=st.permutations(range(6)))
def test_apply_session_snapshot_is_order_independent(order):
    snapshots = diverse_snapshots(6)
    expected = merge(snapshots)
    merged = merge([snapshots[i] for i in order])
    assert merged.journey_state is expected.journey_state
    assert merged.mastery == expected.mastery == snapshots[-1].mastery
    assert merged.sessions_count == expected.sessions_count == 6
    assert merged.sessions_index == expected.sessions_index
    assert merged.onboarding.workflow_progress == expected.onboarding.workflow_progress
    assert merged.onboarding.completion_rate == expected.onboarding.completion_rate
    assert merged.onboarding.summary == expected.onboarding.summary == "summary of s006"
    assert merged.onboarding.distinct_features_seen == 6
    assert set(merged.discovered_features) == {f"f{n}" for n in range(1, 7)}


def test_snapshots_captured_at_the_same_instant_merge_the_same_either_way():
    a_state, b_state = new_state(), new_state()
    a_state.set_mastery(rating=2, level="beginner")
    b_state.set_mastery(rating=9, level="power_user")
    b_state.set_journey_state("onboarded")
    a = snapshot_of(a_state, 1, captured_at=T0)
    b = snapshot_of(b_state, 2, captured_at=T0)
    ab, ba = merge([a, b]), merge([b, a])
    assert ab.mastery == ba.mastery
    assert ab.journey_state is ba.journey_state
    assert ab.sessions_index == ba.sessions_index


def test_apply_session_snapshot_accumulates_completion_and_counts():
    live = new_state()
    live.onboarding.mark_onboarding_complete(now=T0)
    snap = snapshot_of(live, 1, captured_at=T0 + 50)
    state = new_state()
    state.apply_session_snapshot(snap)
    assert state.onboarding.onboarding_completed_at == T0 + 50
    assert state.sessions_index == [
        SessionIndexEntry(session_id="s001", session_number=1, started_at=T0 - 550, captured_at=T0 + 50)
    ]


# --- invalid input to mutations ---------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_bad_numbers_to_mutations_raise_invalid_value(bad):
    state = new_state()
    state.onboarding.upsert_workflow_progress("w1", status="in_progress", confidence=0.1)
    calls = [
        lambda: state.set_mastery(rating=bad, level="novice"),
        lambda: state.onboarding.upsert_workflow_progress("w1", status="completed", confidence=bad),
        lambda: state.onboarding.upsert_workflow_progress("w1", status="completed", confidence=0.5, now=bad),
        lambda: state.onboarding.upsert_step_progress("w1", "s1", status="completed", confidence=bad),
        lambda: state.onboarding.upsert_step_progress(
            "w1", "s1", status="completed", confidence=0.5, now=bad
        ),
        lambda: state.mark_welcomed(now=bad),
        lambda: state.mark_judged(now=bad),
        lambda: state.onboarding.mark_onboarding_complete(now=bad),
        lambda: state.record_session(entry(1, captured_at=bad)),
        lambda: state.onboarding.record_step_in(StepInAssessment(decided_at=bad)),
        lambda: SessionSnapshot.from_adoption_state(
            state, session_id="s", session_number=1, started_at=bad, catalog_workflow_ids=[]
        ),
        lambda: SessionSnapshot.from_adoption_state(
            state, session_id="s", session_number=1, started_at=T0, catalog_workflow_ids=[], now=bad
        ),
    ]
    before = state.to_dict()
    for call in calls:
        with pytest.raises(InvalidValueError):
            call()
    assert state.to_dict() == before


def test_none_is_not_a_rating_or_a_confidence():
    state = new_state()
    with pytest.raises(InvalidValueError):
        state.set_mastery(rating=None, level="novice")  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError):
        state.onboarding.upsert_workflow_progress("w1", status="completed", confidence=None)  # type: ignore[arg-type]
    assert state.onboarding.workflow_progress == {}


@pytest.mark.parametrize("bad_time", [-1.0, 1e12])
def test_times_outside_the_stored_range_raise(bad_time):
    state = new_state()
    with pytest.raises(InvalidValueError):
        state.mark_judged(now=bad_time)
    with pytest.raises(InvalidValueError):
        state.record_session(entry(1, captured_at=bad_time))
    assert state.last_judged_at is None
    assert state.sessions_count == 0


def test_bad_enums_raise_invalid_value():
    state = new_state()
    wp = state.onboarding.upsert_workflow_progress("w1", status="in_progress", confidence=0.1)
    with pytest.raises(InvalidValueError):
        state.set_journey_state("graduated")
    with pytest.raises(InvalidValueError):
        state.set_mastery(rating=3, level="wizard")
    with pytest.raises(InvalidValueError):
        state.onboarding.upsert_workflow_progress("w1", status="done", confidence=0.5)
    with pytest.raises(InvalidValueError):
        state.onboarding.upsert_step_progress("w1", "s1", status="half", confidence=0.5)
    with pytest.raises(InvalidValueError):
        SessionSnapshot.from_adoption_state(
            state,
            session_id="s",
            session_number=1,
            started_at=T0,
            catalog_workflow_ids=[],
            completion_rate_denominator="per_team",  # type: ignore[arg-type]
        )
    assert wp.status is WorkflowStatus.IN_PROGRESS
    assert state.journey_state is JourneyState.ONBOARDING


@pytest.mark.parametrize("number", [-1, True, 1.5, "2"])
def test_bad_session_numbers_raise(number):
    with pytest.raises(InvalidValueError):
        SessionSnapshot.from_adoption_state(
            new_state(), session_id="s", session_number=number, started_at=T0, catalog_workflow_ids=[]
        )


@pytest.mark.parametrize("user_id", ["", "   ", None, 7])
def test_empty_or_non_string_user_id_raises_invalid_id(user_id):
    with pytest.raises(InvalidIdError):
        UserAdoptionState(user_id=user_id)


def test_empty_workflow_step_and_session_ids_raise_invalid_id():
    state = new_state()
    wp = state.onboarding.upsert_workflow_progress("w1", status="in_progress", confidence=0.1)
    with pytest.raises(InvalidIdError):
        state.onboarding.upsert_workflow_progress("", status="in_progress", confidence=0.1)
    with pytest.raises(InvalidIdError):
        state.onboarding.upsert_step_progress("w1", " ", status="in_progress", confidence=0.1)
    with pytest.raises(InvalidIdError):
        SessionSnapshot.from_adoption_state(
            state, session_id="", session_number=1, started_at=T0, catalog_workflow_ids=[]
        )
    assert list(state.onboarding.workflow_progress) == ["w1"]
    assert wp.steps == {}


# --- SessionSnapshot.from_adoption_state -----------------------------------------------------


def state_with_progress() -> UserAdoptionState:
    state = new_state()
    ob = state.onboarding
    ob.upsert_workflow_progress("a", status="completed", confidence=0.9, now=T0)
    ob.upsert_workflow_progress("b", status="in_progress", confidence=0.4, now=T0)
    ob.upsert_workflow_progress("x", status="completed", confidence=0.8, now=T0)  # not in catalog
    ob.upsert_workflow_progress("n", status="not_started", confidence=0.0, now=T0)
    ob.proactive_support_count = 3
    ob.distinct_features_seen = 5
    state.record_discovered_features(["export", "filters"])
    state.set_mastery(rating=4, level="beginner", description="learning")
    return state


def test_snapshot_derives_ids_and_completion_rate_from_the_catalog():
    state = state_with_progress()
    snap = SessionSnapshot.from_adoption_state(
        state,
        session_id="s1",
        session_number=1,
        started_at=T0,
        catalog_workflow_ids=["a", "b", "c", "d", "n", "a"],
        now=T0 + 12.3456,
    )
    assert snap.completed_workflow_ids == ("a", "x")
    assert snap.in_progress_workflow_ids == ("b",)
    assert snap.untouched_workflow_ids == ("c", "d")
    assert snap.total_catalog_workflows == 5
    assert snap.completion_rate == 0.2  # only "a" is both completed and in the catalog
    assert snap.duration_s == 12.35
    assert (snap.started_at, snap.captured_at) == (T0, T0 + 12.3456)
    assert snap.user_id == "u1"
    assert snap.mastery == state.mastery
    assert snap.proactive_support_count == 3
    assert snap.distinct_features_seen == 5
    assert snap.discovered_features == ("export", "filters")
    assert snap.reached_onboarding_complete is False
    assert snap.completion_rate_denominator == "all_catalog_workflows"


def test_completion_rate_rounds_to_four_places_and_is_zero_for_an_empty_catalog():
    state = state_with_progress()
    thirds = SessionSnapshot.from_adoption_state(
        state, session_id="s", session_number=2, started_at=T0, catalog_workflow_ids=["a", "b", "c"]
    )
    empty = SessionSnapshot.from_adoption_state(
        state,
        session_id="s",
        session_number=2,
        started_at=T0,
        catalog_workflow_ids=[],
        completion_rate_denominator=DENOMINATOR_ASSIGNED,
    )
    assert thirds.completion_rate == 0.3333
    assert empty.completion_rate == 0.0
    assert empty.total_catalog_workflows == 0
    assert empty.untouched_workflow_ids == ()
    assert empty.completion_rate_denominator == "assigned_workflows"


@pytest.mark.parametrize(
    ("started", "now", "duration"), [(T0 + 50, T0, 0.0), (T0, T0, 0.0), (T0, T0 + 0.005, 0.01)]
)
def test_duration_is_never_negative_and_rounded(started, now, duration):
    snap = SessionSnapshot.from_adoption_state(
        new_state(),
        session_id="s",
        session_number=1,
        started_at=started,
        catalog_workflow_ids=[],
        now=now,
    )
    assert snap.duration_s == duration


def test_snapshot_is_a_deep_copy_of_the_state():
    state = state_with_progress()
    state.onboarding.upsert_step_progress("a", "s1", status="in_progress", confidence=0.5, now=T0)
    snap = SessionSnapshot.from_adoption_state(
        state, session_id="s1", session_number=1, started_at=T0, catalog_workflow_ids=["a", "b"]
    )
    frozen = snap.to_dict()
    ob = state.onboarding
    ob.upsert_workflow_progress("a", status="in_progress", confidence=0.1, evidence="undo", now=T0)
    ob.upsert_workflow_progress("c", status="completed", confidence=1.0, now=T0)
    ob.upsert_step_progress("a", "s1", status="completed", confidence=1.0)
    with pytest.raises(AttributeError):  # a frozen part: changed only by replacing it
        ob.workflow_progress["b"].status = WorkflowStatus.COMPLETED  # type: ignore[misc]
    state.set_mastery(rating=10, level="power_user")
    state.record_discovered_features(["later"])
    ob.mark_onboarding_complete(now=T0)
    assert snap.to_dict() == frozen
    assert snap.workflow_progress is not ob.workflow_progress
    assert snap.workflow_progress["a"] is not ob.workflow_progress["a"]  # replaced in the state, not changed
    assert snap.workflow_progress["b"] is ob.workflow_progress["b"]  # untouched: shared, and frozen


def test_snapshot_is_immutable():
    snap = SessionSnapshot.from_adoption_state(
        state_with_progress(),
        session_id="s1",
        session_number=1,
        started_at=T0,
        catalog_workflow_ids=["a"],
    )
    with pytest.raises(AttributeError):
        snap.session_id = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        snap.completion_rate = 1.0  # type: ignore[misc]
    assert isinstance(snap.completed_workflow_ids, tuple)
    assert isinstance(snap.discovered_features, tuple)
    assert snap.session_id == "s1"


# --- to_dict / from_dict ---------------------------------------------------------------------


def rich_state() -> UserAdoptionState:
    state = state_with_progress()
    state.metadata = {"role": "admin", "nested": {"list": [1, 2.5, None, True, "x"]}}
    state.onboarding.upsert_step_progress(
        "a", "s1", status="completed", confidence=1.0, evidence="saved", now=T0 + 1
    )
    state.onboarding.record_step_in(
        StepInAssessment(decided_at=T0 + 2, should_step_in=True, reason="stuck", suggested_workflow_ids=["b"])
    )
    state.onboarding.summary = "Finished a; stopped in b."
    state.mark_welcomed(now=T0 + 3)
    state.mark_judged(now=T0 + 4)
    state.set_current_session("s9")
    for n in range(1, 4):
        state.record_session(entry(n))
    return state


def test_state_to_dict_from_dict_round_trip():
    state = rich_state()
    doc = state.to_dict()
    assert doc["_v"] == 1
    assert doc["sessions"]["count"] == 3
    assert doc["journey_state"] == "onboarding"
    assert doc["onboarding"]["workflow_progress"]["a"]["steps"]["s1"]["status"] == "completed"
    assert json.loads(json.dumps(doc)) == doc  # plain JSON types only
    back = UserAdoptionState.from_dict(doc)
    assert back == state
    assert back.role == "admin"


def test_snapshot_to_dict_from_dict_round_trip():
    snap = SessionSnapshot.from_adoption_state(
        rich_state(),
        session_id="s4",
        session_number=4,
        started_at=T0,
        catalog_workflow_ids=["a", "b", "c"],
        now=T0 + 90,
    )
    doc = snap.to_dict()
    assert doc["_v"] == 1
    assert doc["_frozen"] is True
    assert doc["completed_workflow_ids"] == ["a", "x"]
    assert json.loads(json.dumps(doc)) == doc
    assert SessionSnapshot.from_dict(doc) == snap


def test_nested_documents_round_trip_through_their_own_dicts():
    state = rich_state()
    wp = state.onboarding.workflow_progress["a"]
    assert type(wp).from_dict(wp.to_dict()) == wp
    assert type(state.mastery).from_dict(state.mastery.to_dict()) == state.mastery
    assert msgspec.structs.replace(state.sessions).to_dict() == state.to_dict()["sessions"]
