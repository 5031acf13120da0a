"""Faults found by using the library as a new user would; each test failed before its fix."""

from __future__ import annotations

import asyncio
import warnings

import fakeredis.aioredis
import pytest

from autoplay_obs.errors import ConfigurationError, InvalidValueError
from autoplay_obs.storage import (
    InMemoryStorageAdapter,
    Outcome,
    RedisStorageAdapter,
    StorageManager,
    end_session,
    start_session,
)
from autoplay_obs.storage.adapters.posthog import PostHogStorageAdapter
from autoplay_obs.user_adoption_state import SessionSnapshot, UserAdoptionState, WorkflowStatus

P, U = "prod", "u_1"
T0 = 1_760_000_000.0


def snapshot(session_id: str = "s1", user_id: str = U, number: int = 1) -> SessionSnapshot:
    state = UserAdoptionState(user_id=user_id)
    return SessionSnapshot.from_adoption_state(
        state,
        session_id=session_id,
        session_number=number,
        started_at=T0,
        catalog_workflow_ids=["a"],
        now=T0 + number,
    )


async def stored_count(manager: StorageManager) -> int:
    doc = await manager.get_user_state(P, U)
    assert doc is not None
    return int(doc["sessions"]["count"])


# 1. a summarizer that raises CancelledError itself ---------------------------------------------


async def test_a_summarizer_raising_cancelled_error_is_a_counted_failure_and_the_session_is_saved() -> None:
    manager = StorageManager([InMemoryStorageAdapter()])

    async def stray_cancel(_: SessionSnapshot) -> str:
        raise asyncio.CancelledError

    result = await end_session(P, U, snapshot(), manager, summarizer=stray_cancel)
    assert result.persisted and not result.duplicate
    assert result.summary_error == "CancelledError"
    assert await stored_count(manager) == 1


async def test_cancelling_the_hosts_task_still_cancels_the_session_end_and_its_summarizer() -> None:
    manager = StorageManager([InMemoryStorageAdapter()])
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(_: SessionSnapshot) -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    task = asyncio.create_task(end_session(P, U, snapshot(), manager, summarizer=slow))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(cancelled.wait(), 5)


async def test_a_summarizer_returning_a_huge_summary_is_cut_and_the_cut_reported() -> None:
    manager = StorageManager([InMemoryStorageAdapter()], max_summary_chars=100)

    async def chatty(_: SessionSnapshot) -> str:
        return "x" * 1_000

    result = await end_session(P, U, snapshot(), manager, summarizer=chatty)
    assert result.summary_truncated == 900
    assert result.state.onboarding.summary == "x" * 100


# 2. a snapshot of another user ---------------------------------------------------------------------


async def test_a_snapshot_of_another_user_is_refused_before_any_io() -> None:
    adapter = InMemoryStorageAdapter()
    with pytest.raises(InvalidValueError, match="another user"):
        await end_session(P, "u3", snapshot(user_id="u2"), StorageManager([adapter]), summary="x")
    assert adapter._data == {}


# 3. a catalog given as one string -----------------------------------------------------------------


@pytest.mark.parametrize("catalog", ["create_project", b"create_project", 7, ["a", 3]])
def test_a_catalog_that_is_not_a_sequence_of_ids_is_refused(catalog: object) -> None:
    with pytest.raises(InvalidValueError, match="catalog_workflow_ids"):
        SessionSnapshot.from_adoption_state(
            UserAdoptionState(user_id=U),
            session_id="s1",
            session_number=1,
            started_at=T0,
            catalog_workflow_ids=catalog,  # type: ignore[arg-type]
        )


# 4. one manager, two event loops ----------------------------------------------------------------


def test_a_manager_moves_to_a_new_loop_once_its_first_is_closed() -> None:
    manager = StorageManager([InMemoryStorageAdapter()])
    assert asyncio.run(start_session(P, U, "s1", manager)).persisted
    second = asyncio.run(start_session(P, U, "s2", manager))  # asyncio.run per request
    assert second.persisted and second.state.current_session_id == "s2"


def test_a_manager_used_from_two_live_loops_says_so_at_once() -> None:
    manager = StorageManager([InMemoryStorageAdapter()])
    other = asyncio.new_event_loop()
    try:
        assert other.run_until_complete(start_session(P, U, "s1", manager)).persisted
        with pytest.raises(ConfigurationError, match="second event loop"):
            asyncio.run(start_session(P, U, "s2", manager))
    finally:
        other.close()


def test_a_redis_adapter_used_from_a_second_event_loop_says_so_at_once() -> None:
    adapter = RedisStorageAdapter(client=fakeredis.aioredis.FakeRedis())
    assert asyncio.run(start_session(P, U, "s1", adapter)).persisted
    with pytest.raises(ConfigurationError, match="second event loop"):  # not a false "not persisted"
        asyncio.run(start_session(P, U, "s2", adapter))


# 5. adapters in the wrong places -----------------------------------------------------------------


async def test_a_write_only_sink_in_the_primarys_place_is_refused() -> None:
    sink = PostHogStorageAdapter(api_key="phc_test", host="http://127.0.0.1:9")
    try:
        with pytest.raises(ConfigurationError, match="write-only"):
            StorageManager([sink, InMemoryStorageAdapter()])
    finally:
        await sink.aclose()


def test_a_readable_primary_in_a_sinks_place_is_warned_about() -> None:
    with pytest.warns(UserWarning, match="only the first"):
        StorageManager([InMemoryStorageAdapter(), InMemoryStorageAdapter()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        StorageManager([InMemoryStorageAdapter()])


# 6. a huge precomputed summary ----------------------------------------------------------------------


async def test_a_huge_precomputed_summary_is_bounded_and_the_cut_counted() -> None:
    manager = StorageManager([InMemoryStorageAdapter()])
    result = await end_session(P, U, snapshot(), manager, summary="y" * 10_000_000)
    limit = manager.max_summary_chars
    assert result.persisted and result.summary_truncated == 10_000_000 - limit
    doc = await manager.get_user_state(P, U)
    assert doc is not None and len(doc["onboarding"]["summary"]) == limit


def test_max_summary_chars_must_be_positive() -> None:
    with pytest.raises(ConfigurationError):
        StorageManager([InMemoryStorageAdapter()], max_summary_chars=0)


# 7. a sink write cancelled at shutdown --------------------------------------------------------------


class _HangingSink:
    name = "hanging"

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def save_user_state(self, *args: object) -> None:
        self.entered.set()
        await asyncio.sleep(30)

    async def save_session_snapshot(self, *args: object) -> None:
        await asyncio.sleep(30)

    async def get_user_state(self, *args: object) -> None:
        return None

    async def get_session_snapshot(self, *args: object) -> None:
        return None


async def test_a_sink_write_cancelled_at_shutdown_is_recorded_as_cancelled() -> None:
    sink = _HangingSink()
    manager = StorageManager([InMemoryStorageAdapter(), sink], sink_timeout=60)
    started = await start_session(P, U, "s1", manager)
    await asyncio.wait_for(sink.entered.wait(), 5)
    for task in list(manager._pending):  # what shutdown does to a write still in flight
        task.cancel()
    await manager.drain()
    sink_calls = [c for c in started.adapter_calls if c.role == "sink"]
    assert [(c.outcome, c.error_type) for c in sink_calls] == [(Outcome.CANCELLED, "CancelledError")]


# the frozen parts and the JSON path --------------------------------------------------------------


def test_assigning_to_a_frozen_part_raises_and_the_mutation_replaces_it() -> None:
    state = UserAdoptionState(user_id=U)
    first = state.onboarding.upsert_workflow_progress("a", status="in_progress", confidence=0.2, now=T0)
    with pytest.raises(AttributeError):
        first.status = WorkflowStatus.COMPLETED  # type: ignore[misc]
    second = state.onboarding.upsert_workflow_progress("a", status="completed", confidence=0.9, now=T0 + 1)
    assert first.status is WorkflowStatus.IN_PROGRESS and second.status is WorkflowStatus.COMPLETED
    assert state.onboarding.workflow_progress["a"] is second


def test_a_copy_shares_the_frozen_parts_and_owns_its_containers() -> None:
    state = UserAdoptionState(user_id=U, metadata={"team": {"name": "growth"}})
    state.onboarding.upsert_workflow_progress("a", status="in_progress", confidence=0.2, now=T0)
    twin = state.copy()
    assert twin == state
    assert twin.onboarding.workflow_progress["a"] is state.onboarding.workflow_progress["a"]
    twin.metadata["team"]["name"] = "other"
    twin.onboarding.upsert_workflow_progress("b", status="in_progress", confidence=0.1, now=T0)
    twin.sessions.index.append(snapshot().index_entry())
    twin.discovered_features.append("x")
    assert state.metadata == {"team": {"name": "growth"}}
    assert list(state.onboarding.workflow_progress) == ["a"]
    assert state.sessions.index == [] and state.discovered_features == []


class _RecordingSink(_HangingSink):
    def __init__(self) -> None:
        super().__init__()
        self.states: list[dict[str, object]] = []

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, object]) -> None:
        self.states.append(state)

    async def save_session_snapshot(self, *args: object) -> None:
        return None


async def test_a_lone_surrogate_in_metadata_reaches_the_sinks() -> None:
    sink = _RecordingSink()
    manager = StorageManager([InMemoryStorageAdapter(), sink])
    await start_session(P, U, "s1", manager)

    def tag(state: UserAdoptionState) -> UserAdoptionState:
        state.set_metadata("x", "\ud800")
        return state

    with manager.recording() as calls:
        await manager.update_state(P, U, tag)
        await manager.drain()
    assert sink.states[-1]["metadata"] == {"x": "\ud800"}
    assert [(c.role, c.outcome) for c in calls] == [("primary", Outcome.OK), ("sink", Outcome.OK)]


async def test_metadata_that_is_not_plain_json_is_normalised_before_it_is_stored_or_kept() -> None:
    manager = StorageManager([InMemoryStorageAdapter()])
    await start_session(P, U, "s1", manager)

    def tag(state: UserAdoptionState) -> UserAdoptionState:
        state.metadata["tags"] = ("a", "b")  # a tuple: JSON has only lists
        state.metadata["score"] = float("nan")
        return state

    update = await manager.update_state(P, U, tag)
    assert update.state.metadata == {"tags": ["a", "b"], "score": None}
    current = await manager.read_state(P, U)
    assert current is not None and current.state.metadata == {"tags": ["a", "b"], "score": None}

    def bad(state: UserAdoptionState) -> UserAdoptionState:
        state.metadata["when"] = object()
        return state

    with pytest.raises(InvalidValueError, match="metadata"):
        await manager.update_state(P, U, bad)


class _FreezeFailsInThePipeline(RedisStorageAdapter):
    """The pipeline's SET NX answers with an error while its compare-and-set loses."""

    async def freeze_and_swap(self, product_id, user_id, session, raw, expected):  # type: ignore[no-untyped-def]
        from autoplay_obs.errors import StorageUnavailableError

        current = await self.load_state(product_id, user_id)
        return StorageUnavailableError("redis: OOM command not allowed"), (False, current)


async def test_a_failed_snapshot_write_in_the_pipeline_is_not_reported_as_a_duplicate() -> None:
    adapter = _FreezeFailsInThePipeline(client=fakeredis.aioredis.FakeRedis())
    manager = StorageManager([adapter])
    await start_session(P, U, "s0", manager)
    other = StorageManager([RedisStorageAdapter(client=adapter._redis)])
    await start_session(P, U, "s0b", other)  # the first manager's cached token is now stale
    result = await end_session(P, U, snapshot(), manager, summary="x")
    assert (result.persisted, result.duplicate, result.snapshot_created) == (False, False, None)
    assert "OOM" in str(result.error)
    assert await stored_count(manager) == 0
