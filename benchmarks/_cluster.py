"""A throwaway local Redis Cluster: 3 primaries + 3 replicas from the ``redis-server`` on PATH.

Decisions:
- Used by ``benchmarks/cluster.py`` and by the cluster test suite's fixture
  (``tests/integration/cluster/``); benchmarks must not import from ``tests/``,
  so the one starter lives here.
- Each node runs in its own tmp dir on free 127.0.0.1 ports (client and bus
  port, ``--cluster-port``), persistence off, a short ``cluster-node-timeout``
  so a failover takes a couple of seconds. ``cluster-replica-validity-factor
  0`` lets a replica that was stalled still be promoted (the failover tests
  stall one on purpose), and diskless sync without delay lets a restarted node
  catch up at once.
- ``redis-cli --cluster create ... --cluster-replicas 1`` assigns roles and
  slots, as an operator would; ``wait_healthy`` then waits until every node
  says ``cluster_state:ok``, all 16384 slots are served, every live node sees
  the same slot owners and every primary has a linked replica.
- Nodes can be killed (SIGKILL), stalled (SIGSTOP), resumed and restarted on
  the same ports and node config, so a killed primary rejoins as a replica.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

__all__ = ["ALL_SLOTS", "ClusterNode", "LocalCluster", "NodeInfo", "local_cluster", "slot_map"]

ALL_SLOTS = 16384


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class NodeInfo:
    """One line of ``CLUSTER NODES``: who a node is and what it serves."""

    node_id: str
    port: int
    role: str  # "primary" or "replica"
    primary_id: str | None
    failed: bool
    slots: tuple[tuple[int, int], ...]

    @property
    def slot_count(self) -> int:
        return sum(last - first + 1 for first, last in self.slots)


@dataclass
class ClusterNode:
    """One cluster-enabled ``redis-server`` process, restartable on the same ports."""

    binary: str
    workdir: Path
    port: int
    bus_port: int
    node_timeout_ms: int
    proc: subprocess.Popen[bytes] | None = None
    stopped: bool = False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def args(self) -> list[str]:
        # fmt: off
        return [
            self.binary,
            "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "no",
            "--cluster-enabled", "yes", "--cluster-port", str(self.bus_port),
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-replica-validity-factor", "0",
            "--cluster-allow-replica-migration", "no",
            "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            "--daemonize", "no", "--logfile", "redis.log",
        ]
        # fmt: on

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart) and return once PING answers."""
        if self.alive:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "stderr").open("ab") as err:
            self.proc = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL, stderr=err, cwd=self.workdir)
        self.stopped = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited:\n{self.log_tail()}")
            with contextlib.suppress(redis.RedisError), self.client() as client:
                if client.ping():
                    return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING in {timeout}s")

    def client(self, timeout: float = 5.0) -> redis.Redis:
        """A plain (non-cluster) client to this one node; the caller closes it."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout, socket_connect_timeout=2)

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown, nothing flushed to anyone."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc, self.stopped = None, False

    def stop(self) -> None:
        """SIGSTOP: the process stays, answers nothing and reads nothing (a stalled node)."""
        if self.alive and self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)
            self.stopped = True

    def cont(self) -> None:
        if self.alive and self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def log_tail(self, chars: int = 3000) -> str:
        files = (self.workdir / "stderr", self.workdir / "redis.log")
        return "".join(f.read_text(errors="replace") for f in files if f.exists())[-chars:]


@dataclass
class LocalCluster:
    """Six nodes in one tmp dir; ``create()`` makes them a cluster, ``close()`` removes it all."""

    server_binary: str
    cli_binary: str
    node_timeout_ms: int = 1000
    size: int = 6
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ap-cluster-")))
    nodes: list[ClusterNode] = field(default_factory=list)

    def create(self, timeout: float = 60.0) -> None:
        """Start the nodes, join them with ``redis-cli --cluster create`` and wait until healthy."""
        for i in range(self.size):
            self.nodes.append(self._start_node(self.root / f"node-{i}"))
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        done = subprocess.run(
            [self.cli_binary, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")
        self.wait_healthy(timeout)

    def _start_node(self, workdir: Path) -> ClusterNode:
        for attempt in range(3):  # a free port can be taken between probe and bind
            node = ClusterNode(self.server_binary, workdir, _free_port(), _free_port(), self.node_timeout_ms)
            try:
                node.start()
                return node
            except RuntimeError:
                node.kill()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @property
    def startup_port(self) -> int:
        """A live node's port, for clients to discover the cluster from."""
        return next(n.port for n in self.nodes if n.alive and not n.stopped)

    def node(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def topology(self) -> list[NodeInfo]:
        """``CLUSTER NODES`` as seen by a live node."""
        with self.node(self.startup_port).client() as client:
            raw = client.execute_command("CLUSTER", "NODES")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return [_parse_node_line(line) for line in text.splitlines() if line.strip()]

    def primaries(self) -> list[NodeInfo]:
        return [n for n in self.topology() if n.role == "primary" and not n.failed and n.slots]

    def replica_of(self, primary: NodeInfo) -> NodeInfo:
        return next(n for n in self.topology() if n.primary_id == primary.node_id and not n.failed)

    def slot_owners(self) -> dict[int, int]:
        """Slot -> port of the primary serving it, from ``CLUSTER SLOTS``."""
        with self.node(self.startup_port).client() as client:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        return slot_map(ranges)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every live node serves all slots, agrees on their owners and replicas are linked."""
        deadline = time.monotonic() + timeout
        problem = "not checked yet"
        while time.monotonic() < deadline:
            try:
                problem = self._health_problem()
            except redis.RedisError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if not problem:
                return
            time.sleep(0.1)
        logs = "\n".join(f"--- node {n.port}\n{n.log_tail(800)}" for n in self.nodes)
        raise RuntimeError(f"the cluster did not become healthy in {timeout}s: {problem}\n{logs}")

    def _health_problem(self) -> str:
        live = [n for n in self.nodes if n.alive and not n.stopped]
        views: list[dict[int, int]] = []
        for node in live:
            with node.client(timeout=2) as client:
                info = client.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text or f"cluster_slots_ok:{ALL_SLOTS}" not in text:
                    return f"node {node.port}: {text.splitlines()[:3]}"
                views.append(slot_map(client.execute_command("CLUSTER", "SLOTS")))
                replication = client.info("replication")
                if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                    return f"replica {node.port} is not linked to its primary"
        if any(view != views[0] for view in views[1:]):
            return "the nodes disagree on who owns which slot"
        topology = self.topology()
        primaries = [n for n in topology if n.role == "primary" and n.slots and not n.failed]
        for primary in primaries:
            if not any(n.primary_id == primary.node_id and not n.failed for n in topology):
                return f"primary {primary.port} has no replica"
        return ""

    def flush_primaries(self) -> None:
        for primary in self.primaries():
            with self.node(primary.port).client() as client:
                client.flushall()

    def close(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def _parse_node_line(line: str) -> NodeInfo:
    # <id> <ip:port@cport> <flags> <master> <ping-sent> <pong-recv> <epoch> <link> <slot> ...
    parts = line.split()
    flags = parts[2].split(",")
    port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
    slots: list[tuple[int, int]] = []
    for item in parts[8:]:
        if item.startswith("["):  # a slot being migrated or imported right now
            continue
        first, _, last = item.partition("-")
        slots.append((int(first), int(last or first)))
    return NodeInfo(
        node_id=parts[0],
        port=port,
        role="primary" if "master" in flags else "replica",
        primary_id=None if parts[3] == "-" else parts[3],
        failed="fail" in flags or "fail?" in flags,
        slots=tuple(slots),
    )


def slot_map(ranges: list[list[object]]) -> dict[int, int]:
    """Slot -> port of its primary, from a ``CLUSTER SLOTS`` reply."""
    owners: dict[int, int] = {}
    for entry in ranges:
        first, last, primary = int(str(entry[0])), int(str(entry[1])), entry[2]
        assert isinstance(primary, (list, tuple))
        port = int(str(primary[1]))
        owners.update(dict.fromkeys(range(first, last + 1), port))
    return owners


@contextlib.contextmanager
def local_cluster(node_timeout_ms: int = 1000) -> Iterator[LocalCluster]:
    """A healthy 3+3 cluster for the ``with`` block; SystemExit if the binaries are missing."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise SystemExit("redis-server / redis-cli not found on PATH (apt-get install redis-server)")
    cluster = LocalCluster(server, cli, node_timeout_ms)
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.close()
