"""Invariants 1, 2 and 4 on the 3+3 cluster, where a user's state and snapshots live on different nodes.

The adopted suites (test_cluster_contract.py) already run the single-server
cases here; these add what only a cluster shows: managers on separate
cluster clients racing one user, retries whose snapshot lands on another
node than the state, and hostile ids checked against every primary's keys.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import Callable

from autoplay_obs.storage import StorageManager, end_session, session_key, start_session, user_state_key
from autoplay_obs.user_adoption_state import SessionSnapshot, UserAdoptionState, decode_session_snapshot
from tests.integration.cluster.conftest import Cluster

P, U = "prod_1", "u_1"
T0 = 1_700_000_000.0
MakeSnapshot = Callable[..., SessionSnapshot]


async def test_concurrent_ends_for_one_user_from_three_managers_all_count(
    cluster: Cluster, make_snapshot: MakeSnapshot
) -> None:
    """Two adapters built with ``cluster=True``, one on a client the host built (``client=``)."""
    adapters = [cluster.adapter(), cluster.adapter(), cluster.adapter_on(cluster.client())]
    managers = [StorageManager([a]) for a in adapters]
    n = 30
    snapshots = [make_snapshot(f"s{i:02d}", number=i + 1, captured_at=T0 + i) for i in range(n)]
    order = list(range(n))
    random.Random(3).shuffle(order)
    results = await asyncio.gather(*(end_session(P, U, snapshots[i], managers[i % 3]) for i in order))
    assert all(r.persisted and r.error is None and not r.duplicate for r in results)

    doc = await managers[0].get_user_state(P, U)
    assert doc is not None and doc["sessions"]["count"] == n
    assert [e["session_id"] for e in doc["sessions"]["index"]] == [f"s{i:02d}" for i in range(n)]
    raw = cluster.client()
    for snap in snapshots:
        stored = await raw.get(session_key(P, U, snap.session_id))
        assert stored is not None and decode_session_snapshot(stored).value == snap
    homes = {cluster.primary_for(session_key(P, U, s.session_id)).port for s in snapshots}
    assert len(homes) == 3  # the snapshots really are spread over the primaries


async def test_retries_from_three_managers_count_once_and_keep_the_first_snapshot(
    cluster: Cluster, make_snapshot: MakeSnapshot
) -> None:
    managers = [StorageManager([cluster.adapter()]) for _ in range(3)]
    assert (await start_session(P, U, "s1", managers[0])).persisted
    first = make_snapshot("s1", captured_at=T0)
    done = await end_session(P, U, first, managers[0], summary="first")
    assert done.persisted and done.snapshot_created is True
    frozen = await cluster.client().get(session_key(P, U, "s1"))

    state = UserAdoptionState(user_id=U)
    state.set_mastery(rating=9, level="power_user")
    retries = [make_snapshot("s1", captured_at=T0 + i, state=state) for i in range(1, 10)]
    results = await asyncio.gather(
        *(end_session(P, U, s, managers[i % 3], summary=f"retry {i}") for i, s in enumerate(retries))
    )
    assert all(r.persisted and r.duplicate and r.snapshot_created is False for r in results)
    assert frozen is not None and decode_session_snapshot(frozen).value == first
    assert await cluster.client().get(session_key(P, U, "s1")) == frozen  # not one byte changed
    doc = await managers[2].get_user_state(P, U)
    assert doc is not None
    assert doc["sessions"]["count"] == 1
    assert [e["session_id"] for e in doc["sessions"]["index"]] == ["s1"]
    assert doc["onboarding"]["summary"] == "first" and doc["mastery"]["rating"] == 0


HOSTILE = ["a:b", "a", "{a}", "{a}:b", "a%3Ab", "a*", "*", "a b", "ü", "日本", "a\u00a0b", "{}"]


async def test_hostile_ids_never_share_a_key_on_any_primary(
    cluster: Cluster, make_snapshot: MakeSnapshot
) -> None:
    storage = StorageManager([cluster.adapter()])
    products, users, sessions = ["p:1", "p", "{p}"], HOSTILE, ["s:1", "s*", "{s}"]
    triples = list(itertools.product(products, users, sessions))

    async def run(product: str, user: str, session: str) -> None:
        assert (await start_session(product, user, session, storage)).persisted
        snap = make_snapshot(session, user_id=user)
        end = await end_session(product, user, snap, storage, summary=f"{product}|{user}|{session}")
        assert end.persisted and end.snapshot_created is True

    await asyncio.gather(*(run(*t) for t in triples))

    keys = await cluster.keys()
    assert len(keys) == len(products) * len(users) * (1 + len(sessions))
    assert not any(c in key for key in keys for c in (b"{", b"}", b" "))  # no id picks its own slot
    raw = cluster.client()
    for product, user in itertools.product(products, users):
        doc = json.loads(await raw.get(user_state_key(product, user)))
        assert doc["user_id"] == user and doc["sessions"]["count"] == len(sessions)
        assert sorted(e["session_id"] for e in doc["sessions"]["index"]) == sorted(sessions)
        for session in sessions:
            snap = json.loads(await raw.get(session_key(product, user, session)))
            assert (snap["user_id"], snap["session_id"]) == (user, session)
