"""Auto-pipelining against a real redis-server: batching, order, per-command errors, failures.

A round trip is counted as one packed socket write on one of the adapter's
kept connections (redis-py's ``send_packed_command``), so the counts below are
what went over the wire, not what the library says it sent. ``CLIENT PAUSE``
holds a round trip in flight on the server, so "waiting" callers are real.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio
from redis.asyncio.connection import AbstractConnection

from autoplay_obs.errors import StorageUnavailableError, UnreadableDocumentError
from autoplay_obs.storage import Outcome, RedisStorageAdapter, end_session, session_key, user_state_key
from autoplay_obs.user_adoption_state import SessionSnapshot

if TYPE_CHECKING:
    from tests.conftest import RedisServer

pytestmark = pytest.mark.redis_server

P, U = "prod_ap", "u_1"
DOWN_BOUND_S = 5.0  # generous: no caller may hang when the server dies
Writes = list[tuple[AbstractConnection, bytes]]


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Writes:
    """Every packed write a redis.asyncio connection makes, with the connection that made it."""
    seen: Writes = []
    original = AbstractConnection.send_packed_command

    async def recording(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        data = command if isinstance(command, bytes | str) else b"".join(bytes(c) for c in command)
        seen.append((self, data.encode() if isinstance(data, str) else data))
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", recording)
    return seen


def trips(writes: Writes, adapter: RedisStorageAdapter) -> list[bytes]:
    """The writes made on the adapter's kept connections (all idle once its calls are done)."""
    kept = adapter._pipeline._idle
    return [data for conn, data in writes if any(conn is k for k in kept)]


@pytest.fixture
async def state_only_url(redis_server: RedisServer, redis_url: str) -> AsyncIterator[str]:
    """A user whose ACL allows state keys only: a snapshot write is refused (NOPERM), per command."""
    admin = redis_server.client()
    await admin.execute_command("ACL", "SETUSER", "state-only", "reset", "on", "nopass", "~*:state", "+@all")
    try:
        yield f"redis://state-only@127.0.0.1:{redis_server.port}/0"
    finally:
        await admin.execute_command("ACL", "DELUSER", "state-only")
        await admin.aclose()


async def pause_server(raw: redis.asyncio.Redis, ms: int) -> None:
    """Hold every other client's commands for ``ms``: a round trip sent now stays in flight."""
    await raw.execute_command("CLIENT", "PAUSE", ms)  # every command: the default before and since 6.2


async def test_concurrent_callers_share_round_trips_and_each_gets_its_own_reply(
    redis_url: str, raw: redis.asyncio.Redis, writes: Writes
) -> None:
    """With one connection, 50 callers must cost 2 round trips (one alone, one batch), not 50."""
    adapter = RedisStorageAdapter(redis_url=redis_url, pipelines=1)
    try:
        await adapter.load_state(P, "warm")  # the kept connection exists; its handshake is not counted
        writes.clear()
        docs = {f"u{i}": f'{{"n":{i}}}'.encode() for i in range(50)}
        swapped = await asyncio.gather(*(adapter.swap_state(P, u, doc, None) for u, doc in docs.items()))
        assert swapped == [(True, None)] * 50
        swap_trips = len(trips(writes, adapter))
        loaded = await asyncio.gather(*(adapter.load_state(P, u) for u in docs))
        load_trips = len(trips(writes, adapter)) - swap_trips
    finally:
        await adapter.aclose()
    assert [s.raw if s else None for s in loaded] == list(docs.values())
    assert (swap_trips, load_trips) == (2, 2)
    for user, doc in docs.items():  # what the server holds, read by another client
        assert await raw.get(user_state_key(P, user)) == doc


async def test_a_swap_with_a_snapshot_sends_the_snapshot_before_the_state_in_one_write(
    adapter: RedisStorageAdapter, raw: redis.asyncio.Redis, writes: Writes
) -> None:
    """A session end's snapshot must land before its state, in the same round trip."""
    snapshot_key, state_key = session_key(P, U, "s1"), user_state_key(P, U)
    await adapter.load_state(P, U)  # warm
    async with raw.monitor() as monitor:
        writes.clear()
        created, swapped = await adapter.swap_state_with(P, U, b"state", None, snapshot=("s1", b"snap"))
        sent = trips(writes, adapter)
        await raw.echo("monitor-end")
        seen: list[dict[str, Any]] = []
        while not (info := await asyncio.wait_for(monitor.next_command(), 5))["command"].startswith("ECHO"):
            if info["client_type"] != "lua" and "autoplay:" in info["command"]:  # not the handshakes
                seen.append(dict(info))
    assert (created, swapped) == (True, (True, None))
    assert len(sent) == 1
    assert 0 <= sent[0].find(b"\r\nSET\r\n") < sent[0].find(b"\r\nEVAL\r\n")
    assert [c["command"].split(" ")[0] for c in seen] == ["SET", "EVAL"]
    assert seen[0]["command"].split(" ")[1] == snapshot_key and state_key in seen[1]["command"]
    assert seen[0]["client_port"] == seen[1]["client_port"]  # one connection
    assert (await raw.get(snapshot_key), await raw.get(state_key)) == (b"snap", b"state")


async def test_a_snapshot_key_holding_a_hash_is_left_alone_and_the_swap_still_lands(
    adapter: RedisStorageAdapter, raw: redis.asyncio.Redis
) -> None:
    """``SET NX`` checks existence, not type: a hash there reads as "already frozen", never overwritten."""
    snapshot_key = session_key(P, U, "s1")
    await raw.hset(snapshot_key, mapping={"a": "b"})
    created, swapped = await adapter.swap_state_with(P, U, b"state", None, snapshot=("s1", b"snap"))
    assert (created, swapped) == (False, (True, None))
    assert await raw.get(user_state_key(P, U)) == b"state"
    assert await raw.hgetall(snapshot_key) == {b"a": b"b"}


async def test_a_refused_snapshot_write_fails_only_the_snapshot_part(
    state_only_url: str, raw: redis.asyncio.Redis
) -> None:
    """One command's error is its own: the state swap in the same round trip still lands."""
    adapter = RedisStorageAdapter(redis_url=state_only_url)
    try:
        created, swapped = await adapter.swap_state_with(P, U, b"state", None, snapshot=("s1", b"snap"))
        assert isinstance(created, StorageUnavailableError) and "NoPermission" in str(created)
        assert swapped == (True, None)
        stored = await adapter.load_state(P, U)  # the connection stayed in step
        assert stored is not None and stored.raw == b"state"
    finally:
        await adapter.aclose()
    assert await raw.exists(session_key(P, U, "s1")) == 0


async def test_a_wrongtype_state_key_fails_only_the_swap_part(
    adapter: RedisStorageAdapter, raw: redis.asyncio.Redis
) -> None:
    """The reverse: the snapshot is created even though the script's key holds a hash."""
    state_key = user_state_key(P, U)
    await raw.hset(state_key, mapping={"a": "b"})
    created, swapped = await adapter.swap_state_with(P, U, b"state", None, snapshot=("s1", b"snap"))
    assert created is True
    assert isinstance(swapped, UnreadableDocumentError)
    assert await raw.get(session_key(P, U, "s1")) == b"snap"
    assert await raw.hgetall(state_key) == {b"a": b"b"}
    # the connection stayed in step: the next reply is the next command's
    assert (await adapter.load_snapshot(P, U, "s1"), await adapter.load_state(P, "nobody")) == (b"snap", None)


async def test_session_end_whose_snapshot_write_fails_still_counts_the_session(
    state_only_url: str, make_snapshot: Callable[..., SessionSnapshot]
) -> None:
    """The bundled round trip is two calls on record: the snapshot's error, the swap's success."""
    adapter = RedisStorageAdapter(redis_url=state_only_url)
    try:
        result = await end_session(P, U, make_snapshot("s1", user_id=U), adapter)
        stored = await adapter.load_state(P, U)
    finally:
        await adapter.aclose()
    assert result.persisted is True and result.duplicate is False
    assert result.snapshot_created is None
    assert isinstance(result.error, StorageUnavailableError)
    operations = [c.operation for c in result.adapter_calls]
    assert operations.count("create_snapshot") == operations.count("swap_state") == 1
    outcomes = {c.operation: c.outcome for c in result.adapter_calls}
    assert outcomes["create_snapshot"] is Outcome.ERROR and outcomes["swap_state"] is Outcome.OK
    assert stored is not None and json.loads(stored.raw)["sessions"]["count"] == 1


async def test_a_dying_server_fails_the_round_trip_in_flight_and_every_waiting_caller(
    redis_server: RedisServer, redis_url: str, raw: redis.asyncio.Redis
) -> None:
    """No caller may hang on a dead connection; the kept connection reconnects afterwards."""
    adapter = RedisStorageAdapter(redis_url=redis_url, pipelines=1, retries=0)
    try:
        await adapter.load_state(P, "warm")
        await pause_server(raw, 10_000)
        calls = [asyncio.create_task(adapter.load_state(P, f"u{i}")) for i in range(20)]
        calls += [asyncio.create_task(adapter.swap_state(P, f"w{i}", b"x", None)) for i in range(20)]
        await asyncio.sleep(0.2)
        assert not any(c.done() for c in calls)  # one round trip held in flight, the rest waiting
        redis_server.kill()
        _, pending = await asyncio.wait(calls, timeout=DOWN_BOUND_S)
        assert not pending
        assert all(isinstance(c.exception(), StorageUnavailableError) for c in calls)
        with pytest.raises(StorageUnavailableError):
            await asyncio.wait_for(adapter.load_state(P, "u0"), DOWN_BOUND_S)
        redis_server.start()
        assert await adapter.swap_state(P, "back", b"again", None) == (True, None)
        back = await adapter.load_state(P, "back")
        assert back is not None and back.raw == b"again"
    finally:
        redis_server.start()
        await adapter.aclose()


async def test_a_cancelled_waiting_caller_leaves_the_others_their_replies(
    redis_url: str, raw: redis.asyncio.Redis, writes: Writes
) -> None:
    """Cancelling one caller of a waiting batch must not cost the rest their replies."""
    adapter = RedisStorageAdapter(redis_url=redis_url, pipelines=1)
    docs = {f"u{i}": f"doc-{i}".encode() for i in range(6)}
    try:
        await raw.mset({user_state_key(P, u): doc for u, doc in docs.items()})
        await adapter.load_state(P, "warm")
        writes.clear()
        await pause_server(raw, 300)
        first = asyncio.create_task(adapter.load_state(P, "u0"))
        await asyncio.sleep(0.05)
        waiting = {u: asyncio.create_task(adapter.load_state(P, u)) for u in list(docs)[1:]}
        new = asyncio.create_task(adapter.swap_state(P, "new", b"fresh", None))
        await asyncio.sleep(0.05)
        assert not first.done() and not any(t.done() for t in waiting.values())
        waiting["u3"].cancel()
        await asyncio.wait_for(asyncio.wait([first, new, *waiting.values()]), DOWN_BOUND_S)
        assert waiting.pop("u3").cancelled()
        got = {u: t.result() for u, t in {"u0": first, **waiting}.items()}
        assert {u: s.raw if s else None for u, s in got.items()} == {u: docs[u] for u in got}
        assert new.result() == (True, None)
        assert len(trips(writes, adapter)) == 2  # the in-flight one, then the whole batch
        after = await adapter.load_state(P, "new")
        assert after is not None and after.raw == b"fresh"
    finally:
        await adapter.aclose()


async def test_work_while_waiting_runs_once_each_after_its_commands_are_sent(
    redis_url: str, raw: redis.asyncio.Redis, writes: Writes
) -> None:
    """The caller's hook overlaps the server's work: it must run after the send, never before."""
    adapter = RedisStorageAdapter(redis_url=redis_url, pipelines=1)
    sent_when_run: dict[str, bool] = {}

    def hook(user: str) -> Callable[[], None]:
        def run() -> None:
            assert user not in sent_when_run  # once per call
            key = user_state_key(P, user).encode()
            sent_when_run[user] = any(key in data for _, data in writes)

        return run

    try:
        await adapter.load_state(P, "warm")
        writes.clear()
        await pause_server(raw, 200)
        first = asyncio.create_task(adapter.swap_state_with(P, "u0", b"d0", None, while_waiting=hook("u0")))
        await asyncio.sleep(0.05)
        queued = [  # these wait for the connection, then go out as one batch
            asyncio.create_task(adapter.swap_state_with(P, f"u{i}", b"d", None, while_waiting=hook(f"u{i}")))
            for i in range(1, 4)
        ]
        results = await asyncio.wait_for(asyncio.gather(first, *queued), DOWN_BOUND_S)
    finally:
        await adapter.aclose()
    assert results == [(None, (True, None))] * 4
    assert sent_when_run == {f"u{i}": True for i in range(4)}


async def test_a_cancelled_caller_in_flight_leaves_no_stale_reply_for_the_next(
    redis_url: str, raw: redis.asyncio.Redis
) -> None:
    """A round trip abandoned mid-read must not hand its reply to whoever uses the connection next."""
    adapter = RedisStorageAdapter(redis_url=redis_url, pipelines=1)
    try:
        await raw.mset({user_state_key(P, "u0"): b"doc-0", user_state_key(P, "u1"): b"doc-1"})
        await adapter.load_state(P, "warm")
        await pause_server(raw, 300)
        first = asyncio.create_task(adapter.load_state(P, "u0"))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(adapter.load_state(P, "u1"))
        await asyncio.sleep(0.05)
        first.cancel()
        got = await asyncio.wait_for(second, DOWN_BOUND_S)
        assert first.cancelled()
        assert got is not None and got.raw == b"doc-1"
        again = await adapter.load_state(P, "u0")
        assert again is not None and again.raw == b"doc-0"
    finally:
        await adapter.aclose()


async def test_aclose_returns_kept_connections_to_an_injected_clients_pool(redis_url: str) -> None:
    """An injected client is the host's: closing the adapter gives its connections back, unclosed."""
    client = redis.asyncio.Redis.from_url(redis_url)
    pool = client.connection_pool
    try:
        adapter = RedisStorageAdapter(client=client, pipelines=4)
        await asyncio.gather(*(adapter.swap_state(P, f"u{i}", b"x", None) for i in range(20)))
        assert len(pool._in_use_connections) == 4  # kept out of the pool between calls
        await adapter.aclose()
        assert len(pool._in_use_connections) == 0
        assert len(pool._available_connections) == 4
        assert await client.get(user_state_key(P, "u7")) == b"x"
    finally:
        await client.aclose()


async def test_aclose_during_a_round_trip_still_returns_its_connection(
    redis_url: str, raw: redis.asyncio.Redis
) -> None:
    """A host closing at shutdown with calls still out must not leak its injected pool's connections."""
    client = redis.asyncio.Redis.from_url(redis_url)
    pool = client.connection_pool
    try:
        adapter = RedisStorageAdapter(client=client, pipelines=1)
        await adapter.load_state(P, "warm")
        await pause_server(raw, 200)
        in_flight = asyncio.create_task(adapter.load_state(P, U))
        await asyncio.sleep(0.05)
        await adapter.aclose()
        assert await asyncio.wait_for(in_flight, DOWN_BOUND_S) is None
        assert len(pool._in_use_connections) == 0  # released when the round trip finished
    finally:
        await client.aclose()


async def test_a_hook_that_raises_fails_its_own_call_and_leaves_the_connection_in_step(
    redis_url: str, raw: redis.asyncio.Redis
) -> None:
    """A failing hook runs after the send: its replies must still be read, or the next caller
    would read them as its own."""
    adapter = RedisStorageAdapter(redis_url=redis_url, pipelines=1)

    def boom() -> None:
        raise ValueError("hook")

    try:
        await raw.mset({user_state_key(P, "u0"): b"doc-0", user_state_key(P, "u1"): b"doc-1"})
        with pytest.raises(ValueError, match="hook"):
            await adapter.swap_state_with(P, "a", b"A", None, while_waiting=boom)
        assert await raw.get(user_state_key(P, "a")) == b"A"  # the write itself landed
        first = await adapter.load_state(P, "u0")
        assert first is not None and first.raw == b"doc-0"
        await pause_server(raw, 200)  # now a waiting batch, where one hook fails
        busy = asyncio.create_task(adapter.load_state(P, "u1"))
        await asyncio.sleep(0.05)
        bad = asyncio.create_task(adapter.swap_state_with(P, "b", b"B", None, while_waiting=boom))
        good = asyncio.create_task(adapter.load_state(P, "u0"))
        done = await asyncio.wait_for(asyncio.gather(busy, bad, good, return_exceptions=True), DOWN_BOUND_S)
    finally:
        await adapter.aclose()
    assert isinstance(done[1], ValueError)
    assert [s.raw for s in (done[0], done[2])] == [b"doc-1", b"doc-0"]


async def test_a_command_that_cannot_be_sent_fails_only_its_caller(
    redis_url: str, raw: redis.asyncio.Redis
) -> None:
    """Commands are packed by their caller: one that cannot be encoded never joins a batch."""
    adapter = RedisStorageAdapter(redis_url=redis_url, pipelines=1)
    try:
        await raw.set(user_state_key(P, "u0"), b"doc-0")
        await adapter.load_state(P, "warm")
        await pause_server(raw, 200)
        busy = asyncio.create_task(adapter.load_state(P, "u0"))
        await asyncio.sleep(0.05)
        others = [asyncio.create_task(adapter.load_state(P, "u0")) for _ in range(5)]
        with pytest.raises(UnicodeEncodeError):
            await adapter._pipeline.call(("GET", "bad\ud800key"))
        got = await asyncio.wait_for(asyncio.gather(busy, *others), DOWN_BOUND_S)
    finally:
        await adapter.aclose()
    assert [s.raw if s else None for s in got] == [b"doc-0"] * 6


async def test_a_large_waiting_batch_goes_out_in_bounded_writes(
    redis_url: str, raw: redis.asyncio.Redis, writes: Writes
) -> None:
    """No single write may grow with the backlog: it has to fit in the socket timeout."""
    from autoplay_obs.storage.adapters._autopipeline import MAX_BATCH_BYTES

    adapter = RedisStorageAdapter(redis_url=redis_url, pipelines=1)
    doc = b"x" * 200_000
    try:
        await adapter.load_state(P, "warm")
        writes.clear()
        await pause_server(raw, 200)
        calls = [asyncio.create_task(adapter.swap_state(P, f"u{i}", doc, None)) for i in range(30)]
        assert await asyncio.wait_for(asyncio.gather(*calls), 10) == [(True, None)] * 30
        sent = trips(writes, adapter)
    finally:
        await adapter.aclose()
    assert max(map(len, sent)) <= MAX_BATCH_BYTES + len(doc)
    assert len(sent) >= 30 * len(doc) // MAX_BATCH_BYTES
    assert [await raw.strlen(user_state_key(P, f"u{i}")) for i in range(30)] == [len(doc)] * 30


def test_an_adapter_outlives_an_event_loop_that_ended_mid_call(redis_url: str) -> None:
    """A worker job's loop can end with calls in flight; the next job's loop must not hang."""
    adapter = RedisStorageAdapter(redis_url=redis_url, pipelines=2)

    async def job(n: int) -> None:
        for i in range(40):  # fire and forget: still in flight when the loop ends
            asyncio.get_running_loop().create_task(adapter.swap_state(P, f"j{n}-{i}", b"v", None))
        await asyncio.sleep(0)

    async def check() -> tuple[bool, Any]:
        ok, _ = await asyncio.wait_for(adapter.swap_state(P, "after", b"fine", None), DOWN_BOUND_S)
        return ok, await asyncio.wait_for(adapter.load_state(P, "after"), DOWN_BOUND_S)

    for n in range(3):
        asyncio.run(job(n))
    ok, stored = asyncio.run(check())
    asyncio.run(adapter.aclose())
    assert ok and stored is not None and stored.raw == b"fine"


async def test_a_resent_set_nx_is_judged_by_the_bytes_stored(
    adapter: RedisStorageAdapter, raw: redis.asyncio.Redis
) -> None:
    """A nil from a SET NX that went out twice is ours when the stored snapshot is ours."""
    await raw.set(session_key(P, U, "mine"), b"ours")
    await raw.set(session_key(P, U, "theirs"), b"someone else's")
    judged = [
        await adapter._created(None, True, P, U, ("mine", b"ours")),
        await adapter._created(None, True, P, U, ("theirs", b"ours")),
        await adapter._created(None, False, P, U, ("mine", b"ours")),  # sent once: nil is nil
        await adapter._created(b"OK", True, P, U, ("new", b"ours")),
    ]
    assert judged == [True, False, False, True]
