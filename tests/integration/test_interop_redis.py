"""Interop on a real Redis with the reference package (autoplay-sdk 0.13.0).

Teams migrate with Redis full of documents the reference wrote, and may run
both packages side by side: each must read, start and end on the other's data.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from autoplay_sdk.storage import RedisStorageAdapter as RefRedisStorageAdapter
from autoplay_sdk.storage import on_session_end as ref_on_session_end
from autoplay_sdk.storage import on_session_start as ref_on_session_start
from autoplay_sdk.user_adoption_state import JourneyState as RefJourneyState
from autoplay_sdk.user_adoption_state import MasteryLevel as RefMasteryLevel
from autoplay_sdk.user_adoption_state import SessionSnapshot as RefSessionSnapshot
from autoplay_sdk.user_adoption_state import StepInAssessment as RefStepInAssessment
from autoplay_sdk.user_adoption_state import UserAdoptionState as RefUserAdoptionState
from autoplay_sdk.user_adoption_state import WorkflowStatus as RefWorkflowStatus

from autoplay_obs.storage import RedisStorageAdapter, end_session, on_session_start, start_session
from autoplay_obs.user_adoption_state import SessionSnapshot, UserAdoptionState

pytestmark = pytest.mark.redis_server

P, U = "prod_1", "u_123"
T0 = 1_700_000_000.0
CATALOG = ["create_project", "invite_team", "configure_columns"]
STATE_KEY = f"autoplay:user:{P}:{U}:state"


@pytest.fixture
async def ref(redis_url: str) -> AsyncIterator[RefRedisStorageAdapter]:
    adapter = RefRedisStorageAdapter(redis_url)
    try:
        yield adapter
    finally:
        await adapter._redis.aclose()  # the reference adapter has no close of its own


async def ref_session(ref: RefRedisStorageAdapter, session_id: str, n: int, **ref_end: Any) -> Any:
    """One whole session run by the reference package, with some progress made."""
    state, _ = await ref_on_session_start(P, U, session_id, storage=ref)
    state.onboarding.upsert_workflow_progress(
        CATALOG[(n - 1) % 3],
        status=RefWorkflowStatus.COMPLETED,
        confidence=0.9,
        evidence=f"done in {session_id}",
        source="activity",
        now=T0 + 100 * n,
    )
    state.record_discovered_features([f"feature_{n}"])
    state.set_mastery(rating=2 * n, level=RefMasteryLevel.BEGINNER, description=f"after {session_id}")
    snapshot = RefSessionSnapshot.from_adoption_state(
        state,
        session_id=session_id,
        session_number=state.sessions_count + 1,
        started_at=T0 + 100 * n - 50,
        catalog_workflow_ids=CATALOG,
        now=T0 + 100 * n,
    )
    return await ref_on_session_end(P, U, snapshot, storage=ref, **ref_end)


async def our_session(
    adapter: RedisStorageAdapter, session_id: str, n: int, summary: str | None = None
) -> Any:
    start = await start_session(P, U, session_id, adapter)
    assert start.persisted and not start.degraded and start.repairs == ()
    state = start.state
    state.onboarding.upsert_workflow_progress(
        CATALOG[(n - 1) % 3], status="in_progress", confidence=0.4, source="judge", now=T0 + 100 * n
    )
    state.record_discovered_features([f"ours_{n}"])
    snapshot = SessionSnapshot.from_adoption_state(
        state,
        session_id=session_id,
        session_number=state.sessions_count + 1,
        started_at=T0 + 100 * n - 50,
        catalog_workflow_ids=CATALOG,
        now=T0 + 100 * n,
    )
    end = await end_session(P, U, snapshot, adapter, summary=summary)
    assert end.persisted and end.error is None
    return start, end


# -- reference writes, we read ------------------------------------------------------------


async def test_we_continue_a_history_the_reference_wrote(
    ref: RefRedisStorageAdapter, adapter: RedisStorageAdapter
) -> None:
    await ref_session(ref, "r1", 1, summary="ref summary 1")
    await ref_session(ref, "r2", 2, summary="ref summary 2")

    start = await start_session(P, U, "o3", adapter)
    assert start.persisted and not start.degraded
    assert start.repairs == ()
    assert start.state.sessions_count == 2
    assert start.state.current_session_id == "o3"
    assert start.state.onboarding.summary == "ref summary 2"
    assert start.state.discovered_features == ["feature_1", "feature_2"]
    # the reference keeps workflow detail in snapshots only; the state carries the synced fields
    assert start.state.mastery.rating == 4 and start.state.mastery.description == "after r2"
    assert start.state.onboarding.completion_rate == pytest.approx(0.3333)
    onboarding = start.onboarding_session
    assert onboarding is not None
    assert onboarding.session_id == "r1" and onboarding.session_number == 1
    assert onboarding.completed_workflow_ids == ("create_project",)
    assert onboarding.untouched_workflow_ids == ("invite_team", "configure_columns")

    snapshot = SessionSnapshot.from_adoption_state(
        start.state,
        session_id="o3",
        session_number=start.state.sessions_count + 1,
        started_at=T0 + 250,
        catalog_workflow_ids=CATALOG,
        now=T0 + 300,
    )
    end = await end_session(P, U, snapshot, adapter, summary="ours 3")
    assert end.persisted and not end.duplicate
    assert end.state.sessions_count == 3
    assert [e.session_id for e in end.state.sessions_index] == ["r1", "r2", "o3"]
    assert [e.session_number for e in end.state.sessions_index] == [1, 2, 3]

    again, onboarding = await on_session_start(P, U, "o4", storage=adapter)
    assert again.sessions_count == 3 and onboarding is not None and onboarding.session_id == "r1"


async def test_a_retried_reference_session_is_not_counted_again_by_us(
    ref: RefRedisStorageAdapter, adapter: RedisStorageAdapter
) -> None:
    ended = await ref_session(ref, "r1", 1)
    snapshot = SessionSnapshot.from_dict(
        json.loads(json.dumps(RefSessionSnapshot.from_adoption_state(
            ended, session_id="r1", session_number=1, started_at=T0, catalog_workflow_ids=CATALOG, now=T0 + 5
        ).to_dict()))
    )  # fmt: skip
    result = await end_session(P, U, snapshot, adapter)
    assert result.duplicate is True and result.snapshot_created is False
    assert result.state.sessions_count == 1


async def test_a_rich_reference_state_survives_our_rewrite_without_loss(
    ref: RefRedisStorageAdapter, adapter: RedisStorageAdapter, raw: redis.asyncio.Redis
) -> None:
    state = RefUserAdoptionState(user_id=U, metadata={"role": "admin", "plan": {"tier": "pro", "seats": 5}})
    state.set_journey_state(RefJourneyState.ONBOARDED)
    state.set_mastery(rating=7, level=RefMasteryLevel.PROFICIENT, description="fast")
    wp = state.onboarding.upsert_workflow_progress(
        "create_project", status=RefWorkflowStatus.IN_PROGRESS, confidence=0.5, source="tour", now=T0
    )
    wp.upsert_step_progress("name_it", status=RefWorkflowStatus.COMPLETED, confidence=1.0, now=T0 + 1)
    state.onboarding.record_step_in(
        RefStepInAssessment(
            decided_at=T0 + 2, should_step_in=True, reason="stuck", suggested_workflow_ids=["x"]
        )
    )
    state.onboarding.mark_onboarding_complete(now=T0 + 3)
    state.onboarding.summary = "rich"
    state.mark_welcomed(now=T0 + 4)
    state.mark_judged(now=T0 + 5)
    state.record_discovered_features(["search", "export"])
    await ref.save_user_state(P, U, state.to_dict())
    before = RefUserAdoptionState.from_dict(json.loads(await raw.get(STATE_KEY))).to_dict()

    result = await start_session(P, U, "o1", adapter)
    assert result.persisted and result.repairs == ()
    after = RefUserAdoptionState.from_dict(json.loads(await raw.get(STATE_KEY))).to_dict()

    assert after["sessions"]["current_session_id"] == "o1"
    for volatile in ("last_updated_at",):
        before.pop(volatile)
        after.pop(volatile)
    before["sessions"]["current_session_id"] = "o1"
    assert after == before


# -- we write, the reference reads -----------------------------------------------------------


async def test_the_reference_reads_and_continues_what_we_wrote(
    ref: RefRedisStorageAdapter, adapter: RedisStorageAdapter
) -> None:
    await our_session(adapter, "o1", 1, summary="ours 1")
    await our_session(adapter, "o2", 2, summary="ours 2")
    await on_session_start(P, U, "o3", storage=adapter)

    document = await ref.get_user_state(P, U)
    assert document is not None
    ref_state = RefUserAdoptionState.from_dict(document)
    assert ref_state.sessions_count == 2
    assert ref_state.current_session_id == "o3"
    assert ref_state.onboarding.summary == "ours 2"
    assert [e.session_id for e in ref_state.sessions_index] == ["o1", "o2"]
    assert ref_state.discovered_features == ["ours_1", "ours_2"]
    assert ref_state.onboarding.in_progress_workflow_ids == ["create_project", "invite_team"]

    state, onboarding = await ref_on_session_start(P, U, "r3", storage=ref)
    assert state.sessions_count == 2 and state.current_session_id == "r3"
    assert state.onboarding.summary == "ours 2"
    assert onboarding is not None
    assert onboarding.session_id == "o1" and onboarding.session_number == 1
    assert onboarding.in_progress_workflow_ids == ["create_project"]
    assert onboarding.untouched_workflow_ids == ["invite_team", "configure_columns"]

    ended = await ref_session(ref, "r3", 3)
    assert ended.sessions_count == 3

    back = await start_session(P, U, "o4", adapter)
    assert back.persisted and back.repairs == ()
    assert back.state.sessions_count == 3
    assert [e.session_id for e in back.state.sessions_index] == ["o1", "o2", "r3"]
    assert back.onboarding_session is not None and back.onboarding_session.session_id == "o1"


async def test_our_snapshot_reads_identically_in_the_reference(
    ref: RefRedisStorageAdapter, adapter: RedisStorageAdapter
) -> None:
    state = UserAdoptionState(user_id=U)
    state.onboarding.upsert_workflow_progress("create_project", status="completed", confidence=1.0, now=T0)
    state.onboarding.upsert_workflow_progress("invite_team", status="in_progress", confidence=0.3, now=T0)
    state.record_discovered_features(["search"])
    snapshot = SessionSnapshot.from_adoption_state(
        state, session_id="o1", session_number=1, started_at=T0 - 90, catalog_workflow_ids=CATALOG, now=T0
    )
    await end_session(P, U, snapshot, adapter)
    document = await ref.get_session_snapshot(P, U, "o1")
    assert document is not None
    ref_snapshot = RefSessionSnapshot.from_dict(document)
    assert ref_snapshot.to_dict() == snapshot.to_dict()
