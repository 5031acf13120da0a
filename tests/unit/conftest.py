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
            client = fakeredis.aioredis.FakeRedis(server=server, max_connections=1024)
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
