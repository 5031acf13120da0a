"""One contract suite for every readable primary (memory, Redis on fakeredis, Redis on a real server).

The ``backend`` fixture (tests/unit/conftest.py) runs each test once per adapter.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import msgspec
import pytest

from autoplay_obs.storage import AtomicStore, AutoplayStorageAdapter, Stored
from autoplay_obs.storage._protocol import without_revision

if TYPE_CHECKING:
    from conftest import Backend

P, U, S = "prod_1", "u_1", "sess_1"


def doc(**extra: object) -> bytes:
    return msgspec.json.encode({"_v": 1, "user_id": U, **extra})


def sha1(raw: bytes) -> str:
    return hashlib.sha1(raw).hexdigest()


async def test_adapter_satisfies_both_protocols(backend: Backend) -> None:
    assert isinstance(backend.adapter, AutoplayStorageAdapter)
    assert isinstance(backend.adapter, AtomicStore)


# -- write-once snapshots --------------------------------------------------------


async def test_create_snapshot_is_write_once(backend: Backend) -> None:
    a = backend.adapter
    first, second = b'{"_v":1,"n":1}', b'{"_v":1,"n":2}'
    assert await a.load_snapshot(P, U, S) is None
    assert await a.create_snapshot(P, U, S, first) is True
    assert await a.create_snapshot(P, U, S, second) is False
    assert await a.create_snapshot(P, U, S, first) is False
    assert await a.load_snapshot(P, U, S) == first


async def test_snapshots_are_per_session_user_and_product(backend: Backend) -> None:
    a = backend.adapter
    assert await a.create_snapshot(P, U, S, b'{"k":1}') is True
    assert await a.create_snapshot(P, U, "sess_2", b'{"k":2}') is True
    assert await a.create_snapshot(P, "u_2", S, b'{"k":3}') is True
    assert await a.create_snapshot("prod_2", U, S, b'{"k":4}') is True
    assert await a.load_snapshot(P, U, S) == b'{"k":1}'
    assert await a.load_snapshot(P, U, "sess_2") == b'{"k":2}'
    assert await a.load_snapshot(P, "u_2", S) == b'{"k":3}'
    assert await a.load_snapshot("prod_2", U, S) == b'{"k":4}'


async def test_separator_ids_do_not_collide_in_the_store(backend: Backend) -> None:
    a = backend.adapter
    assert await a.create_snapshot("a:b", "c", "s", b'{"k":1}') is True
    assert await a.create_snapshot("a", "b:c", "s", b'{"k":2}') is True
    ok, _ = await a.swap_state("a:b", "c", doc(n=1), None)
    assert ok
    assert await a.load_state("a", "b:c") is None
    assert await a.load_snapshot("a:b", "c", "s") == b'{"k":1}'
    assert await a.load_snapshot("a", "b:c", "s") == b'{"k":2}'


# -- compare-and-set on the user state -------------------------------------------


async def test_swap_with_expected_none_creates_an_absent_document(backend: Backend) -> None:
    a = backend.adapter
    raw = doc(n=1)
    assert await a.load_state(P, U) is None
    assert await a.swap_state(P, U, raw, None) == (True, None)
    stored = await a.load_state(P, U)
    assert stored == Stored(raw, sha1(raw))


async def test_swap_with_expected_none_fails_when_a_document_exists(backend: Backend) -> None:
    a = backend.adapter
    raw = doc(n=1)
    assert (await a.swap_state(P, U, raw, None))[0]
    ok, current = await a.swap_state(P, U, doc(n=2), None)
    assert ok is False
    assert current == Stored(raw, sha1(raw))
    assert (await a.load_state(P, U)).raw == raw


async def test_swap_with_the_current_token_replaces(backend: Backend) -> None:
    a = backend.adapter
    one, two, three = doc(n=1), doc(n=2), doc(n=3)
    await a.swap_state(P, U, one, None)
    assert await a.swap_state(P, U, two, sha1(one)) == (True, None)
    stored = await a.load_state(P, U)
    assert stored.raw == two
    assert await a.swap_state(P, U, three, stored.token) == (True, None)
    assert (await a.load_state(P, U)).raw == three


async def test_swap_with_a_stale_token_returns_the_current_document(backend: Backend) -> None:
    a = backend.adapter
    one, two = doc(n=1), doc(n=2)
    await a.swap_state(P, U, one, None)
    await a.swap_state(P, U, two, sha1(one))
    ok, current = await a.swap_state(P, U, doc(n=3), sha1(one))
    assert ok is False
    assert current == Stored(two, sha1(two))
    assert (await a.load_state(P, U)).raw == two


async def test_swap_with_a_token_when_absent_is_a_conflict(backend: Backend) -> None:
    a = backend.adapter
    ok, current = await a.swap_state(P, U, doc(n=1), sha1(b"something"))
    assert (ok, current) == (False, None)
    assert await a.load_state(P, U) is None


async def test_swap_token_matches_a_document_written_by_another_tool(backend: Backend) -> None:
    """Documents with no revision (written by the reference package) are still compared exactly."""
    a = backend.adapter
    foreign = b'{"user_id": "u_1",   "sessions": {"count": 2}}'
    assert (await a.swap_state(P, U, b'{"user_id":"u_1","sessions":{"count":2}}', None))[0]
    stored = await a.load_state(P, U)
    assert stored.token == sha1(stored.raw)
    assert (await a.swap_state(P, U, foreign, stored.token))[0]
    assert (await a.load_state(P, U)) == Stored(foreign, sha1(foreign))


async def test_two_adapters_on_one_store_see_each_others_writes(backend: Backend) -> None:
    a, b = backend.adapter, backend.open()
    one, two = doc(n=1), doc(n=2)
    assert (await a.swap_state(P, U, one, None))[0]
    ok, current = await b.swap_state(P, U, two, None)
    assert not ok and current.raw == one
    assert (await b.swap_state(P, U, two, current.token))[0]
    assert (await a.load_state(P, U)).raw == two
    assert await b.create_snapshot(P, U, S, b"{}") is True
    assert await a.create_snapshot(P, U, S, b'{"x":1}') is False


# -- the seed's dict-level methods -----------------------------------------------


async def test_dict_state_roundtrip_and_overwrite(backend: Backend) -> None:
    a = backend.adapter
    assert await a.get_user_state(P, U) is None
    await a.save_user_state(P, U, {"user_id": U, "metadata": {"role": "admin"}, "n": 1})
    assert await a.get_user_state(P, U) == {"user_id": U, "metadata": {"role": "admin"}, "n": 1}
    await a.save_user_state(P, U, {"user_id": U, "n": 2})
    assert await a.get_user_state(P, U) == {"user_id": U, "n": 2}


async def test_dict_snapshot_is_write_once(backend: Backend) -> None:
    a = backend.adapter
    assert await a.get_session_snapshot(P, U, S) is None
    await a.save_session_snapshot(P, U, S, {"session_id": S, "n": 1})
    await a.save_session_snapshot(P, U, S, {"session_id": S, "n": 2})
    assert await a.get_session_snapshot(P, U, S) == {"session_id": S, "n": 1}


async def test_dict_reads_return_copies(backend: Backend) -> None:
    a = backend.adapter
    await a.save_user_state(P, U, {"user_id": U, "metadata": {"tags": ["x"]}})
    await a.save_session_snapshot(P, U, S, {"session_id": S, "ids": ["a"]})
    got = await a.get_user_state(P, U)
    got["metadata"]["tags"].append("mutated")
    got["user_id"] = "other"
    snap = await a.get_session_snapshot(P, U, S)
    snap["ids"].append("mutated")
    assert await a.get_user_state(P, U) == {"user_id": U, "metadata": {"tags": ["x"]}}
    assert await a.get_session_snapshot(P, U, S) == {"session_id": S, "ids": ["a"]}


async def test_dict_writes_store_a_copy(backend: Backend) -> None:
    a = backend.adapter
    state = {"user_id": U, "metadata": {"tags": ["x"]}}
    snapshot = {"session_id": S, "ids": ["a"]}
    await a.save_user_state(P, U, state)
    await a.save_session_snapshot(P, U, S, snapshot)
    state["metadata"]["tags"].append("later")
    snapshot["ids"].append("later")
    assert await a.get_user_state(P, U) == {"user_id": U, "metadata": {"tags": ["x"]}}
    assert await a.get_session_snapshot(P, U, S) == {"session_id": S, "ids": ["a"]}


async def test_dict_and_atomic_views_agree(backend: Backend) -> None:
    a = backend.adapter
    await a.save_user_state(P, U, {"user_id": U, "n": 1})
    stored = await a.load_state(P, U)
    assert stored.raw.startswith(b'{"_rev":"') and len(stored.token) == 32  # a fresh revision
    assert without_revision(msgspec.json.decode(stored.raw)) == {"user_id": U, "n": 1}
    raw = doc(n=7)
    assert (await a.swap_state(P, U, raw, stored.token))[0]
    assert await a.get_user_state(P, U) == msgspec.json.decode(raw)
    await a.create_snapshot(P, U, S, b'{"session_id":"sess_1"}')
    assert await a.get_session_snapshot(P, U, S) == {"session_id": S}


async def test_unserialisable_dict_is_refused_and_nothing_is_stored(backend: Backend) -> None:
    from autoplay_obs.errors import AutoplayError

    a = backend.adapter
    with pytest.raises(AutoplayError):
        await a.save_user_state(P, U, {"user_id": U, "bad": object()})
    assert await a.get_user_state(P, U) is None
