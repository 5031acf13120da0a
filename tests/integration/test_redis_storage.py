"""The Redis primary against a real redis-server: layout, degraded paths, documents in the wild.

Invariants 3 (never silently replace data) and 5 (the host never crashes) are
checked here with a server that is killed, a primary that fails some calls, and
stored bytes that cannot be read.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import redis.asyncio

from autoplay_obs.errors import (
    AutoplayError,
    ConfigurationError,
    DocumentError,
    StorageError,
    StorageUnavailableError,
    UnreadableDocumentError,
    UnsupportedVersionError,
)
from autoplay_obs.storage import (
    Outcome,
    RedisStorageAdapter,
    StorageManager,
    Stored,
    end_session,
    on_session_end,
    on_session_start,
    session_key,
    start_session,
    user_state_key,
)
from autoplay_obs.user_adoption_state import SessionSnapshot

if TYPE_CHECKING:
    from tests.conftest import RedisServer

pytestmark = pytest.mark.redis_server

P, U = "prod_1", "u_1"
STATE_KEY = f"autoplay:user:{P}:{U}:state"
MakeSnapshot = Callable[..., SessionSnapshot]
DOWN_BOUND_S = 5.0  # generous: a call with Redis down must come back, not hang


# -- layout ------------------------------------------------------------------------------


async def test_documents_live_under_exactly_the_documented_keys(
    adapter: RedisStorageAdapter, raw: redis.asyncio.Redis, make_snapshot: MakeSnapshot
) -> None:
    await on_session_start(P, U, "sess_abc", storage=adapter)
    await on_session_end(P, U, make_snapshot("sess_abc"), storage=adapter, summary="s")
    keys = sorted(k.decode() for k in await raw.keys("*"))
    assert keys == [f"autoplay:user:{P}:{U}:session:sess_abc", STATE_KEY]
    for key in keys:
        assert await raw.type(key) == b"string"
        assert await raw.ttl(key) == -1  # permanent unless ttl_s is given
    state = json.loads(await raw.get(STATE_KEY))
    assert state["_v"] == 1 and state["sessions"]["count"] == 1
    snapshot = json.loads(await raw.get(keys[0]))
    assert snapshot["_v"] == 1 and snapshot["_frozen"] is True and snapshot["session_id"] == "sess_abc"


async def test_ids_with_separators_get_distinct_keys_on_the_server(
    adapter: RedisStorageAdapter, raw: redis.asyncio.Redis
) -> None:
    pairs = [("a:b", "c"), ("a", "b:c"), ("a", "{b}"), ("a", "b c"), ("a", "b%20c")]
    for i, (p, u) in enumerate(pairs):
        await on_session_start(p, u, f"s{i}", storage=adapter)
    assert len(await raw.keys("*")) == len(pairs)
    for i, (p, u) in enumerate(pairs):
        doc = json.loads(await raw.get(user_state_key(p, u)))
        assert (doc["user_id"], doc["sessions"]["current_session_id"]) == (u, f"s{i}")


async def test_ttl_applies_to_state_and_snapshots(
    redis_url: str, raw: redis.asyncio.Redis, make_snapshot: MakeSnapshot
) -> None:
    with pytest.warns(DeprecationWarning, match="state_ttl"):  # the old single lifetime, kept as it was
        adapter = RedisStorageAdapter(redis_url=redis_url, ttl_s=300)
    try:
        await on_session_end(P, U, make_snapshot("s1"), storage=adapter)
    finally:
        await adapter.aclose()
    assert 0 < await raw.ttl(STATE_KEY) <= 300
    assert 0 < await raw.ttl(session_key(P, U, "s1")) <= 300


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"redis_url": "redis://x", "client": object()}, {"redis_url": "redis://x", "ttl_s": 0}],
    ids=["neither", "both", "zero-ttl"],
)
def test_bad_adapter_configuration_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RedisStorageAdapter(**kwargs)


def test_a_bad_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        RedisStorageAdapter(redis_url="ftp://127.0.0.1:1")


async def test_unix_socket_url_works(redis_server: RedisServer, redis_url: str) -> None:
    adapter = RedisStorageAdapter(redis_url=redis_server.unix_url)
    try:
        result = await start_session(P, U, "s1", adapter)
        assert result.persisted
        assert adapter.describe()["server.address"] == redis_server.socket_path
        assert (await adapter.load_state(P, U)) is not None
    finally:
        await adapter.aclose()


def test_describe_names_the_tcp_server(redis_server: RedisServer) -> None:
    adapter = RedisStorageAdapter(redis_url=redis_server.url)
    assert adapter.describe() == {
        "db.system.name": "redis",
        "db.namespace": "0",
        "server.address": "127.0.0.1",
        "server.port": redis_server.port,
    }


# -- the server goes away ----------------------------------------------------------------


async def _timed(call: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await call
    return result, time.perf_counter() - started


async def test_killed_server_degrades_every_call_and_recovers_on_restart(
    redis_server: RedisServer, redis_url: str, make_snapshot: MakeSnapshot
) -> None:
    adapter = RedisStorageAdapter(redis_url=redis_url)
    storage = StorageManager([adapter])
    try:
        warm = await start_session(P, U, "s0", storage)  # a pooled connection exists
        assert warm.persisted
        redis_server.kill()
        try:
            start, elapsed = await _timed(start_session(P, U, "s1", storage))
            assert elapsed < DOWN_BOUND_S
            assert start.degraded is True and start.persisted is False
            assert isinstance(start.error, StorageUnavailableError)
            assert start.state.user_id == U and start.state.current_session_id == "s1"
            assert start.onboarding_session is None
            assert any(c.role == "primary" and c.outcome is Outcome.ERROR for c in start.adapter_calls)

            (state, onboarding), elapsed = await _timed(on_session_start(P, U, "s1", storage=storage))
            assert elapsed < DOWN_BOUND_S
            assert state.current_session_id == "s1" and onboarding is None

            end, elapsed = await _timed(end_session(P, U, make_snapshot("s1"), storage, summary="x"))
            assert elapsed < DOWN_BOUND_S
            assert end.persisted is False and end.snapshot_created is None
            assert isinstance(end.error, StorageError)
            assert end.state.sessions_count == 1  # the stand-in shows the caller what was meant

            updated, elapsed = await _timed(on_session_end(P, U, make_snapshot("s1"), storage=storage))
            assert elapsed < DOWN_BOUND_S
            assert updated.user_id == U
        finally:
            redis_server.start()

        again = await start_session(P, U, "s2", storage)
        assert again.persisted is True and again.degraded is False
        end = await end_session(P, U, make_snapshot("s2"), storage)
        assert end.persisted is True and end.snapshot_created is True
        assert end.state.sessions_count == 1  # the server kept nothing (no persistence)
    finally:
        await adapter.aclose()


async def test_server_down_from_the_start_degrades_quickly(make_snapshot: MakeSnapshot) -> None:
    from tests.conftest import free_port

    adapter = RedisStorageAdapter(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        start, elapsed = await _timed(start_session(P, U, "s1", adapter))
        assert elapsed < DOWN_BOUND_S
        assert start.degraded and isinstance(start.error, StorageUnavailableError)
        end, elapsed = await _timed(end_session(P, U, make_snapshot("s1"), adapter))
        assert elapsed < DOWN_BOUND_S
        assert end.persisted is False
        with pytest.raises(StorageUnavailableError):
            await StorageManager([adapter]).get_user_state(P, U)
    finally:
        await adapter.aclose()


async def test_kill_in_the_middle_of_concurrent_ends_never_raises(
    redis_server: RedisServer, redis_url: str, make_snapshot: MakeSnapshot
) -> None:
    adapter = RedisStorageAdapter(redis_url=redis_url)
    storage = StorageManager([adapter])
    summarized = 0

    async def kill_on_the_tenth(snapshot: SessionSnapshot) -> str:
        nonlocal summarized
        summarized += 1
        if summarized == 10:
            redis_server.kill()
        return snapshot.session_id

    try:
        await start_session(P, U, "warm", storage)
        calls = [
            end_session(P, U, make_snapshot(f"s{i}", number=i + 1), storage, summarizer=kill_on_the_tenth)
            for i in range(30)
        ] + [start_session(P, U, f"t{i}", storage) for i in range(10)]
        results, elapsed = await _timed(asyncio.gather(*calls))
        assert elapsed < 3 * DOWN_BOUND_S
        assert not redis_server.running
        lost = [r for r in results if not r.persisted]
        assert lost, "the kill happened mid-run, so some calls cannot have persisted"
        assert all(isinstance(r.error, (StorageError, DocumentError)) for r in lost)
        redis_server.start()
        # the same adapter (and its pool) recovers once the server is back
        again = await asyncio.gather(*(start_session(P, f"u{i}", "back", storage) for i in range(40)))
        assert all(r.persisted and not r.degraded for r in again)
    finally:
        redis_server.start()
        await adapter.aclose()


# -- a primary that fails some calls: stored data is never replaced ------------------------


class FlakyRedis:
    """Our Redis adapter with chosen operations failing, as a blip would make them."""

    name = "flaky-redis"

    def __init__(self, inner: RedisStorageAdapter) -> None:
        self.inner = inner
        self.failing: set[str] = set()

    def _check(self, operation: str) -> None:
        if operation in self.failing:
            raise StorageUnavailableError(f"injected failure of {operation}")

    async def load_state(self, product_id: str, user_id: str) -> Stored | None:
        self._check("load_state")
        return await self.inner.load_state(product_id, user_id)

    async def swap_state(self, product_id: str, user_id: str, raw: bytes, expected: str | None) -> Any:
        self._check("swap_state")
        return await self.inner.swap_state(product_id, user_id, raw, expected)

    async def create_snapshot(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> bool:
        self._check("create_snapshot")
        return await self.inner.create_snapshot(product_id, user_id, session_id, raw)

    async def load_snapshot(self, product_id: str, user_id: str, session_id: str) -> bytes | None:
        self._check("load_snapshot")
        return await self.inner.load_snapshot(product_id, user_id, session_id)

    async def save_user_state(self, *args: Any) -> None:
        self._check("save_user_state")
        await self.inner.save_user_state(*args)

    async def get_user_state(self, *args: Any) -> Any:
        self._check("get_user_state")
        return await self.inner.get_user_state(*args)

    async def save_session_snapshot(self, *args: Any) -> None:
        self._check("save_session_snapshot")
        await self.inner.save_session_snapshot(*args)

    async def get_session_snapshot(self, *args: Any) -> Any:
        self._check("get_session_snapshot")
        return await self.inner.get_session_snapshot(*args)


@pytest.mark.parametrize("failing", [{"load_state"}, {"swap_state"}, {"load_state", "create_snapshot"}])
async def test_a_failing_primary_never_overwrites_stored_state(
    adapter: RedisStorageAdapter,
    raw: redis.asyncio.Redis,
    make_snapshot: MakeSnapshot,
    failing: set[str],
) -> None:
    flaky = FlakyRedis(adapter)
    storage = StorageManager([flaky])
    await on_session_start(P, U, "s1", storage=storage)
    await on_session_end(P, U, make_snapshot("s1", number=1), storage=storage, summary="one")
    await on_session_start(P, U, "s2", storage=storage)
    await on_session_end(P, U, make_snapshot("s2", number=2), storage=storage, summary="two")
    before = await raw.get(STATE_KEY)
    assert json.loads(before)["sessions"]["count"] == 2

    # a fresh manager, as after a process restart: nothing is remembered, every read goes out
    flaky.failing = failing
    storage = StorageManager([flaky])
    start = await start_session(P, U, "s3", storage)
    assert start.persisted is False and start.degraded is True
    assert isinstance(start.error, StorageUnavailableError)
    state, _ = await on_session_start(P, U, "s3", storage=storage)
    assert state.current_session_id == "s3"
    end = await end_session(P, U, make_snapshot("s3", number=3), storage, summary="three")
    assert end.persisted is False
    updated = await on_session_end(P, U, make_snapshot("s3", number=3), storage=storage)
    assert updated.user_id == U
    assert await raw.get(STATE_KEY) == before

    flaky.failing = set()
    done = await end_session(P, U, make_snapshot("s3", number=3), storage, summary="three")
    assert done.persisted is True and done.duplicate is False
    doc = json.loads(await raw.get(STATE_KEY))
    assert doc["sessions"]["count"] == 3
    assert doc["onboarding"]["summary"] == "three"


# -- documents that cannot be read --------------------------------------------------------

VALID_V2 = {"_v": 2, "user_id": U, "sessions": {"count": 7, "current_session_id": None, "index": []}}

UNREADABLE = {
    "not-json": b"not json",
    "json-list": b"[1,2]",
    "json-string": b'"a string"',
    "empty": b"",
    "truncated": b'{"_v": 1, "user_id": "u_1", "sessions": {"count": 3',
    "version-2": json.dumps(VALID_V2).encode(),
    "version-string": json.dumps({**VALID_V2, "_v": "two"}).encode(),
}


@pytest.mark.parametrize("stored", list(UNREADABLE.values()), ids=list(UNREADABLE))
async def test_unreadable_state_degrades_and_is_left_byte_for_byte(
    adapter: RedisStorageAdapter, raw: redis.asyncio.Redis, make_snapshot: MakeSnapshot, stored: bytes
) -> None:
    await raw.set(STATE_KEY, stored)
    storage = StorageManager([adapter])

    start = await start_session(P, U, "s1", storage)
    assert start.degraded is True and start.persisted is False
    assert isinstance(start.error, DocumentError)
    assert start.state.user_id == U and start.state.current_session_id == "s1"
    state, onboarding = await on_session_start(P, U, "s1", storage=storage)
    assert state.current_session_id == "s1" and onboarding is None

    end = await end_session(P, U, make_snapshot("s1"), storage, summary="x")
    assert end.persisted is False
    assert isinstance(end.error, DocumentError)
    await on_session_end(P, U, make_snapshot("s1"), storage=storage)

    assert await raw.get(STATE_KEY) == stored
    if stored == UNREADABLE["version-2"]:
        assert isinstance(start.error, UnsupportedVersionError)


async def test_a_state_key_holding_a_hash_degrades_and_is_left_alone(
    adapter: RedisStorageAdapter, raw: redis.asyncio.Redis, make_snapshot: MakeSnapshot
) -> None:
    await raw.hset(STATE_KEY, mapping={"user_id": U, "count": "3"})
    storage = StorageManager([adapter])

    start = await start_session(P, U, "s1", storage)
    assert start.degraded is True and start.persisted is False
    assert isinstance(start.error, UnreadableDocumentError)
    await on_session_start(P, U, "s1", storage=storage)

    end = await end_session(P, U, make_snapshot("s1"), storage, summary="x")
    assert end.persisted is False
    assert isinstance(end.error, DocumentError)
    await on_session_end(P, U, make_snapshot("s1"), storage=storage)

    assert await raw.type(STATE_KEY) == b"hash"
    assert await raw.hgetall(STATE_KEY) == {b"user_id": U.encode(), b"count": b"3"}


async def test_dict_reads_of_an_unreadable_document_raise_instead_of_reading_absent(
    adapter: RedisStorageAdapter, raw: redis.asyncio.Redis
) -> None:
    await raw.set(STATE_KEY, b"not json")
    await raw.hset(session_key(P, U, "s1"), mapping={"a": "b"})
    with pytest.raises(UnreadableDocumentError):
        await adapter.get_user_state(P, U)
    with pytest.raises(AutoplayError):
        await StorageManager([adapter]).get_user_state(P, U)
    with pytest.raises(UnreadableDocumentError):
        await adapter.get_session_snapshot(P, U, "s1")


async def test_a_snapshot_key_holding_a_hash_is_not_overwritten(
    adapter: RedisStorageAdapter, raw: redis.asyncio.Redis, make_snapshot: MakeSnapshot
) -> None:
    key = session_key(P, U, "s1")
    await raw.hset(key, mapping={"a": "b"})
    result = await end_session(P, U, make_snapshot("s1"), adapter)
    assert result.snapshot_created is not True
    assert await raw.type(key) == b"hash"


async def test_a_corrupt_onboarding_snapshot_is_reported_not_fatal(
    adapter: RedisStorageAdapter, raw: redis.asyncio.Redis, make_snapshot: MakeSnapshot
) -> None:
    await on_session_end(P, U, make_snapshot("s1", number=1), storage=adapter)
    await raw.delete(session_key(P, U, "s1"))
    await raw.set(session_key(P, U, "s1"), b"{garbage")
    result = await start_session(P, U, "s2", adapter)
    assert result.persisted is True and result.degraded is False
    assert result.onboarding_session is None  # counted as a refused snapshot by telemetry
    assert result.repairs == ()  # the state itself was clean
    assert await raw.get(session_key(P, U, "s1")) == b"{garbage"


# -- documents that can be repaired ----------------------------------------------------------


def _repairable_state() -> dict[str, Any]:
    return {
        "_v": 1,
        "user_id": U,
        "metadata": {"role": "admin"},
        "journey_state": "onboarding",
        "mastery": {"rating": "14", "level": "intermediate", "description": "hand edited"},
        "discovered_features": ["search"],
        "sessions": {
            "count": 1,
            "current_session_id": None,
            "index": [{"session_id": "s1", "session_number": 1, "started_at": 1.0, "captured_at": 2.0}],
        },
    }


async def test_a_repairable_state_is_read_reported_and_rewritten_repaired(
    adapter: RedisStorageAdapter, raw: redis.asyncio.Redis
) -> None:
    await raw.set(STATE_KEY, json.dumps(_repairable_state()))
    result = await start_session(P, U, "s2", adapter)
    assert result.persisted is True and result.degraded is False
    assert result.repairs and any("mastery.rating" in r for r in result.repairs)
    assert result.state.mastery.rating == 10
    doc = json.loads(await raw.get(STATE_KEY))
    assert doc["mastery"]["rating"] == 10
    assert doc["mastery"]["description"] == "hand edited"
    assert doc["metadata"] == {"role": "admin"}
    assert doc["discovered_features"] == ["search"]
    assert doc["sessions"]["count"] == 1 and doc["sessions"]["current_session_id"] == "s2"
    assert [e["session_id"] for e in doc["sessions"]["index"]] == ["s1"]


async def test_session_end_on_a_repairable_state_reports_and_repairs(
    adapter: RedisStorageAdapter, raw: redis.asyncio.Redis, make_snapshot: MakeSnapshot
) -> None:
    await raw.set(STATE_KEY, json.dumps(_repairable_state()).replace('"count": 1', '"count": NaN'))
    result = await end_session(P, U, make_snapshot("s2", number=2), adapter)
    assert result.persisted is True
    assert result.repairs
    doc = json.loads(await raw.get(STATE_KEY))
    assert doc["sessions"]["count"] == 2
    assert [e["session_id"] for e in doc["sessions"]["index"]] == ["s1", "s2"]


async def test_an_oversized_index_is_trimmed_on_read(
    adapter: RedisStorageAdapter, raw: redis.asyncio.Redis
) -> None:
    index = [
        {"session_id": f"s{i}", "session_number": i + 1, "started_at": float(i), "captured_at": float(i)}
        for i in range(70)
    ]
    await raw.set(
        STATE_KEY, msgspec.json.encode({"_v": 1, "user_id": U, "sessions": {"count": 70, "index": index}})
    )
    result = await start_session(P, U, "next", adapter)
    assert result.persisted and result.repairs
    doc = json.loads(await raw.get(STATE_KEY))
    assert doc["sessions"]["count"] == 70
    assert [e["session_id"] for e in doc["sessions"]["index"]] == [f"s{i}" for i in range(20, 70)]


@pytest.mark.parametrize("stored", [*UNREADABLE.values(), None], ids=[*UNREADABLE, "hash"])
async def test_a_warm_manager_never_writes_over_a_document_that_became_unreadable(
    adapter: RedisStorageAdapter, raw: redis.asyncio.Redis, make_snapshot: MakeSnapshot, stored: bytes | None
) -> None:
    """The manager remembers the last state it saw; a stale memory must not beat what is stored."""
    storage = StorageManager([adapter])
    await start_session(P, U, "s1", storage)
    await end_session(P, U, make_snapshot("s1", number=1), storage)  # the manager now remembers a state
    await raw.delete(STATE_KEY)
    if stored is None:
        await raw.hset(STATE_KEY, mapping={"user_id": U})
    else:
        await raw.set(STATE_KEY, stored)

    start = await start_session(P, U, "s2", storage)
    assert start.persisted is False and start.degraded is True
    assert isinstance(start.error, DocumentError)
    end = await end_session(P, U, make_snapshot("s2", number=2), storage)
    assert end.persisted is False
    assert isinstance(end.error, DocumentError)

    if stored is None:
        assert await raw.hgetall(STATE_KEY) == {b"user_id": U.encode()}
    else:
        assert await raw.get(STATE_KEY) == stored
