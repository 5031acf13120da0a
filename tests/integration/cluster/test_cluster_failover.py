"""A primary SIGKILLed under load, its replica promoted: calls stay bounded and outcomes are honest.

Redis replicates asynchronously: a primary acknowledges a write before any
replica has it. On loopback the replica is usually a microsecond behind, so
to make the window visible the test stalls the replica first (SIGSTOP) and
writes filler until the replication stream backs up into the primary's own
buffer; then a probe session is ended, load runs on, the primary is killed
and the replica resumed and promoted (by the cluster's own vote, or
``CLUSTER FAILOVER TAKEOVER`` if that does not come).

What the host was told is then compared with what is stored: anything
acknowledged as persisted and missing must have been written to the dead
primary (the asynchronous-replication window), never anywhere else, and every
user whose keys all live elsewhere counts exactly.
"""

from __future__ import annotations

import asyncio
import time

from redis.cluster import key_slot

from autoplay_obs.storage import StorageManager, end_session, session_key, start_session, user_state_key
from autoplay_obs.user_adoption_state import SessionSnapshot
from benchmarks._cluster import NodeInfo
from tests.integration.cluster._load import Load
from tests.integration.cluster.conftest import Cluster

P = "prod_failover"
PER_SIDE = 8
BOUND_S = 10.0


def _slot(key: str) -> int:
    return key_slot(key.encode())


def _users(owners: dict[int, int], victim: int) -> tuple[list[str], list[str], str]:
    """Users whose states live on the victim, users whose states live elsewhere, and a probe."""
    on, off = [], []
    for i in range(10_000):
        user = f"f{i}"
        (on if owners[_slot(user_state_key(P, user))] == victim else off).append(user)
    return on[:PER_SIDE], off[:PER_SIDE], on[PER_SIDE]


async def _probe(storage: StorageManager, user: str) -> bool:
    """One session for ``user``, once, no retry: whether its end was acknowledged as persisted."""
    start = await asyncio.wait_for(start_session(P, user, "probe", storage), BOUND_S)
    snapshot = SessionSnapshot.from_adoption_state(
        start.state, session_id="probe", session_number=1, started_at=time.time() - 60,
        catalog_workflow_ids=["create_project"],
    )  # fmt: skip
    end = await asyncio.wait_for(end_session(P, user, snapshot, storage), BOUND_S)
    return bool(start.persisted and end.persisted)


async def _fail_over(cluster: Cluster, victim: NodeInfo, replica: NodeInfo) -> None:
    cluster.local.node(victim.port).kill()
    cluster.local.node(replica.port).cont()
    if not await cluster.wait_until_primary(replica.port, timeout=10.0):
        await cluster.takeover(replica.port)
        assert await cluster.wait_until_primary(replica.port, timeout=10.0), "the replica was never promoted"


async def test_failover_with_a_stalled_replica_loses_only_writes_to_the_dead_primary(
    cluster: Cluster,
) -> None:
    owners = cluster.local.slot_owners()
    victim = next(n for n in cluster.local.primaries() if n.port == owners[0])
    replica = cluster.local.replica_of(victim)
    on_victim, elsewhere, probe_user = _users(owners, victim.port)
    storages = [StorageManager([cluster.adapter()]) for _ in range(4)]
    load = Load(storages, P, on_victim + elsewhere, bound_s=BOUND_S, pause_s=0.05)

    running = load.start()
    try:
        await load.warmed_up(running)
        cluster.local.node(replica.port).stop()
        await asyncio.to_thread(cluster.pile_up_replication, victim)
        probe_acknowledged = await _probe(storages[0], probe_user)
        await asyncio.sleep(0.5)  # acknowledged writes keep piling up behind the stalled replica
        await _fail_over(cluster, victim, replica)
        await asyncio.sleep(1.0)  # and the users carry on against the promoted replica
        load.stop.set()
        await running
    finally:
        load.stop.set()
        await asyncio.gather(running, return_exceptions=True)

    reader = StorageManager([cluster.adapter()])
    lost = await load.lost(reader)
    probe_doc = await reader.get_user_state(P, probe_user)
    lost_count = sum(map(len, lost.values()))
    print(
        f"\nfailover without wait_replicas: {lost_count} acknowledged session(s) lost of "
        f"{sum(map(len, load.ledger.acknowledged.values()))}, plus the probe; {load.ledger.calls} calls, "
        f"{load.ledger.failed_calls} failed and retried, slowest {load.ledger.slowest_s:.2f}s; "
        f"errors {load.ledger.errors}"
    )
    # Acknowledged, then lost with the primary: the window asynchronous replication leaves open.
    assert probe_acknowledged is True
    assert probe_doc is None
    # Nothing else is lost: every missing session had its state or snapshot on the dead primary.
    for user, sessions in lost.items():
        for session_id in sessions:
            homes = {owners[_slot(user_state_key(P, user))], owners[_slot(session_key(P, user, session_id))]}
            assert victim.port in homes, (user, session_id)
    for user in elsewhere:
        if user not in lost:
            doc = await reader.get_user_state(P, user)
            assert doc is not None and doc["sessions"]["count"] == load.ledger.pairs(user)
