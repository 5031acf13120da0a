"""The Redis primary on a real (single-node) Redis Cluster, through redis-py's cluster client.

Why: ``RedisStorageAdapter(client=RedisCluster(...))`` takes another path than
a plain client -- a cluster client has no connection pool, so every round trip
is a non-transactional cluster pipeline -- and a session end's snapshot and
state keys hash to different slots. A fake cannot show that this works; a real
``redis-server --cluster-enabled yes`` owning all 16384 slots can.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import redis.asyncio.cluster

from autoplay_obs.errors import UnreadableDocumentError
from autoplay_obs.storage import (
    RedisStorageAdapter,
    StorageManager,
    end_session,
    on_session_end,
    on_session_start,
    session_key,
    start_session,
    user_state_key,
)
from autoplay_obs.user_adoption_state import SessionSnapshot

pytestmark = pytest.mark.redis_server

P = "prod_1"
MakeSnapshot = Callable[..., SessionSnapshot]
START_TIMEOUT_S = 15.0
ALL_SLOTS = 16384


@dataclass
class ClusterNode:
    """One ``redis-server`` in cluster mode owning every slot."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes]

    def log_tail(self) -> str:
        """What the server said (stderr before its log file opens, then the log)."""
        files = (self.workdir / "stderr", self.workdir / "redis.log")
        return "".join(f.read_text(errors="replace") for f in files if f.exists())[-2000:]

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


def _spawn(binary: str, workdir: Path, *, bus_port_option: bool = True) -> ClusterNode:
    """Start a cluster-mode server on free ports; return once it answers PING.

    The cluster bus listens on ``--cluster-port`` (Redis >= 7), else on port + 10000.
    """
    from tests.conftest import free_port

    port = free_port()
    while not bus_port_option and port + 10000 > 65535:
        port = free_port()
    bus = ["--cluster-port", str(free_port())] if bus_port_option else []
    # fmt: off
    args = [
        binary,
        "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "no",
        "--cluster-enabled", "yes", *bus,
        "--cluster-config-file", str(workdir / f"nodes-{port}.conf"),
        "--save", "", "--appendonly", "no", "--dir", str(workdir),
        "--daemonize", "no", "--logfile", str(workdir / "redis.log"),
    ]
    # fmt: on
    (workdir / "redis.log").unlink(missing_ok=True)  # the tail shown on failure is this attempt's
    with (workdir / "stderr").open("wb") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
    node = ClusterNode(port, workdir, proc)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"cluster redis-server exited with {proc.returncode} on port {port}:\n{node.log_tail()}"
            )
        try:
            with node.client() as client:
                if client.ping():
                    return node
        except redis.RedisError:
            time.sleep(0.05)
    node.kill()
    raise RuntimeError(f"cluster redis-server did not answer PING on port {port} in {START_TIMEOUT_S}s")


def _assign_all_slots(node: ClusterNode) -> None:
    """Give the node every slot and wait until the cluster says it is ok."""
    with node.client() as client:
        try:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, ALL_SLOTS - 1)
        except redis.ResponseError as exc:  # Redis < 7.0: no ADDSLOTSRANGE
            if "unknown" not in str(exc).lower():
                raise
            for first in range(0, ALL_SLOTS, 1024):
                client.execute_command("CLUSTER", "ADDSLOTS", *range(first, min(first + 1024, ALL_SLOTS)))
        deadline = time.monotonic() + START_TIMEOUT_S
        info = ""
        while time.monotonic() < deadline:
            raw = client.execute_command("CLUSTER", "INFO")
            info = raw.decode() if isinstance(raw, bytes) else str(raw)
            if "cluster_state:ok" in info:
                return
            time.sleep(0.05)
    raise RuntimeError(
        f"the cluster on port {node.port} did not reach cluster_state:ok in {START_TIMEOUT_S}s:\n"
        f"{info}\n{node.log_tail()}"
    )


@pytest.fixture(scope="module")
def cluster_node() -> Iterator[ClusterNode]:
    """A real single-node Redis Cluster for this module; skips locally / fails in CI if missing."""
    from tests.conftest import find_server_binary

    binary = find_server_binary("redis-server", env_var="AUTOPLAY_REDIS_SERVER")
    workdir = Path(tempfile.mkdtemp(prefix="ap-redis-cluster-"))
    node: ClusterNode | None = None
    try:
        bus_port_option = True
        for attempt in range(4):  # a free port can be taken between probe and bind
            try:
                node = _spawn(binary, workdir, bus_port_option=bus_port_option)
                break
            except RuntimeError as exc:
                if "cluster-port" in str(exc):  # Redis < 7: no such option
                    bus_port_option = False
                elif attempt == 3:
                    raise
        assert node is not None
        try:
            _assign_all_slots(node)
        except (RuntimeError, redis.RedisError) as exc:
            pytest.fail(f"could not set up the Redis Cluster: {exc}\n{node.log_tail()}", pytrace=False)
        yield node
    finally:
        if node is not None:
            node.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def cluster(cluster_node: ClusterNode) -> AsyncIterator[redis.asyncio.cluster.RedisCluster]:
    """An empty cluster, through a fresh redis-py cluster client (closed afterwards)."""
    with cluster_node.client() as plain:
        plain.flushall()
    client = redis.asyncio.cluster.RedisCluster(
        host="127.0.0.1", port=cluster_node.port, socket_timeout=5, socket_connect_timeout=5
    )
    try:
        await asyncio.wait_for(client.initialize(), START_TIMEOUT_S)
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def adapter(cluster: redis.asyncio.cluster.RedisCluster) -> AsyncIterator[RedisStorageAdapter]:
    a = RedisStorageAdapter(client=cluster)
    try:
        yield a
    finally:
        await a.aclose()


# -- tests ---------------------------------------------------------------------------------------


async def test_the_adapter_runs_sessions_on_a_cluster_and_reads_back_through_the_dict_api(
    adapter: RedisStorageAdapter, cluster: redis.asyncio.cluster.RedisCluster, make_snapshot: MakeSnapshot
) -> None:
    assert adapter.describe() == {"db.system.name": "redis"}  # no single server to name
    storage = StorageManager([adapter])
    user = "u_1"
    start = await start_session(P, user, "s1", storage)
    assert start.persisted and not start.degraded and start.error is None
    start.state.onboarding.upsert_workflow_progress(
        "create_project", status="completed", confidence=0.9, now=1_700_000_010.0
    )
    first = make_snapshot("s1", number=1, user_id=user, state=start.state)
    end = await end_session(P, user, first, storage, summary="first summary")
    assert end.persisted and end.snapshot_created is True and not end.duplicate and end.error is None

    state, onboarding = await on_session_start(P, user, "s2", storage=storage)
    assert onboarding == first
    assert state.sessions_count == 1 and state.current_session_id == "s2"
    await on_session_end(P, user, make_snapshot("s2", number=2, user_id=user), storage=storage)

    doc = await storage.get_user_state(P, user)
    assert doc is not None and "_rev" not in doc
    assert doc["sessions"]["count"] == 2
    assert [e["session_id"] for e in doc["sessions"]["index"]] == ["s1", "s2"]
    assert doc["onboarding"]["summary"] == "first summary"
    assert doc["onboarding"]["workflow_progress"]["create_project"]["status"] == "completed"
    assert await storage.get_session_snapshot(P, user, "s1") == first.to_dict()
    assert await storage.get_session_snapshot(P, user, "nope") is None
    assert await storage.get_user_state(P, "nobody") is None

    # The documented keys, in whatever slots they hash to.
    assert (await cluster.get(user_state_key(P, user)) or b"").startswith(b'{"_rev":"')
    assert await cluster.exists(session_key(P, user, "s1")) == 1
    assert cluster.keyslot(user_state_key(P, user)) != cluster.keyslot(session_key(P, user, "s1"))


async def test_several_users_at_once_each_count_exactly(
    adapter: RedisStorageAdapter, make_snapshot: MakeSnapshot
) -> None:
    storage = StorageManager([adapter])
    users = [f"user_{i}" for i in range(5)]
    sessions = 3

    async def run(user: str) -> None:
        for n in range(1, sessions + 1):
            start = await start_session(P, user, f"s{n}", storage)
            assert start.persisted
            end = await end_session(P, user, make_snapshot(f"s{n}", number=n, user_id=user), storage)
            assert end.persisted and not end.duplicate

    await asyncio.gather(*(run(user) for user in users))
    for user in users:
        doc = await storage.get_user_state(P, user)
        assert doc is not None and doc["user_id"] == user
        assert doc["sessions"]["count"] == sessions
        assert [e["session_id"] for e in doc["sessions"]["index"]] == [
            f"s{n}" for n in range(1, sessions + 1)
        ]


async def test_concurrent_ends_for_one_user_from_two_processes_count_exactly(
    cluster_node: ClusterNode, cluster: redis.asyncio.cluster.RedisCluster, make_snapshot: MakeSnapshot
) -> None:
    """Two managers, each with its own cluster client, race compare-and-sets on one state key."""
    user, ends = "u_busy", 12
    other = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=cluster_node.port, socket_timeout=5)
    adapters = [RedisStorageAdapter(client=cluster), RedisStorageAdapter(client=other)]
    managers = [StorageManager([a]) for a in adapters]
    try:
        assert (await start_session(P, user, "s0", managers[0])).persisted
        snapshots = [make_snapshot(f"s{n}", number=n, user_id=user) for n in range(1, ends + 1)]
        results = await asyncio.gather(
            *(end_session(P, user, snap, managers[n % 2]) for n, snap in enumerate(snapshots))
        )
        assert all(r.persisted and not r.duplicate and r.snapshot_created for r in results)
        doc = await managers[1].get_user_state(P, user)
        assert doc is not None
        assert doc["sessions"]["count"] == ends
        assert [e["session_id"] for e in doc["sessions"]["index"]] == [f"s{n}" for n in range(1, ends + 1)]
        for snap in snapshots:
            assert await managers[0].get_session_snapshot(P, user, snap.session_id) == snap.to_dict()
    finally:
        for a in adapters:
            await a.aclose()
        await other.aclose()


async def test_a_retried_end_is_a_duplicate_and_counted_once(
    adapter: RedisStorageAdapter, make_snapshot: MakeSnapshot
) -> None:
    user = "u_retry"
    storage = StorageManager([adapter])
    await start_session(P, user, "s1", storage)
    snapshot = make_snapshot("s1", number=1, user_id=user)
    first = await end_session(P, user, snapshot, storage)
    assert first.persisted and not first.duplicate and first.snapshot_created is True

    again = await end_session(P, user, snapshot, storage)
    assert again.persisted and again.duplicate and again.snapshot_created is False
    # A retry from another process (a manager with no memory of the first end).
    elsewhere = await end_session(P, user, snapshot, StorageManager([adapter]), summary="late")
    assert elsewhere.duplicate and elsewhere.snapshot_created is False

    doc = await storage.get_user_state(P, user)
    assert doc is not None
    assert doc["sessions"]["count"] == 1
    assert [e["session_id"] for e in doc["sessions"]["index"]] == ["s1"]
    assert doc["onboarding"]["summary"] is None  # the duplicate changed nothing


async def test_a_snapshot_key_of_the_wrong_type_is_left_alone_and_not_fatal(
    adapter: RedisStorageAdapter, cluster: redis.asyncio.cluster.RedisCluster, make_snapshot: MakeSnapshot
) -> None:
    """A hash where the onboarding snapshot belongs: never overwritten, reads refuse it (WRONGTYPE)."""
    user = "u_wrongtype"
    key = session_key(P, user, "s1")
    await cluster.hset(key, mapping={"a": "b"})
    storage = StorageManager([adapter])
    await start_session(P, user, "s1", storage)

    end = await end_session(P, user, make_snapshot("s1", number=1, user_id=user), storage)
    assert end.snapshot_created is not True  # SET NX found the key taken
    assert await cluster.type(key) == b"hash"
    assert await cluster.hgetall(key) == {b"a": b"b"}

    with pytest.raises(UnreadableDocumentError):
        await storage.get_session_snapshot(P, user, "s1")
    start = await start_session(P, user, "s2", storage)
    assert start.persisted and not start.degraded and start.error is None
    assert start.onboarding_session is None  # refused (WRONGTYPE), counted by telemetry
    assert await cluster.type(key) == b"hash"


async def test_a_state_key_of_the_wrong_type_degrades_and_is_left_alone(
    adapter: RedisStorageAdapter, cluster: redis.asyncio.cluster.RedisCluster, make_snapshot: MakeSnapshot
) -> None:
    user = "u_hash_state"
    key = user_state_key(P, user)
    await cluster.hset(key, mapping={"user_id": user})
    storage = StorageManager([adapter])

    start = await start_session(P, user, "s1", storage)
    assert start.degraded and not start.persisted
    assert isinstance(start.error, UnreadableDocumentError)
    end = await end_session(P, user, make_snapshot("s1", number=1, user_id=user), storage)
    assert not end.persisted
    with pytest.raises(UnreadableDocumentError):
        await storage.get_user_state(P, user)
    assert await cluster.hgetall(key) == {b"user_id": user.encode()}


async def test_a_session_end_sends_the_snapshot_before_the_state_on_a_cluster(
    adapter: RedisStorageAdapter, cluster: redis.asyncio.cluster.RedisCluster, make_snapshot: MakeSnapshot
) -> None:
    """A cluster pipeline sends each node's commands at once, so on a cluster the snapshot's
    SET NX goes alone, answered before the compare-and-set is sent."""
    assert adapter.bundles_freeze is False
    storage = StorageManager([adapter])
    ended = await end_session(P, "u", make_snapshot("s1", number=1, user_id="u"), storage, summary="x")
    assert ended.persisted and ended.snapshot_created is True
    assert [c.operation for c in ended.adapter_calls] == ["load_state", "create_snapshot", "swap_state"]
    assert await cluster.exists(session_key(P, "u", "s1")) == 1
