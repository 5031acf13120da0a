"""Listing and erasing a user on a real Redis Cluster: the scans go to every primary.

Why: on a cluster a plain ``SCAN`` reaches one node, while a user's keys hash
to slots all over the cluster; only a cluster-wide scan finds them all.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis.asyncio.cluster

from autoplay_obs.errors import UserErasedError
from autoplay_obs.storage import RedisStorageAdapter, StorageManager, end_session
from autoplay_obs.user_adoption_state import SessionSnapshot
from tests.integration.test_redis_cluster import cluster, cluster_node  # noqa: F401 -- fixtures

pytestmark = pytest.mark.redis_server

P = "shop"
USERS = ("u1", "u10", "u1*", "u[1]", "u1:session:x")


async def test_a_cluster_lists_every_session_and_erases_only_its_user(
    cluster: redis.asyncio.cluster.RedisCluster,  # noqa: F811
    make_snapshot: Callable[..., SessionSnapshot],
) -> None:
    async with StorageManager([RedisStorageAdapter(client=cluster)]) as manager:
        for user in USERS:
            for n in range(1, (60 if user == "u1" else 2) + 1):
                snapshot = make_snapshot(f"s{n}", number=n, user_id=user)
                assert (await end_session(P, user, snapshot, manager, summary="x")).persisted
        listed = await manager.list_sessions(P, "u1")
        assert [r.session_id for r in listed] == [f"s{n}" for n in range(1, 61)]

        receipt = await manager.delete_user(P, "u1")
        assert (receipt.keys_found, receipt.keys_deleted) == (61, 61)
        assert await manager.list_sessions(P, "u1") == []
        for user in USERS[1:]:
            assert [r.session_id for r in await manager.list_sessions(P, user)] == ["s1", "s2"]
        late = await end_session(P, "u1", make_snapshot("s61", number=61, user_id="u1"), manager, summary="x")
        assert isinstance(late.error, UserErasedError)
        assert await manager.list_sessions(P, "u1") == []
        report = await manager.audit(P)
        assert (report.findings, report.users_checked, report.erased_users) == ((), 4, 1)
