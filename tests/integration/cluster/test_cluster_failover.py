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
from collections import Counter
from dataclasses import dataclass
from typing import Any

from redis.cluster import key_slot

from autoplay_obs.errors import StorageUnavailableError
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


@dataclass
class Outcome:
    """What a failover run told the host, and what the settled cluster holds."""

    load: Load
    probe_acknowledged: bool
    lost: dict[str, list[str]]
    owners: dict[int, int]
    victim: int
    elsewhere: list[str]
    reader: StorageManager

    def lost_count(self) -> int:
        return sum(map(len, self.lost.values()))

    def report(self, setting: str) -> str:
        ledger = self.load.ledger
        retried = sum((u, s) in ledger.duplicates for u, ss in self.lost.items() for s in ss)
        return (
            f"\nfailover, {setting}: {self.lost_count()} acknowledged session(s) lost "
            f"({retried} of them acknowledged as duplicates of an earlier end; missing parts "
            f"{dict(Counter(ledger.missing.values()))}) of "
            f"{sum(map(len, ledger.acknowledged.values()))}; probe acknowledged: {self.probe_acknowledged}; "
            f"{ledger.calls} calls, {ledger.failed_calls} failed and retried, slowest "
            f"{ledger.slowest_s:.2f}s; errors {ledger.errors}"
        )


async def _run(cluster: Cluster, **adapter_options: Any) -> Outcome:
    """Load on 16 users; stall the victim's replica, pile up, probe, kill, promote; settle."""
    owners = cluster.local.slot_owners()
    victim = next(n for n in cluster.local.primaries() if n.port == owners[0])
    replica = cluster.local.replica_of(victim)
    on_victim, elsewhere, probe_user = _users(owners, victim.port)
    storages = [StorageManager([cluster.adapter(**adapter_options)]) for _ in range(4)]
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
        # The dead primary comes back, as an operator would bring it, and rejoins as the
        # promoted one's replica: until then its shard has no replica to wait for.
        await asyncio.to_thread(cluster.local.node(victim.port).start)
        await asyncio.to_thread(cluster.local.wait_healthy, 30.0)
        await asyncio.sleep(0.5)
        load.stop.set()
        await running
    finally:
        load.stop.set()
        await asyncio.gather(running, return_exceptions=True)
    reader = StorageManager([cluster.adapter()])
    lost = await load.lost(reader)
    if probe_acknowledged and await reader.get_user_state(P, probe_user) is None:
        lost[probe_user] = ["probe"]
    return Outcome(load, probe_acknowledged, lost, owners, victim.port, elsewhere, reader)


async def test_without_wait_replicas_only_writes_to_the_dead_primary_are_lost(cluster: Cluster) -> None:
    outcome = await _run(cluster)
    print(outcome.report("wait_replicas=0"))
    # Acknowledged, then lost with the primary: the window asynchronous replication leaves open.
    assert outcome.probe_acknowledged is True
    assert outcome.lost.get(_probe_user(outcome)) == ["probe"]
    # Nothing else is lost: every missing session had its state or snapshot on the dead primary.
    for user, sessions in outcome.lost.items():
        for session_id in sessions:
            homes = {
                _owner(outcome, user_state_key(P, user)),
                _owner(outcome, session_key(P, user, session_id)),
            }
            assert outcome.victim in homes, (user, session_id)
    for user in outcome.elsewhere:
        if user not in outcome.lost:
            doc = await outcome.reader.get_user_state(P, user)
            assert doc is not None and doc["sessions"]["count"] == outcome.load.ledger.pairs(user)


async def test_with_wait_replicas_no_acknowledged_session_is_lost(cluster: Cluster) -> None:
    outcome = await _run(cluster, wait_replicas=1, wait_timeout=0.5)
    print(outcome.report("wait_replicas=1"))
    # The stalled replica never confirmed the probe's writes: reported as not persisted.
    assert outcome.probe_acknowledged is False
    assert outcome.lost == {}
    for user, sessions in outcome.load.ledger.acknowledged.items():
        doc = await outcome.reader.get_user_state(P, user)
        assert doc is not None and doc["sessions"]["count"] == len(sessions), user


def _probe_user(outcome: Outcome) -> str:
    return _users(outcome.owners, outcome.victim)[2]


def _owner(outcome: Outcome, key: str) -> int:
    return outcome.owners[_slot(key)]


async def test_with_wait_replicas_a_write_the_stalled_replica_lacks_is_never_acknowledged(
    cluster: Cluster,
) -> None:
    """Fresh writes to a primary whose replica is stalled: each must be refused, none acknowledged."""
    owners = cluster.local.slot_owners()
    victim = next(n for n in cluster.local.primaries() if n.port == owners[0])
    replica = cluster.local.replica_of(victim)
    adapter = cluster.adapter(wait_replicas=1, wait_timeout=0.3)
    candidates = (f"w{i}" for i in range(100_000))
    users = [u for u in candidates if owners[_slot(user_state_key(P, u))] == victim.port][: 32 * 4]
    for user in users[:32]:  # connections to the victim that wrote and were replicated
        assert await adapter.create_snapshot(P, user, "warm", b"{}")

    async def acknowledged(user: str) -> bool:
        try:
            await adapter.swap_state(P, user, b'{"_v":1,"user_id":"' + user.encode() + b'"}', None)
        except StorageUnavailableError:
            return False
        return True

    cluster.local.node(replica.port).stop()
    try:
        await asyncio.to_thread(cluster.pile_up_replication, victim)
        rounds = [await asyncio.gather(*map(acknowledged, users[32 * r : 32 * (r + 1)])) for r in range(3)]
        sequential = [await acknowledged(u) for u in users[96:106]]
    finally:
        cluster.local.node(replica.port).cont()
    counts = [sum(r) for r in rounds] + [sum(sequential)]
    print(f"\nwait_replicas=1, replica stalled: writes acknowledged per round {counts} (of 32, 32, 32, 10)")
    assert counts == [0, 0, 0, 0]  # none of these writes reached the replica
