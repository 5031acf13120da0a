"""Write hazards found in review, each reproduced against a real redis-server.

- A host's dict-level read-modify-write must not store new content under the
  old revision (another writer's compare-and-set holding it would then pass).
- A compare-and-set whose reply is lost to a socket timeout, and which the
  client retries, must recognise its own landed write rather than report the
  first end of a session as a duplicate; the sinks still get the session.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from autoplay_obs.storage import RedisStorageAdapter, StorageManager, end_session, start_session
from autoplay_obs.storage._keys import user_state_key
from autoplay_obs.user_adoption_state import SessionSnapshot

pytestmark = pytest.mark.redis_server

P = "prod_hazard"


def _snapshot(state: Any, session_id: str, number: int) -> SessionSnapshot:
    return SessionSnapshot.from_adoption_state(
        state,
        session_id=session_id,
        session_number=number,
        started_at=time.time() - 60,
        catalog_workflow_ids=["w1"],
    )


async def test_a_dict_level_read_modify_write_never_reuses_the_old_revision(
    adapter: RedisStorageAdapter, raw: redis.asyncio.Redis
) -> None:
    replica = StorageManager([adapter])  # caches the document (and its revision) it writes
    started = await start_session(P, "u1", "s1", replica)
    host_view = await adapter.get_user_state(P, "u1")
    assert host_view is not None and "_rev" not in host_view  # the revision is not the host's to keep
    host_view["metadata"] = {"plan": "pro"}
    await adapter.save_user_state(P, "u1", host_view)  # a plain overwrite by the host

    ended = await end_session(P, "u1", _snapshot(started.state, "s1", 1), replica)

    stored = json.loads(await raw.get(user_state_key(P, "u1")))
    assert stored["metadata"] == {"plan": "pro"}  # the host's change survived the replica's write
    assert ended.conflicts == 1 and stored["sessions"]["count"] == 1


class _Sink:
    name = "recording"

    def __init__(self) -> None:
        self.states: list[int] = []
        self.snapshots: list[str] = []

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        self.states.append(state["sessions"]["count"])

    async def save_session_snapshot(self, p: str, u: str, session_id: str, snapshot: dict[str, Any]) -> None:
        self.snapshots.append(session_id)

    async def get_user_state(self, product_id: str, user_id: str) -> None:
        return None

    async def get_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> None:
        return None


@pytest.fixture
async def slow_reply_proxy(redis_server: Any, redis_url: str) -> AsyncIterator[dict[str, Any]]:
    """A TCP proxy to the test server that, once armed, holds back the next compare-and-set reply."""
    control: dict[str, Any] = {"armed": False, "delayed": False}

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", redis_server.port)
        hold = asyncio.Event()

        async def client_to_server() -> None:
            while data := await reader.read(65536):
                if control["armed"] and not control["delayed"] and b"EVAL" in data:
                    control["delayed"] = True
                    hold.set()
                up_w.write(data)
                await up_w.drain()
            up_w.close()

        async def server_to_client() -> None:
            while data := await up_r.read(65536):
                if hold.is_set():
                    hold.clear()
                    await asyncio.sleep(1.0)  # past the client's socket timeout: the reply is lost
                try:
                    writer.write(data)
                    await writer.drain()
                except (ConnectionError, RuntimeError):
                    return
            writer.close()

        await asyncio.gather(client_to_server(), server_to_client(), return_exceptions=True)

    server = await asyncio.start_server(pipe, "127.0.0.1", 0)
    control["port"] = server.sockets[0].getsockname()[1]
    try:
        yield control
    finally:
        server.close()


async def test_a_retried_compare_and_set_recognises_its_own_landed_write(
    slow_reply_proxy: dict[str, Any],
) -> None:
    sink = _Sink()
    adapter = RedisStorageAdapter(f"redis://127.0.0.1:{slow_reply_proxy['port']}/0", socket_timeout=0.3)
    storage = StorageManager([adapter, sink])
    try:
        started = await start_session(P, "u2", "s1", storage)
        slow_reply_proxy["armed"] = True
        ended = await end_session(P, "u2", _snapshot(started.state, "s1", 1), storage, summary="x")
        await storage.drain()
        assert slow_reply_proxy["delayed"]  # the hazard really happened
        assert ended.persisted and not ended.duplicate and ended.state.sessions.count == 1
        assert ended.snapshot_created is True  # the resent SET NX found our own first one
        assert sink.snapshots == ["s1"]  # the counted session reached the sink once
        assert sink.states[-1] == 1
    finally:
        await storage.aclose()
