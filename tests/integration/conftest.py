"""Fixtures for the real-server storage suites: our adapter, a raw client, snapshots."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio

from autoplay_obs.storage import RedisStorageAdapter
from autoplay_obs.user_adoption_state import SessionSnapshot, UserAdoptionState

T0 = 1_700_000_000.0


@pytest.fixture
async def adapter(redis_url: str) -> AsyncIterator[RedisStorageAdapter]:
    """Our Redis primary on the suite's real, empty server."""
    a = RedisStorageAdapter(redis_url=redis_url)
    try:
        yield a
    finally:
        await a.aclose()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client for writing and reading the stored bytes directly."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def make_snapshot() -> Callable[..., SessionSnapshot]:
    """A snapshot factory with explicit, distinct timestamps (no wall-clock races)."""

    def make(
        session_id: str,
        *,
        number: int = 1,
        captured_at: float | None = None,
        user_id: str = "u_1",
        state: UserAdoptionState | None = None,
    ) -> SessionSnapshot:
        captured = T0 + 60.0 * number if captured_at is None else captured_at
        return SessionSnapshot.from_adoption_state(
            state or UserAdoptionState(user_id=user_id),
            session_id=session_id,
            session_number=number,
            started_at=captured - 30.0,
            catalog_workflow_ids=["create_project", "invite_team"],
            now=captured,
        )

    return make
