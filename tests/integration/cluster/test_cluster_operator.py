"""Listing, erasing and auditing a user on the real 3+3 cluster: the scans reach every primary.

Why: a user's keys hash to slots on all three primaries, and a plain ``SCAN``
asks one node; only a scan of every primary finds them all. Neighbour ids
(a prefix, glob characters, the separator) must keep every key.
"""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio.cluster import RedisCluster

from autoplay_obs.errors import UserErasedError
from autoplay_obs.storage import RedisStorageAdapter, StorageManager, end_session, user_state_key
from autoplay_obs.user_adoption_state import SessionSnapshot

P = "shop"
USERS = ("u1", "u10", "u1*", "u[1]", "u1:session:x")


async def test_a_cluster_lists_every_session_and_erases_only_its_user(
    adapter: RedisStorageAdapter, raw: RedisCluster, make_snapshot: Callable[..., SessionSnapshot]
) -> None:
    async with StorageManager([adapter]) as manager:
        for user in USERS:
            for n in range(1, (60 if user == "u1" else 2) + 1):
                snapshot = make_snapshot(f"s{n}", number=n, user_id=user)
                assert (await end_session(P, user, snapshot, manager, summary="x")).persisted
        keys_before = set(await raw.keys("*"))
        owners = {raw.get_node_from_key(k.decode()).name for k in keys_before}
        assert len(owners) == 3  # the user's keys really are spread over every primary
        listed = await manager.list_sessions(P, "u1")
        assert [r.session_id for r in listed] == [f"s{n}" for n in range(1, 61)]

        receipt = await manager.delete_user(P, "u1")
        assert (receipt.keys_found, receipt.keys_deleted) == (61, 61)
        state_key = user_state_key(P, "u1").encode()
        u1_keys = {k for k in keys_before if k.split(b":")[3] == b"u1"}
        assert set(await raw.keys("*")) == (keys_before - u1_keys) | {state_key}
        late = await end_session(P, "u1", make_snapshot("s61", number=61, user_id="u1"), manager, summary="x")
        assert isinstance(late.error, UserErasedError)
        assert await manager.list_sessions(P, "u1") == []
        report = await manager.audit(P)
        assert (report.findings, report.users_checked, report.erased_users) == ((), 4, 1)
