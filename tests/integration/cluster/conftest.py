"""A real 3-primary + 3-replica Redis Cluster for the tests in this directory.

Decisions:
- One cluster per test session (``redis_cluster``), started from the
  ``redis-server`` and ``redis-cli`` on PATH by ``benchmarks/_cluster.py`` (the
  benchmark uses the same starter). A missing binary skips locally and fails
  when ``AUTOPLAY_REQUIRE_SERVERS=1``, as ``find_server_binary`` does for the
  standalone server; every test here is marked ``redis_server`` automatically,
  so CI's skip enforcement covers them.
- The function-scoped ``cluster`` fixture first repairs what an earlier test
  broke (resumes stalled nodes, restarts killed ones, which rejoin as
  replicas, waits until healthy), then flushes every primary. Tests that move
  slots put them back themselves, so every test starts on three balanced
  primaries.
- ``backend`` gives the contract and lifecycle suites (``tests/unit``) a
  cluster-backed ``RedisStorageAdapter``, so their cases run here unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import key_slot

from autoplay_obs.storage import RedisStorageAdapter
from benchmarks._cluster import LocalCluster, NodeInfo, slot_map
from tests.conftest import find_server_binary

HERE = Path(__file__).resolve().parent
HEALTHY_TIMEOUT_S = 30.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this directory needs the real cluster: mark it for CI's skip check."""
    for item in items:
        if HERE in Path(item.path).parents and item.get_closest_marker("redis_server") is None:
            item.add_marker(pytest.mark.redis_server)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """The session's cluster; torn down (processes killed, dirs removed) whatever happens."""
    server = find_server_binary("redis-server", env_var="AUTOPLAY_REDIS_SERVER")
    cli = find_server_binary("redis-cli", env_var="AUTOPLAY_REDIS_CLI")
    local = LocalCluster(server, cli, node_timeout_ms=1000)
    try:
        try:
            local.create()
        except (RuntimeError, redis.RedisError, OSError) as exc:
            pytest.fail(f"could not start the Redis Cluster: {exc}", pytrace=False)
        yield local
    finally:
        local.close()
        shutil.rmtree(local.root, ignore_errors=True)


@dataclass
class Cluster:
    """Test-side control of the running cluster: clients, adapters, faults and slot moves."""

    local: LocalCluster
    _clients: list[RedisCluster] = field(default_factory=list)
    _adapters: list[RedisStorageAdapter] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.local.startup_port}/0"

    def client(self, **overrides: Any) -> RedisCluster:
        """A fresh cluster client (closed at teardown). Short timeouts: a dead node must not stall."""
        options: dict[str, Any] = {
            "socket_timeout": 2.0,
            "socket_connect_timeout": 1.0,
            "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 3),
        }
        options.update(overrides)
        client_class: type[RedisCluster] = options.pop("client_class", RedisCluster)
        client = client_class(host="127.0.0.1", port=self.local.startup_port, **options)
        self._clients.append(client)
        return client

    def adapter(self, **options: Any) -> RedisStorageAdapter:
        """Our adapter with its own cluster client (``cluster=True``), as another process would have it."""
        adapter = RedisStorageAdapter(redis_url=self.url, cluster=True, **options)
        self._adapters.append(adapter)
        return adapter

    def adapter_on(self, client: RedisCluster, **options: Any) -> RedisStorageAdapter:
        """Our adapter on a cluster client the host built (``client=``)."""
        adapter = RedisStorageAdapter(client=client, **options)
        self._adapters.append(adapter)
        return adapter

    def primary_for(self, key: str) -> NodeInfo:
        port = self.local.slot_owners()[key_slot(key.encode())]
        return next(n for n in self.local.primaries() if n.port == port)

    async def keys(self) -> list[bytes]:
        """Every key on every primary (KEYS is fine: tests hold a handful)."""
        found: list[bytes] = []
        for primary in self.local.primaries():
            client = redis.asyncio.Redis(host="127.0.0.1", port=primary.port)
            try:
                found.extend(await client.keys("*"))
            finally:
                await client.aclose()
        return sorted(found)

    async def reshard(self, source: NodeInfo, target: NodeInfo, slots: int) -> None:
        """``redis-cli --cluster reshard``: move ``slots`` of the source's lowest slots, keys and all.

        It refuses to start until every node agrees on the slot map, and the map is
        spread by gossip, so it waits for that first and after the move.
        """
        await asyncio.to_thread(self.local.wait_healthy, HEALTHY_TIMEOUT_S)
        proc = await asyncio.create_subprocess_exec(
            self.local.cli_binary, "--cluster", "reshard", f"127.0.0.1:{source.port}",
            "--cluster-from", source.node_id, "--cluster-to", target.node_id,
            "--cluster-slots", str(slots), "--cluster-yes",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        if proc.returncode != 0 or b"[ERR]" in out:
            raise RuntimeError(
                f"redis-cli --cluster reshard failed ({proc.returncode}):\n{out.decode()[-3000:]}"
            )

    async def wait_for_owners(self, expected: dict[int, int], timeout: float = 15.0) -> bool:
        """Whether every live node reports exactly these slot owners within ``timeout``.

        Seen after a reshard: for a moment the nodes can agree on the old owner of
        the last slots moved; polling for the expected map is what is reliable.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            with contextlib.suppress(redis.RedisError):
                if all(view == expected for view in await asyncio.to_thread(self._views)):
                    return True
            await asyncio.sleep(0.1)
        return False

    def _views(self) -> list[dict[int, int]]:
        views = []
        for node in self.local.nodes:
            if node.alive and not node.stopped:
                with node.client() as client:
                    views.append(slot_map(client.execute_command("CLUSTER", "SLOTS")))
        return views

    async def wait_until_primary(self, port: int, timeout: float = 15.0) -> bool:
        """Whether the node on ``port`` serves slots as a primary within ``timeout`` (the loop runs on)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            with contextlib.suppress(redis.RedisError, StopIteration):
                if any(n.port == port for n in self.local.primaries()):
                    return True
            await asyncio.sleep(0.1)
        return False

    def pile_up_replication(self, primary: NodeInfo, at_least: int = 8 << 20) -> int:
        """With the primary's replica stalled, write filler to the primary until at least
        ``at_least`` bytes of replication stream wait in the primary's own output buffer.

        What sits in the kernel's socket buffers still reaches the replica when it
        resumes; what sits in the primary's buffer dies with the primary. Past this
        point, every write the primary acknowledges is one its replica does not have.
        Returns how many filler bytes it took.
        """
        owners = self.local.slot_owners()
        keys = (f"filler-{i}" for i in range(100_000))
        mine = (k for k in keys if owners[key_slot(k.encode())] == primary.port)
        chunk, written = b"x" * (4 << 20), 0
        with self.local.node(primary.port).client() as client:
            while written < 64 << 20:
                client.set(next(mine), chunk)
                written += len(chunk)
                raw = client.execute_command("CLIENT", "LIST", "TYPE", "replica")
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
                pending = [int(f[5:]) for f in text.split() if f.startswith("omem=")]
                if pending and min(pending) >= at_least:
                    return written
        raise RuntimeError(f"replication to {primary.port}'s replica did not back up: is it stalled?")

    async def takeover(self, replica_port: int) -> None:
        """``CLUSTER FAILOVER TAKEOVER``: the replica takes its primary's slots without a vote."""
        client = redis.asyncio.Redis(host="127.0.0.1", port=replica_port)
        try:
            await client.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
        finally:
            await client.aclose()

    def repair(self) -> None:
        """Resume stalled nodes, restart killed ones, wait until all is well again."""
        for node in self.local.nodes:
            if node.stopped:
                node.cont()
        for node in self.local.nodes:
            if not node.alive:
                node.start()
        self.local.wait_healthy(HEALTHY_TIMEOUT_S)

    async def aclose(self) -> None:
        for adapter in self._adapters:
            await adapter.aclose()
        for client in self._clients:
            await client.aclose()


@pytest.fixture
async def cluster(redis_cluster: LocalCluster) -> AsyncIterator[Cluster]:
    """The healthy, empty cluster; clients and adapters made through it are closed afterwards."""
    control = Cluster(redis_cluster)
    control.repair()
    redis_cluster.flush_primaries()
    try:
        yield control
    finally:
        await control.aclose()


@dataclass
class ClusterBackend:
    """The ``Backend`` shape the contract and lifecycle suites expect, on the cluster."""

    kind: str
    adapter: RedisStorageAdapter
    _open: Callable[[], RedisStorageAdapter]

    def open(self) -> RedisStorageAdapter:
        return self._open()


@pytest.fixture
def backend(cluster: Cluster) -> ClusterBackend:
    return ClusterBackend("cluster", cluster.adapter(), cluster.adapter)


@pytest.fixture
def adapter(cluster: Cluster) -> RedisStorageAdapter:
    """For the adopted real-server suites: our adapter, here on the cluster."""
    return cluster.adapter()


class WholeClusterClient(RedisCluster):
    """A cluster client whose ``KEYS`` asks every primary (redis-py's default asks one node),
    so the adopted suites' "exactly these keys are stored" checks see the whole keyspace."""

    async def keys(self, pattern: Any = "*", **kwargs: Any) -> Any:
        kwargs.setdefault("target_nodes", RedisCluster.PRIMARIES)
        return await super().keys(pattern, **kwargs)


@pytest.fixture
def raw(cluster: Cluster) -> RedisCluster:
    """For the adopted real-server suites: a client for the stored bytes, here on the cluster."""
    return cluster.client(client_class=WholeClusterClient)
