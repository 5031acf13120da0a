"""Session start / end on every readable primary: invariants 1, 2, 8 and 9.

Each test runs on memory, Redis-on-fakeredis and Redis-on-a-real-server (the
``backend`` fixture); a few backend-independent ones run on memory only.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from autoplay_obs.storage import (
    InMemoryStorageAdapter,
    StorageManager,
    build_agent_context,
    end_session,
    on_session_end,
    on_session_start,
    start_session,
)
from autoplay_obs.user_adoption_state import (
    MasteryLevel,
    SessionSnapshot,
    UserAdoptionState,
    decode_session_snapshot,
)

if TYPE_CHECKING:
    from conftest import Backend

P, U = "prod_1", "u_1"
T0 = 1_700_000_000.0
MakeSnapshot = Callable[..., SessionSnapshot]


async def stored_state(backend: Backend) -> dict[str, Any]:
    found = await backend.adapter.get_user_state(P, U)
    assert found is not None
    return found


def index_ids(document: dict[str, Any]) -> list[str]:
    return [entry["session_id"] for entry in document["sessions"]["index"]]


# -- start ---------------------------------------------------------------------------


async def test_new_user_gets_a_fresh_state_with_the_session_open(backend: Backend) -> None:
    storage = StorageManager([backend.adapter])
    result = await start_session(P, U, "s1", storage)
    assert result.persisted is True and result.degraded is False and result.error is None
    assert result.onboarding_session is None
    assert result.state.user_id == U
    assert result.state.sessions_count == 0
    assert result.state.current_session_id == "s1"
    doc = await stored_state(backend)
    assert doc["_v"] == 1 and doc["user_id"] == U
    assert doc["sessions"] == {"count": 0, "current_session_id": "s1", "index": []}


async def test_seed_signature_returns_state_and_no_onboarding_for_a_new_user(backend: Backend) -> None:
    state, onboarding = await on_session_start(P, U, "s1", storage=backend.adapter)
    assert isinstance(state, UserAdoptionState)
    assert onboarding is None
    assert state.current_session_id == "s1"


async def test_returning_user_gets_the_session_1_snapshot(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    storage = StorageManager([backend.adapter])
    state, _ = await on_session_start(P, U, "s1", storage=storage)
    state.set_mastery(rating=3, level="beginner", description="ok")
    first = make_snapshot("s1", number=1, state=state)
    await on_session_end(P, U, first, storage=storage, summary="first summary")
    for n in (2, 3):
        state, onboarding = await on_session_start(P, U, f"s{n}", storage=storage)
        assert onboarding is not None
        assert onboarding.session_id == "s1" and onboarding.session_number == 1
        assert onboarding == first
        assert state.sessions_count == n - 1
        assert state.current_session_id == f"s{n}"
        await on_session_end(P, U, make_snapshot(f"s{n}", number=n), storage=storage)
    context = build_agent_context(state, onboarding)
    assert context["onboarding_summary"] == "first summary"
    assert context["session_count"] == 2


async def test_a_state_update_between_sessions_is_kept(backend: Backend, make_snapshot: MakeSnapshot) -> None:
    storage = StorageManager([backend.adapter])
    state, _ = await on_session_start(P, U, "s1", storage=storage)
    state.onboarding.upsert_workflow_progress("create_project", status="completed", confidence=0.9, now=T0)
    state.set_mastery(rating=6, level=MasteryLevel.INTERMEDIATE)
    await on_session_end(P, U, make_snapshot("s1", state=state), storage=storage)
    doc = await stored_state(backend)
    assert doc["mastery"]["rating"] == 6
    assert doc["onboarding"]["workflow_progress"]["create_project"]["status"] == "completed"
    assert doc["onboarding"]["completion_rate"] == 0.5


# -- summary -----------------------------------------------------------------------------


class RecordingSummarizer:
    def __init__(self, behaviour: str = "ok") -> None:
        self.behaviour = behaviour
        self.seen: list[SessionSnapshot] = []

    async def __call__(self, snapshot: SessionSnapshot) -> str:
        self.seen.append(snapshot)
        if self.behaviour == "raise":
            raise self.LLMDown("provider 503")
        if self.behaviour == "hang":
            await asyncio.sleep(100)
        return f"summary of {snapshot.session_id}"

    class LLMDown(Exception):
        pass


async def test_summarizer_result_is_stored(backend: Backend, make_snapshot: MakeSnapshot) -> None:
    summarizer = RecordingSummarizer()
    snapshot = make_snapshot("s1")
    result = await end_session(P, U, snapshot, backend.adapter, summarizer=summarizer)
    assert [s.session_id for s in summarizer.seen] == ["s1"]
    assert summarizer.seen[0] == snapshot
    assert result.summary_error is None
    assert result.state.onboarding.summary == "summary of s1"
    assert (await stored_state(backend))["onboarding"]["summary"] == "summary of s1"


async def test_precomputed_summary_beats_the_summarizer(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    summarizer = RecordingSummarizer()
    result = await end_session(
        P, U, make_snapshot("s1"), backend.adapter, summarizer=summarizer, summary="precomputed"
    )
    assert summarizer.seen == []
    assert result.state.onboarding.summary == "precomputed"
    assert (await stored_state(backend))["onboarding"]["summary"] == "precomputed"


async def test_neither_summary_nor_summarizer_leaves_the_summary_unchanged(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    await on_session_end(P, U, make_snapshot("s1", number=1), storage=backend.adapter, summary="kept")
    updated = await on_session_end(P, U, make_snapshot("s2", number=2), storage=backend.adapter)
    assert updated.onboarding.summary == "kept"
    doc = await stored_state(backend)
    assert doc["onboarding"]["summary"] == "kept"
    assert doc["sessions"]["count"] == 2


async def test_a_raising_summarizer_never_loses_the_session(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    await on_session_end(P, U, make_snapshot("s1", number=1), storage=backend.adapter, summary="old")
    summarizer = RecordingSummarizer("raise")
    result = await end_session(P, U, make_snapshot("s2", number=2), backend.adapter, summarizer=summarizer)
    assert len(summarizer.seen) == 1
    assert result.summary_error == "LLMDown"
    assert result.persisted is True and result.error is None
    assert result.snapshot_created is True
    doc = await stored_state(backend)
    assert doc["sessions"]["count"] == 2
    assert index_ids(doc) == ["s1", "s2"]
    assert doc["onboarding"]["summary"] == "old"
    assert await backend.adapter.load_snapshot(P, U, "s2") is not None


async def test_a_hanging_summarizer_times_out_and_the_session_is_saved(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    summarizer = RecordingSummarizer("hang")
    started = time.perf_counter()
    result = await end_session(
        P, U, make_snapshot("s1"), backend.adapter, summarizer=summarizer, summarizer_timeout=0.2
    )
    assert time.perf_counter() - started < 0.2 + 3.0
    assert result.summary_error == "TimeoutError"
    assert result.persisted is True
    assert (await stored_state(backend))["sessions"]["count"] == 1


async def test_on_session_end_with_a_hanging_summarizer_returns_the_state(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    updated = await asyncio.wait_for(
        on_session_end(
            P,
            U,
            make_snapshot("s1"),
            storage=backend.adapter,
            summarizer=RecordingSummarizer("hang"),
            summarizer_timeout=0.2,
        ),
        timeout=5,
    )
    assert updated.sessions_count == 1
    assert updated.onboarding.summary is None


async def test_the_summarizer_runs_outside_any_per_user_lock(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    """A summarizer that itself touches the same user's state must not deadlock."""
    storage = StorageManager([backend.adapter])

    async def reentrant(snapshot: SessionSnapshot) -> str:
        inner = await start_session(P, U, "side", storage)
        assert inner.persisted
        return "reentrant"

    result = await asyncio.wait_for(
        end_session(P, U, make_snapshot("s1"), storage, summarizer=reentrant), timeout=5
    )
    assert result.summary_error is None and result.persisted
    doc = await stored_state(backend)
    assert doc["onboarding"]["summary"] == "reentrant"
    assert doc["sessions"]["count"] == 1
    assert doc["sessions"]["current_session_id"] == "side"


# -- retried ends (invariant 2) ----------------------------------------------------------


async def test_sequential_retries_count_once_and_never_change_the_snapshot(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    storage = StorageManager([backend.adapter])
    first = make_snapshot("s1", captured_at=T0)
    results = [await end_session(P, U, first, storage, summary="one")]
    frozen = await backend.adapter.load_snapshot(P, U, "s1")
    assert frozen is not None and decode_session_snapshot(frozen).value == first
    for attempt in range(1, 3):
        # a retry re-captures: later time, other values, other summary
        state = UserAdoptionState(user_id=U)
        state.set_mastery(rating=9, level="power_user")
        retry = make_snapshot("s1", captured_at=T0 + attempt, state=state)
        results.append(await end_session(P, U, retry, storage, summary=f"retry {attempt}"))
    assert results[0].snapshot_created is True and results[0].duplicate is False
    for retry_result in results[1:]:
        assert retry_result.snapshot_created is False
        assert retry_result.duplicate is True
        assert retry_result.persisted is True
        assert retry_result.state.sessions_count == 1
    assert await backend.adapter.load_snapshot(P, U, "s1") == frozen
    doc = await stored_state(backend)
    assert doc["sessions"]["count"] == 1
    assert index_ids(doc) == ["s1"]
    assert doc["onboarding"]["summary"] == "one"
    assert doc["mastery"]["rating"] == 0


async def test_concurrent_retries_count_once_and_freeze_one_snapshot(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    storage = StorageManager([backend.adapter])
    attempts = [make_snapshot("s1", captured_at=T0 + i) for i in range(10)]
    results = await asyncio.gather(*(end_session(P, U, s, storage, summary="x") for s in attempts))
    assert sorted(r.snapshot_created for r in results) == [False] * 9 + [True]
    assert sum(not r.duplicate for r in results) == 1
    assert all(r.persisted for r in results)
    frozen = await backend.adapter.load_snapshot(P, U, "s1")
    winner = next(i for i, r in enumerate(results) if r.snapshot_created)
    assert frozen is not None and decode_session_snapshot(frozen).value == attempts[winner]
    doc = await stored_state(backend)
    assert doc["sessions"]["count"] == 1
    assert index_ids(doc) == ["s1"]


async def test_concurrent_retries_from_two_managers_count_once(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    a, b = StorageManager([backend.adapter]), StorageManager([backend.open()])
    attempts = [make_snapshot("s1", captured_at=T0 + i) for i in range(10)]
    results = await asyncio.gather(
        *(end_session(P, U, s, a if i % 2 else b, summary="x") for i, s in enumerate(attempts))
    )
    assert sum(bool(r.snapshot_created) for r in results) == 1
    assert sum(not r.duplicate for r in results) == 1
    doc = await stored_state(backend)
    assert doc["sessions"]["count"] == 1
    assert index_ids(doc) == ["s1"]


# -- concurrent ends for one user (invariant 1) -------------------------------------------


async def _concurrent_ends(backend: Backend, make_snapshot: MakeSnapshot, n: int) -> None:
    storage = StorageManager([backend.adapter])
    snapshots = [make_snapshot(f"s{i:03d}", number=i + 1, captured_at=T0 + i) for i in range(n)]
    order = list(range(n))
    random.Random(n).shuffle(order)
    results = await asyncio.gather(*(end_session(P, U, snapshots[i], storage) for i in order))
    assert all(r.persisted and r.error is None for r in results)
    assert all(r.snapshot_created is True and r.duplicate is False for r in results)
    assert sum(r.trimmed for r in results) == max(0, n - 50)
    doc = await stored_state(backend)
    assert doc["sessions"]["count"] == n
    assert index_ids(doc) == [f"s{i:03d}" for i in range(max(0, n - 50), n)]
    captured = [entry["captured_at"] for entry in doc["sessions"]["index"]]
    assert captured == sorted(captured)
    for i in range(n):
        frozen = await backend.adapter.load_snapshot(P, U, f"s{i:03d}")
        assert frozen is not None and decode_session_snapshot(frozen).value == snapshots[i]


async def test_50_concurrent_ends_all_count(backend: Backend, make_snapshot: MakeSnapshot) -> None:
    await _concurrent_ends(backend, make_snapshot, 50)


async def test_200_concurrent_ends_all_count_and_index_keeps_the_newest_50(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    await _concurrent_ends(backend, make_snapshot, 200)


async def test_mixed_concurrent_starts_and_ends_lose_no_update(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    storage = StorageManager([backend.adapter])
    ends = [
        end_session(P, U, make_snapshot(f"e{i}", number=i + 1, captured_at=T0 + i), storage)
        for i in range(25)
    ]
    starts = [start_session(P, U, f"t{i}", storage) for i in range(25)]
    calls: list[Any] = [*ends, *starts]
    random.Random(7).shuffle(calls)
    results = await asyncio.gather(*calls)
    assert all(r.persisted for r in results)
    doc = await stored_state(backend)
    assert doc["sessions"]["count"] == 25
    assert sorted(index_ids(doc)) == sorted(f"e{i}" for i in range(25))
    assert doc["sessions"]["current_session_id"] in {f"t{i}" for i in range(25)}


async def test_concurrent_ends_from_two_managers_conflict_and_lose_nothing(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    """Two managers on one store behave like two processes: compare-and-set must resolve them."""
    a, b = StorageManager([backend.adapter]), StorageManager([backend.open()])
    n = 40
    snapshots = [make_snapshot(f"s{i:02d}", number=i + 1, captured_at=T0 + i) for i in range(n)]
    results = await asyncio.gather(
        *(end_session(P, U, s, a if i % 2 else b, summary=s.session_id) for i, s in enumerate(snapshots))
    )
    assert all(r.persisted and r.error is None for r in results)
    assert sum(r.conflicts for r in results) > 0
    doc = await stored_state(backend)
    assert doc["sessions"]["count"] == n
    assert sorted(index_ids(doc)) == [f"s{i:02d}" for i in range(n)]
    assert doc["onboarding"]["summary"] == f"s{n - 1:02d}"  # the latest-captured session decides


async def test_mixed_starts_and_ends_from_two_managers_lose_no_update(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    a, b = StorageManager([backend.adapter]), StorageManager([backend.open()])
    calls: list[Any] = []
    for i in range(20):
        calls.append(
            end_session(P, U, make_snapshot(f"e{i}", number=i + 1, captured_at=T0 + i), a if i % 2 else b)
        )
        calls.append(start_session(P, U, f"t{i}", b if i % 2 else a))
    results = await asyncio.gather(*calls)
    assert all(r.persisted for r in results)
    doc = await stored_state(backend)
    assert doc["sessions"]["count"] == 20
    assert sorted(index_ids(doc)) == sorted(f"e{i}" for i in range(20))


# -- bounded index (invariant 9) -------------------------------------------------------------


async def test_index_overflow_is_trimmed_and_reported(backend: Backend, make_snapshot: MakeSnapshot) -> None:
    storage = StorageManager([backend.adapter])
    trimmed = []
    for i in range(60):
        result = await end_session(P, U, make_snapshot(f"s{i:02d}", number=i + 1), storage)
        trimmed.append(result.trimmed)
    assert trimmed == [0] * 50 + [1] * 10
    doc = await stored_state(backend)
    assert doc["sessions"]["count"] == 60
    assert len(doc["sessions"]["index"]) == 50
    assert index_ids(doc) == [f"s{i:02d}" for i in range(10, 60)]
    state, _ = await on_session_start(P, U, "s60", storage=storage)
    assert state.sessions_count == 60 and len(state.sessions_index) == 50


# -- memory-only: behaviour that does not depend on the backend -------------------------------


async def test_a_half_finished_end_is_completed_by_its_retry(make_snapshot: MakeSnapshot) -> None:
    """Snapshot frozen but state write failed: the retry must count the session (once)."""

    class FailsOneSwap(InMemoryStorageAdapter):
        failures = 1

        async def swap_state(self, *args: Any) -> Any:
            if self.failures:
                self.failures -= 1
                raise OSError("connection reset")
            return await super().swap_state(*args)

    adapter = FailsOneSwap()
    first = await end_session(P, U, make_snapshot("s1"), adapter)
    assert first.persisted is False and first.snapshot_created is True
    assert await adapter.get_user_state(P, U) is None
    retry = await end_session(P, U, make_snapshot("s1", captured_at=T0 + 999), adapter)
    assert retry.persisted is True and retry.snapshot_created is False
    assert retry.state.sessions_count == 1
    again = await end_session(P, U, make_snapshot("s1"), adapter)
    assert again.duplicate is True
    assert (await adapter.get_user_state(P, U))["sessions"]["count"] == 1


async def test_a_retried_end_of_a_session_already_trimmed_from_the_index_is_not_counted_again(
    make_snapshot: MakeSnapshot,
) -> None:
    """Invariant 2 holds even after the session has fallen out of the 50-entry index."""
    adapter = InMemoryStorageAdapter()
    snapshots = [make_snapshot(f"s{i:02d}", number=i + 1) for i in range(60)]
    for snapshot in snapshots:
        await end_session(P, U, snapshot, adapter)
    retry = await end_session(P, U, snapshots[0], adapter)
    assert retry.snapshot_created is False
    assert (await adapter.get_user_state(P, U))["sessions"]["count"] == 60
    assert retry.duplicate is True


async def test_the_lifecycle_does_not_keep_a_bare_adapter_alive() -> None:
    adapter = InMemoryStorageAdapter()
    await on_session_start(P, U, "s1", storage=adapter)
    ref = weakref.ref(adapter)
    del adapter
    gc.collect()
    assert ref() is None


async def test_concurrent_ends_on_a_bare_adapter_lose_nothing(make_snapshot: MakeSnapshot) -> None:
    adapter = InMemoryStorageAdapter()
    results = await asyncio.gather(
        *(end_session(P, U, make_snapshot(f"s{i}", number=i + 1), adapter) for i in range(20))
    )
    assert all(r.persisted for r in results)
    assert (await adapter.get_user_state(P, U))["sessions"]["count"] == 20


async def test_a_start_after_another_process_ended_a_session_sees_it(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    """What this process remembers may be stale; the result must not be."""
    a, b = StorageManager([backend.adapter]), StorageManager([backend.open()])
    await start_session(P, U, "s1", a)
    await end_session(P, U, make_snapshot("s1", number=1), b, summary="from b")
    start = await start_session(P, U, "s2", a)
    assert start.persisted
    assert start.state.sessions_count == 1
    assert start.state.onboarding.summary == "from b"
    assert start.onboarding_session is not None and start.onboarding_session.session_id == "s1"
    end = await end_session(P, U, make_snapshot("s2", number=2), a)
    assert end.persisted and end.state.sessions_count == 2
    retry_elsewhere = await end_session(P, U, make_snapshot("s2", number=2), b)
    assert retry_elsewhere.duplicate is True
    doc = await stored_state(backend)
    assert doc["sessions"]["count"] == 2 and index_ids(doc) == ["s1", "s2"]


async def test_a_summarizer_returning_a_non_string_is_reported_and_the_session_saved(
    make_snapshot: MakeSnapshot,
) -> None:
    async def returns_dict(snapshot: SessionSnapshot) -> Any:
        return {"text": "not a string"}

    adapter = InMemoryStorageAdapter()
    result = await end_session(P, U, make_snapshot("s1"), adapter, summarizer=returns_dict)
    assert result.persisted and result.summary_error == "TypeError"
    assert (await adapter.get_user_state(P, U))["onboarding"]["summary"] is None


async def test_a_snapshot_that_is_not_ours_is_refused_before_any_io() -> None:
    from autoplay_sdk.user_adoption_state import SessionSnapshot as RefSessionSnapshot

    from autoplay_obs.errors import InvalidValueError

    adapter = InMemoryStorageAdapter()
    ref = RefSessionSnapshot(session_id="s1", session_number=1, user_id=U, started_at=T0)
    for wrong in (ref, ref.to_dict(), None):
        with pytest.raises(InvalidValueError):
            await on_session_end(P, U, wrong, storage=adapter)  # type: ignore[arg-type]
    assert await adapter.get_user_state(P, U) is None
    assert await adapter.get_session_snapshot(P, U, "s1") is None
