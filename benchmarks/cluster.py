"""Session start+end pairs on one Redis and on a 3-primary + 3-replica Redis Cluster: what a pair costs.

The workload is ``benchmarks/lifecycle.py``'s "ours" variant: every user starts
from the ~30 KB long-time-user state with a stored onboarding snapshot
(``benchmarks/_data.py``), and U users run N sequential pairs each,
concurrently on one event loop. Per target it reports:

- pairs/s and latency quantiles (on two shared cores these say little about
  scale: the client and six servers compete for the same CPUs);
- client CPU per pair: this process's CPU time over the timed loop;
- server CPU per pair, per node: ``used_cpu_sys + used_cpu_user`` from each
  node's ``INFO cpu`` before and after, divided by the pairs of the whole
  run. Summed over the primaries it is what one pair costs the cluster, and
  the figure ``docs/scaling.md`` sizes shards from; replicas are shown apart
  (they apply the replication stream, on their own cores in production);
- commands and network bytes (client and replication traffic) per pair from
  each node's command statistics and ``INFO stats``;
- memory per user: ``MEMORY USAGE`` of the state and of the snapshots.

Both servers are started here (``_redis.local_redis``, ``_cluster.local_cluster``),
persistence off. Run from the repository root: ``python -m benchmarks.cluster``
(flags: --users, --pairs, --repeat, --warmup, --targets).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._cluster import local_cluster
from benchmarks._data import BenchData, build
from benchmarks._redis import local_redis
from benchmarks._variants import SUMMARY
from benchmarks._variants import session_key as _session_key
from benchmarks._variants import state_key as _state_key
from benchmarks.lifecycle import _drive, _seed

TARGETS = ("standalone", "cluster")
MEMORY_SAMPLE = 20  # users whose keys MEMORY USAGE measures


@dataclass(frozen=True)
class Node:
    port: int
    role: str  # "primary" / "replica"


@dataclass(frozen=True)
class NodeCost:
    """What a node spent: CPU seconds, commands run, bytes in and out (replication included)."""

    node: Node
    cpu_s: float
    commands: int
    net_in: int = 0
    net_out: int = 0

    def __sub__(self, earlier: NodeCost) -> NodeCost:
        return NodeCost(
            self.node,
            self.cpu_s - earlier.cpu_s,
            self.commands,  # counted since the reset before the timed loop
            self.net_in - earlier.net_in,
            self.net_out - earlier.net_out,
        )


@dataclass(frozen=True)
class Run:
    target: str
    users: int
    pairs: int
    failed: int
    """Timed pairs whose start or end was not persisted (each is still counted in ``pairs``)."""
    seconds: float
    client_cpu_s: float
    latencies: list[float]
    nodes: list[NodeCost]
    memory: tuple[float, float]
    """Mean MEMORY USAGE of a long-time user's state and of one of their snapshots."""
    fresh_memory: tuple[float, float]
    """The same for a user after their first session."""

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds

    def per_pair_ms(self, seconds: float) -> float:
        return seconds / self.pairs * 1000.0

    def primaries_cpu_s(self) -> float:
        return sum(c.cpu_s for c in self.nodes if c.node.role == "primary")

    def quantile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


# ------------------------------------------------------------------------------ targets


@dataclass
class Target:
    """Where the pairs go: how to reach it, its nodes, and how to open an adapter on it."""

    name: str
    url: str
    nodes: list[Node]
    cluster: bool

    def client(self) -> Any:
        if self.cluster:
            return RedisCluster.from_url(self.url)
        return redis.asyncio.Redis.from_url(self.url)

    def adapter(self) -> Any:
        """Our adapter, as a host builds it (``cluster=True`` on the cluster)."""
        from autoplay_obs.storage import RedisStorageAdapter

        return RedisStorageAdapter(redis_url=self.url, cluster=self.cluster)

    def idle_cpu(self, seconds: float = 1.0) -> dict[int, float]:
        """Per node, CPU seconds per second with no load (a cluster node's cron and gossip)."""
        before = self.node_stats()
        time.sleep(seconds)
        after = self.node_stats()
        return {port: (after[port] - before[port]).cpu_s / seconds for port in before}

    def node_stats(self) -> dict[int, NodeCost]:
        """Per node port: CPU seconds and bytes so far, commands since the last reset."""
        stats: dict[int, NodeCost] = {}
        for node in self.nodes:
            with redis.Redis(host="127.0.0.1", port=node.port) as client:
                cpu, net = client.info("cpu"), client.info("stats")
                commands = client.info("commandstats")
            ours = {k: v for k, v in commands.items() if not k.startswith(("cmdstat_info", "cmdstat_config"))}
            stats[node.port] = NodeCost(
                node,
                float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
                sum(int(v["calls"]) for v in ours.values()),
                int(net["total_net_input_bytes"]),  # replication included (Redis 7 counts it
                int(net["total_net_output_bytes"]),  # again apart, as total_net_repl_*_bytes)
            )
        return stats

    def reset_stats(self) -> None:
        for node in self.nodes:
            with redis.Redis(host="127.0.0.1", port=node.port) as client:
                client.config_resetstat()

    def flush(self) -> None:
        for node in self.nodes:
            if node.role == "primary":
                with redis.Redis(host="127.0.0.1", port=node.port) as client:
                    client.flushall()


@contextlib.contextmanager
def start_target(name: str) -> Iterator[Target]:
    if name == "standalone":
        with local_redis() as url:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            yield Target(name, url, [Node(port, "primary")], cluster=False)
        return
    with local_cluster() as cluster:
        nodes = [Node(n.port, n.role) for n in cluster.topology()]
        yield Target(name, f"redis://127.0.0.1:{cluster.startup_port}", nodes, cluster=True)


# ------------------------------------------------------------------------------ harness


class CountingRunner:
    """``lifecycle.py``'s "ours" pair, through the result-returning calls, counting what
    was not persisted: a run whose pairs failed must say so rather than look fast."""

    def __init__(self, adapter: Any, product_id: str, catalog: list[str]) -> None:
        from autoplay_obs import storage

        self._storage = storage
        self._adapter = adapter
        self._manager = storage.StorageManager([adapter])
        self._product_id = product_id
        self._catalog = catalog
        self.failed = 0

    async def pair(self, user_id: str, session_id: str) -> None:
        from autoplay_obs.user_adoption_state import SessionSnapshot

        started_at = time.time()
        start = await self._storage.start_session(self._product_id, user_id, session_id, self._manager)
        snapshot = SessionSnapshot.from_adoption_state(
            start.state,
            session_id=session_id,
            session_number=start.state.sessions_count + 1,
            started_at=started_at,
            catalog_workflow_ids=self._catalog,
        )
        end = await self._storage.end_session(
            self._product_id, user_id, snapshot, self._manager, summary=SUMMARY
        )
        self.failed += not (start.persisted and end.persisted)

    async def aclose(self) -> None:
        await self._adapter.aclose()


async def _memory(client: Any, product_id: str, user_ids: list[str]) -> tuple[float, float]:
    """Mean ``MEMORY USAGE`` of a user's state and of one of their snapshots, in bytes."""
    states: list[int] = []
    snapshots: list[int] = []
    for user_id in user_ids[:MEMORY_SAMPLE]:
        states.append(await client.memory_usage(_state_key(product_id, user_id), samples=0))
        key = _session_key(product_id, user_id, "sess_00000")
        snapshots.append(await client.memory_usage(key, samples=0))
    return statistics.fmean(states), statistics.fmean(snapshots)


async def run_one(target: Target, users: int, pairs: int, warmup: int, data: BenchData) -> Run:
    product_id = f"bench_{target.name}_u{users}"
    user_ids = [f"user_{k:03d}" for k in range(users)]
    warm_ids = [f"warm_{k:03d}" for k in range(users)]
    target.flush()
    client = target.client()
    try:
        await _seed(client, product_id, user_ids + warm_ids, data)
        catalog = [*data.snapshot.completed_workflow_ids, *data.snapshot.in_progress_workflow_ids]
        catalog += data.snapshot.untouched_workflow_ids
        runner = CountingRunner(target.adapter(), product_id, catalog)
        try:
            await _drive(runner, warm_ids, "warm", warmup)  # connections open, scripts cached
            target.reset_stats()
            before = target.node_stats()
            t0, c0 = time.perf_counter(), time.process_time()
            failed_before = runner.failed
            latencies = await _drive(runner, user_ids, "sess", pairs)
            seconds, client_cpu = time.perf_counter() - t0, time.process_time() - c0
            after = target.node_stats()
            failed = runner.failed - failed_before
            await _drive(runner, [f"new_{k:03d}" for k in range(MEMORY_SAMPLE)], "sess", 1)
        finally:
            await runner.aclose()
        memory = await _memory(client, product_id, user_ids)
        fresh = await _memory(client, product_id, [f"new_{k:03d}" for k in range(MEMORY_SAMPLE)])
    finally:
        await client.aclose()
    target.flush()
    costs = [after[n.port] - before[n.port] for n in target.nodes]
    return Run(
        target.name, users, users * pairs, failed, seconds, client_cpu, latencies, costs, memory, fresh
    )


def _print(runs: list[Run]) -> None:
    header = (
        f"{'target':<11} {'users':>5} {'pairs':>6} {'pairs/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'client CPU ms/pair':>18} {'primaries CPU ms/pair':>21} {'cmds/pair':>9} {'failed':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        commands = sum(c.commands for c in r.nodes if c.node.role == "primary")
        print(
            f"{r.target:<11} {r.users:>5} {r.pairs:>6} {r.pairs_per_s:>8.0f} {r.quantile_ms(0.5):>7.2f} "
            f"{r.quantile_ms(0.99):>7.2f} {r.per_pair_ms(r.client_cpu_s):>18.3f} "
            f"{r.per_pair_ms(r.primaries_cpu_s()):>21.3f} {commands / r.pairs:>9.2f} {r.failed:>6}"
        )
    print()
    print("per node (CPU, commands and bytes per pair of the whole run)")
    for r in runs:
        for c in sorted(r.nodes, key=lambda c: (c.node.role, c.node.port)):
            print(
                f"  {r.target:<11} users={r.users:<3} {c.node.role:<8} :{c.node.port:<5} "
                f"CPU {r.per_pair_ms(c.cpu_s):.3f} ms/pair  cmds {c.commands / r.pairs:.2f}/pair  "
                f"in {c.net_in / r.pairs / 1024:.1f} KiB/pair  out {c.net_out / r.pairs / 1024:.1f} KiB/pair"
            )
    print()
    print(f"memory (MEMORY USAGE, mean of {MEMORY_SAMPLE} users): state + one snapshot")
    for r in runs:
        (state, snapshot), (fresh_state, fresh_snapshot) = r.memory, r.fresh_memory
        print(
            f"  {r.target:<11} users={r.users:<3} long-time user {state / 1024:.1f} + "
            f"{snapshot / 1024:.1f} KiB; after a first session {fresh_state / 1024:.1f} + "
            f"{fresh_snapshot / 1024:.1f} KiB"
        )


async def _main(args: argparse.Namespace) -> None:
    data = build()
    print(
        f"state {len(data.state_bytes) / 1024:.1f} KiB, snapshot {len(data.snapshot_bytes) / 1024:.1f} KiB; "
        f"{args.pairs} pairs per user, median of {args.repeat} run(s) by pairs/s"
    )
    runs: list[Run] = []
    for name in args.targets:
        with start_target(name) as target:
            idle = target.idle_cpu()
            print(
                f"{name}: idle CPU per node "
                + ", ".join(f":{p} {v * 1000:.1f} ms/s" for p, v in idle.items())
            )
            for users in args.users:
                cell = [
                    await run_one(target, users, args.pairs, args.warmup, data) for _ in range(args.repeat)
                ]
                runs.append(sorted(cell, key=lambda r: r.pairs_per_s)[len(cell) // 2])
    print()
    _print(runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=100, help="sequential pairs per user")
    parser.add_argument("--users", type=int, nargs="+", default=[32], help="concurrent users")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    parser.add_argument("--warmup", type=int, default=5, help="untimed pairs per user first")
    asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
