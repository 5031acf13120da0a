"""Fixtures for the storage contract and lifecycle suites.

``backend`` runs a test once per readable primary: the in-memory adapter, the
Redis adapter on fakeredis (``client=``) and the Redis adapter on the real
``redis-server`` the suite starts (marked ``redis_server``). ``backend.open()``
gives another adapter on the *same* store, the way a second process would see
it, so cross-process compare-and-set conflicts can be provoked.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import fakeredis.aioredis
import pytest

from autoplay_obs.storage import InMemoryStorageAdapter, RedisStorageAdapter
from autoplay_obs.user_adoption_state import SessionSnapshot, UserAdoptionState

T0 = 1_700_000_000.0


@dataclass
class Backend:
    """One readable primary under test, and a way to open more adapters on its store."""

    kind: str
    adapter: Any
    _open: Callable[[], Any]
    _opened: list[Any] = field(default_factory=list)

    def open(self) -> Any:
        """Another adapter over the same stored data (a second "process")."""
        adapter = self._open()
        self._opened.append(adapter)
        return adapter


def fake_server_with_sha1hex() -> fakeredis.FakeServer:
    """A FakeServer whose Lua has ``redis.sha1hex``, which real Redis has and fakeredis lacks.

    The adapter's compare-and-set script hashes the stored document server-side;
    this gives the fake the same function (SHA-1 of the bytes, hex) so the
    script runs unchanged.
    """
    server = fakeredis.FakeServer()
    fakeredis.FakeRedis(server=server).eval("return 1", 0)  # builds the server's Lua runtime
    lua_redis = server._lua_runtime.globals()[b"redis"]
    lua_redis[b"sha1hex"] = lambda data: hashlib.sha1(data).hexdigest().encode()
    return server


@pytest.fixture(
    params=["memory", "fakeredis", pytest.param("redis", marks=pytest.mark.redis_server)],
)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    kind = request.param
    if kind == "memory":
        adapter = InMemoryStorageAdapter()
        yield Backend(kind, adapter, lambda: adapter)
        return
    if kind == "fakeredis":
        server = fake_server_with_sha1hex()
        clients: list[fakeredis.aioredis.FakeRedis] = []

        def open_fake() -> RedisStorageAdapter:
            client = fakeredis.aioredis.FakeRedis(server=server)
            clients.append(client)
            return RedisStorageAdapter(client=client)

        b = Backend(kind, open_fake(), open_fake)
        try:
            yield b
        finally:
            for client in clients:
                await client.aclose()
        return
    url = request.getfixturevalue("redis_url")
    b = Backend(kind, RedisStorageAdapter(redis_url=url), lambda: RedisStorageAdapter(redis_url=url))
    try:
        yield b
    finally:
        for adapter in [b.adapter, *b._opened]:
            await adapter.aclose()


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
        catalog: tuple[str, ...] = ("create_project", "invite_team"),
    ) -> SessionSnapshot:
        captured = T0 + 60.0 * number if captured_at is None else captured_at
        return SessionSnapshot.from_adoption_state(
            state or UserAdoptionState(user_id=user_id),
            session_id=session_id,
            session_number=number,
            started_at=captured - 30.0,
            catalog_workflow_ids=list(catalog),
            now=captured,
        )

    return make
