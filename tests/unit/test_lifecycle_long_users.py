"""Long-time users and retries seen by a replica whose cached state is stale."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from autoplay_obs.storage import StorageManager, end_session, start_session
from autoplay_obs.user_adoption_state import SessionSnapshot

if TYPE_CHECKING:
    from conftest import Backend

MakeSnapshot = Callable[..., SessionSnapshot]
P, U = "prod_long", "u_1"


async def test_onboarding_context_survives_the_index_trimming_session_1(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    storage = StorageManager([backend.adapter])
    for n in range(1, 56):  # 55 sessions: session 1's index entry is long gone
        await end_session(P, U, make_snapshot(f"s{n}", number=n), storage)
    fresh = StorageManager([backend.open()])  # no cache: everything read from the store
    result = await start_session(P, U, "s56", fresh)
    assert result.state.sessions.index[0].session_number == 6
    assert result.state.sessions.onboarding_session_id == "s1"
    assert result.onboarding_session is not None
    assert result.onboarding_session.session_id == "s1"
    assert result.onboarding_session.session_number == 1


async def test_a_retry_on_a_stale_replica_never_runs_the_summarizer_again(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    replica_a = StorageManager([backend.adapter])
    replica_b = StorageManager([backend.open()])
    started = await start_session(P, U, "s1", replica_a)  # replica A caches the state
    snapshot = make_snapshot("s1", number=1, state=started.state)
    calls: list[str] = []

    async def summarizer(snap: SessionSnapshot) -> str:
        calls.append(snap.session_id)
        return "summary"

    first = await end_session(P, U, snapshot, replica_b, summarizer=summarizer)
    assert first.persisted and not first.duplicate and calls == ["s1"]
    retry = await end_session(P, U, snapshot, replica_a, summarizer=summarizer)  # A's cache is stale
    assert retry.duplicate and retry.snapshot_created is False
    assert calls == ["s1"]  # the LLM was not called for the retry
    assert retry.state.sessions.count == 1 and retry.conflicts == 0
