"""The operator tools' building blocks, on the in-memory primary and fakeredis.

Why: the scan pattern and the key parser carry tenant isolation for every
scan, the tombstone must be refused by both primaries' compare-and-set and
read, and the trace-id stamp must never disturb the revision a
compare-and-set reads.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable

import fakeredis
import pytest
from opentelemetry.sdk.trace import TracerProvider

from autoplay_obs.errors import ConfigurationError, UserErasedError
from autoplay_obs.storage import (
    InMemoryStorageAdapter,
    RedisStorageAdapter,
    StorageManager,
    end_session,
    session_key,
    user_state_key,
)
from autoplay_obs.storage._doc_trace import stamped, trace_id_of
from autoplay_obs.storage._operator_protocol import KeyRef, OperatorStore, parse_key, scan_pattern
from autoplay_obs.storage._protocol import headed, token_of
from autoplay_obs.storage._tombstone import erased_at, is_tombstone, tombstone
from autoplay_obs.storage.adapters._redis_ops import snapshot_expiry
from autoplay_obs.user_adoption_state import SessionSnapshot, UserAdoptionState, encode

P = "prod"
MakeSnapshot = Callable[..., SessionSnapshot]
USERS = ("u1", "u10", "u1*", "u[1]", "u1:session:x", "u?", "u\\1", "ü 1")


def _redis_glob(pattern: str, key: str) -> bool:
    """Redis's MATCH semantics for what our patterns use: backslash escapes, * and ? wild."""
    translated = ""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 1
            translated += (
                "[" + pattern[i] + "]" if pattern[i] not in "[]" else ("[[]" if pattern[i] == "[" else "[]]")
            )
        else:
            translated += ch
        i += 1
    return fnmatch.fnmatchcase(key, translated)


@pytest.mark.parametrize("user", USERS)
def test_a_users_pattern_matches_its_own_keys_and_no_neighbours(user: str) -> None:
    pattern = scan_pattern(P, user)
    for other in USERS:
        keys = [user_state_key(P, other), session_key(P, other, "s1"), session_key(P, other, "a:b")]
        assert all(_redis_glob(pattern, k) == (other == user) for k in keys), (user, other)


@pytest.mark.parametrize("user", USERS)
def test_keys_parse_back_to_their_ids(user: str) -> None:
    assert parse_key(user_state_key(P, user)) == KeyRef(P, user, None)
    assert parse_key(session_key(P, user, "s:1%")) == KeyRef(P, user, "s:1%")
    assert parse_key(b"autoplay:user:p:u:other") is None
    assert parse_key("somebody:else") is None


async def test_memory_tombstone_refuses_reads_and_writes_and_only_this_users_keys_are_listed(
    make_snapshot: MakeSnapshot,
) -> None:
    adapter = InMemoryStorageAdapter()
    assert isinstance(adapter, OperatorStore)
    async with StorageManager([adapter]) as manager:
        for user in USERS:
            await end_session(P, user, make_snapshot("s1", user_id=user), manager, summary="x")
        assert {r async for r in adapter.scan_keys(P, "u1")} == {KeyRef(P, "u1", None), KeyRef(P, "u1", "s1")}
        assert len([r async for r in adapter.scan_keys(P)]) == 2 * len(USERS)

        receipt = await manager.delete_user(P, "u1")
        assert (receipt.keys_found, receipt.keys_deleted, receipt.outbox_purged) == (2, 2, 0)
        with pytest.raises(UserErasedError):
            await adapter.load_state(P, "u1")
        with pytest.raises(UserErasedError):
            await adapter.swap_state(P, "u1", b'{"user_id":"u1"}', None)
        again = await end_session(P, "u1", make_snapshot("s2", number=2, user_id="u1"), manager, summary="x")
        assert isinstance(again.error, UserErasedError)
        assert [r async for r in adapter.scan_keys(P, "u1")] == [KeyRef(P, "u1", None)]
        assert len([r async for r in adapter.scan_keys(P)]) == 2 * len(USERS) - 1


async def test_the_redis_script_refuses_to_write_over_a_tombstone() -> None:
    adapter = RedisStorageAdapter(client=fakeredis.aioredis.FakeRedis())
    stone = tombstone(now=1234.5)
    await adapter.put_tombstone(P, "u1", stone, 60)
    with pytest.raises(UserErasedError) as caught:
        await adapter.load_state(P, "u1")
    assert caught.value.erased_at == 1234.5
    for expected in (None, token_of(stone)):  # neither a blind create nor a matching token passes
        with pytest.raises(UserErasedError):
            await adapter.swap_state(P, "u1", b'{"user_id":"u1"}', expected)
    await adapter.aclose()


def test_tombstones_are_told_from_their_head() -> None:
    stone = tombstone(now=5.0)
    assert is_tombstone(stone) and erased_at(stone) == 5.0
    assert json.loads(stone)["_tombstone"] is True
    state = UserAdoptionState(user_id="u1", metadata={"_tombstone": True})
    state.revision = "0" * 32
    assert not is_tombstone(encode(state))  # a field elsewhere in a state is not the mark
    assert not is_tombstone(b'{"_tombstone":true,"_rev":"' + b"0" * 32 + b'"}')


def test_a_stamp_sits_after_the_revision_and_keeps_the_token() -> None:
    raw = headed(b'{"user_id":"u1"}')
    assert stamped(raw) == raw  # no span recording: unchanged
    with TracerProvider().get_tracer("t").start_as_current_span("x") as span:
        traced = stamped(raw)
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert token_of(traced) == token_of(raw)
    assert trace_id_of(traced) == trace_id == json.loads(traced)["_trace_id"]
    assert trace_id_of(raw) is None


def test_the_onboarding_snapshot_is_pinned(make_snapshot: MakeSnapshot) -> None:
    first, later = encode(make_snapshot("s1", number=1)), encode(make_snapshot("s2", number=2))
    assert (snapshot_expiry(first, 600, None), snapshot_expiry(later, 600, None)) == (None, 600)
    assert snapshot_expiry(first, 600, 600) == 600  # the deprecated ttl_s: everything alike
    assert snapshot_expiry(b"not json", 600, None) == 600


@pytest.mark.parametrize(
    "kwargs",
    [{"snapshot_ttl": 0}, {"state_ttl": -1}, {"ttl_s": 60, "state_ttl": 60}],
    ids=["zero-snapshot-ttl", "negative-state-ttl", "ttl_s-and-state_ttl"],
)
def test_bad_lifetimes_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigurationError):
        RedisStorageAdapter(client=fakeredis.aioredis.FakeRedis(), **kwargs)  # type: ignore[arg-type]


async def test_a_primary_without_the_capability_is_refused_by_the_operator_tools() -> None:
    class DictOnly:
        async def save_user_state(self, *a: object) -> None:
            return None

        async def get_user_state(self, *a: object) -> None:
            return None

        async def save_session_snapshot(self, *a: object) -> None:
            return None

        async def get_session_snapshot(self, *a: object) -> None:
            return None

    manager = StorageManager([DictOnly()])
    with pytest.raises(ConfigurationError, match="operator tools"):
        await manager.delete_user(P, "u1")
    with pytest.raises(ConfigurationError):
        await manager.audit(P)
