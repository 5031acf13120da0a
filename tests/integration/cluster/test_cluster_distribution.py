"""100,000 users' state keys spread evenly over the three primaries.

The keys are the documented ones (no hash tags), so their slots are CRC16
hashes of the whole key; with the slots split evenly by ``redis-cli --cluster
create``, each primary should hold a third of the users. Nothing is written:
the slot of each key is computed with redis-py and mapped to its primary with
``CLUSTER SHARDS``, as the cluster itself reports it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import redis.asyncio
from redis.cluster import key_slot

from autoplay_obs.storage import user_state_key
from tests.integration.cluster.conftest import Cluster

USERS = 100_000
TOLERANCE = 0.05


def _as_dict(reply: Any) -> dict[str, Any]:
    """A RESP2 map reply (a flat list of keys and values) as a dict."""
    return dict(reply) if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))


async def _owners_from_shards(cluster: Cluster) -> dict[int, int]:
    """Slot -> port of its primary, from ``CLUSTER SHARDS`` (Redis 7)."""
    client = redis.asyncio.Redis(host="127.0.0.1", port=cluster.local.startup_port, decode_responses=True)
    try:
        shards = await client.execute_command("CLUSTER", "SHARDS")
    finally:
        await client.aclose()
    owners: dict[int, int] = {}
    for reply in shards:
        shard = _as_dict(reply)
        nodes = [_as_dict(n) for n in shard["nodes"]]
        primary = next(n for n in nodes if n["role"] == "master" and n["health"] == "online")
        slots = shard["slots"]
        for first, last in zip(slots[::2], slots[1::2], strict=True):
            owners.update(dict.fromkeys(range(int(first), int(last) + 1), int(primary["port"])))
    return owners


async def test_a_hundred_thousand_users_spread_within_five_percent_of_a_third(cluster: Cluster) -> None:
    owners = await _owners_from_shards(cluster)
    assert len(owners) == 16384 and owners == cluster.local.slot_owners()
    per_primary = Counter(owners[key_slot(user_state_key("prod", f"u{i}").encode())] for i in range(USERS))
    assert len(per_primary) == 3
    shares = sorted(count / USERS for count in per_primary.values())
    print(f"\nstate keys per primary: {sorted(per_primary.values())}, shares {[round(s, 4) for s in shares]}")
    for share in shares:
        assert abs(share - 1 / 3) <= TOLERANCE / 3, shares
