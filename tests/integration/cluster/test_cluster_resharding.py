"""A live slot migration under load: ``redis-cli --cluster reshard`` moves the slots holding
16 users' states while each of them runs start+end pairs.

During the move the client meets ``ASK`` (a key already moved) and ``MOVED``
(a slot handed over) replies. Every call must return within its bound, no
acknowledged session may be lost, and once each pair has been retried to
success every user's count is exact. Afterwards the slots are moved back, so
later tests see three balanced primaries again.
"""

from __future__ import annotations

import asyncio

from redis.cluster import key_slot

from autoplay_obs.storage import StorageManager, user_state_key
from tests.integration.cluster._load import Load
from tests.integration.cluster.conftest import Cluster

P = "prod_reshard"
USERS = 16
MOVED_SLOTS = 400


def _users_in_slots(below: int, count: int) -> list[str]:
    """``count`` user ids whose state keys hash to slots ``0 .. below-1``."""
    found = [f"r{i}" for i in range(200_000) if key_slot(user_state_key(P, f"r{i}").encode()) < below]
    return found[:count]


async def test_resharding_the_users_slots_under_load_loses_nothing_and_counts_exactly(
    cluster: Cluster,
) -> None:
    before = cluster.local.slot_owners()
    source = next(n for n in cluster.local.primaries() if n.port == before[0])
    target = next(n for n in cluster.local.primaries() if n.port != source.port)
    users = _users_in_slots(MOVED_SLOTS, USERS)
    slots = [key_slot(user_state_key(P, u).encode()) for u in users]
    assert len(users) == USERS and all(before[slot] == source.port for slot in slots)

    load = Load([StorageManager([cluster.adapter()]) for _ in range(4)], P, users, min_pairs=3)
    running = load.start()
    try:
        await load.warmed_up(running)
        await cluster.reshard(source, target, MOVED_SLOTS)
        during = load.ledger.calls
        load.stop.set()
        await running
    finally:
        load.stop.set()
        await asyncio.gather(running, return_exceptions=True)
        moved = {**before, **dict.fromkeys(range(MOVED_SLOTS), target.port)}
        moved_all = await cluster.wait_for_owners(moved)
        await cluster.reshard(target, source, MOVED_SLOTS)
    assert await cluster.wait_for_owners(before), "the slots did not move back"  # for the other tests
    assert moved_all, "the reshard did not move the users' slots"

    # The migration really moved these users' states, and it happened under load.
    assert load.ledger.calls > during > USERS * 3
    print(f"\nresharding: {load.ledger.calls} calls, {load.ledger.failed_calls} failed and retried, "
          f"slowest {load.ledger.slowest_s:.2f}s; errors {load.ledger.errors}")  # fmt: skip

    reader = StorageManager([cluster.adapter()])
    assert await load.lost(reader) == {}
    for user in users:
        doc = await reader.get_user_state(P, user)
        assert doc is not None
        assert doc["sessions"]["count"] == load.ledger.pairs(user)
        assert [e["session_id"] for e in doc["sessions"]["index"]] == load.ledger.acknowledged[user]
