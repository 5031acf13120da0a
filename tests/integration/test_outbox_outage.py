"""No session lost to a primary outage: real redis-server processes, real outbox files, real kills."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from autoplay_obs.storage import (
    RedisStorageAdapter,
    SessionEndResult,
    StorageManager,
    end_session,
    start_session,
)
from autoplay_obs.user_adoption_state import SessionSnapshot
from tests.conftest import RedisServer, find_server_binary, free_port

pytestmark = pytest.mark.redis_server

P = "prod_outage"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, with every write fsync'd (AOF ``appendfsync always``)."""
    binary = find_server_binary("redis-server", env_var="AUTOPLAY_REDIS_SERVER")
    workdir = Path(tempfile.mkdtemp(prefix="ap-aof-"))
    server = RedisServer(binary, workdir, extra_args=("--appendonly", "yes", "--appendfsync", "always"))
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def adapter(url: str) -> RedisStorageAdapter:
    return RedisStorageAdapter(redis_url=url, socket_timeout=0.5, connect_timeout=0.3, retries=1)


async def one_pair(storage: StorageManager, user: str, n: int) -> SessionEndResult:
    started = await start_session(P, user, f"s{n:03d}", storage)
    snapshot = SessionSnapshot.from_adoption_state(
        started.state,
        session_id=f"s{n:03d}",
        session_number=n,
        started_at=time.time() - 60,
        catalog_workflow_ids=["a", "b"],
    )
    return await end_session(P, user, snapshot, storage, summary=f"session {n}")


def stored_sessions(url: str, user: str) -> tuple[int, list[str]]:
    import json

    from autoplay_obs.storage import user_state_key

    with redis.Redis.from_url(url) as client:
        raw = client.get(user_state_key(P, user))
    assert raw is not None, user
    doc = json.loads(raw)
    return doc["sessions"]["count"], [e["session_id"] for e in doc["sessions"]["index"]]


async def drain(storage: StorageManager, deadline_s: float = 30.0) -> int:
    """Replay until the outbox is empty; the number replayed."""
    replayed, deadline = 0, time.monotonic() + deadline_s
    while True:
        result = await storage.flush_outbox()
        replayed += result.replayed
        if result.remaining == 0 or time.monotonic() > deadline:
            return replayed
        await asyncio.sleep(0.2)


async def test_sigkilled_redis_for_five_seconds_loses_no_session(
    durable_redis: RedisServer, tmp_path: Path
) -> None:
    users, pairs = 32, 12
    storage = StorageManager([adapter(durable_redis.url)], outbox=tmp_path / "outbox.db", replay_interval=0.5)
    results: list[SessionEndResult] = []

    async def user_loop(u: int) -> None:
        for n in range(1, pairs + 1):
            results.append(await one_pair(storage, f"user_{u}", n))
            await asyncio.sleep(0.05)

    async def outage() -> None:
        await asyncio.sleep(0.4)
        durable_redis.kill()
        await asyncio.sleep(5.0)
        durable_redis.start()

    await asyncio.gather(outage(), *(user_loop(u) for u in range(users)))  # the host sees no exception
    queued = sum(r.queued for r in results)
    assert all(r.persisted or r.queued for r in results), [r.error for r in results if not r.queued][:3]
    assert all(r.outbox_error is None for r in results)
    assert queued > 0  # the outage was real
    replayed = await drain(storage)
    await storage.aclose()
    for u in range(users):
        count, index = stored_sessions(durable_redis.url, f"user_{u}")
        assert count == pairs, (u, count)
        assert sorted(index) == [f"s{n:03d}" for n in range(1, pairs + 1)]
    print(f"\n[outage] ends={len(results)} queued={queued} replayed(in flush)={replayed} lost=0")


_HOST = textwrap.dedent(
    """
    import asyncio, sys, time
    from autoplay_obs.storage import RedisStorageAdapter, StorageManager, end_session
    from autoplay_obs.user_adoption_state import SessionSnapshot, UserAdoptionState

    url, outbox, user, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    async def main():
        storage = StorageManager(
            [RedisStorageAdapter(redis_url=url, socket_timeout=0.3, connect_timeout=0.2, retries=0)],
            outbox=outbox, replay_interval=60,
        )
        for n in range(1, count + 1):
            snap = SessionSnapshot.from_adoption_state(
                UserAdoptionState(user_id=user), session_id=f"s{n:03d}", session_number=n,
                started_at=time.time() - 5, catalog_workflow_ids=["a"],
            )
            result = await end_session("prod_outage", user, snap, storage, summary="x")
            line = "queued" if result.queued else f"NOT QUEUED {result.error!r} {result.outbox_error!r}"
            print(line, flush=True)
        print("done", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def host(url: str, outbox: Path, user: str, count: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", _HOST, url, str(outbox), user, str(count)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_done(proc: subprocess.Popen[str], count: int) -> list[str]:
    assert proc.stdout is not None
    lines = []
    while len(lines) < count + 1:
        line = proc.stdout.readline()
        assert line, f"host exited early: {lines}"
        lines.append(line.strip())
    return lines


def down_url() -> tuple[int, str]:
    port = free_port()
    return port, f"redis://127.0.0.1:{port}/0"


async def test_a_sigkilled_host_leaves_its_queue_to_the_next_process(tmp_path: Path) -> None:
    port, url = down_url()
    outbox = tmp_path / "outbox.db"
    proc = host(url, outbox, "u_killed", 6)
    try:
        assert wait_done(proc, 6) == ["queued"] * 6 + ["done"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    binary = find_server_binary("redis-server", env_var="AUTOPLAY_REDIS_SERVER")
    server = RedisServer(binary, tmp_path, port=port)
    server.start()
    try:
        async with StorageManager([adapter(url)], outbox=outbox) as storage:
            assert await drain(storage) == 6
        assert stored_sessions(url, "u_killed") == (6, [f"s{n:03d}" for n in range(1, 7)])
    finally:
        server.kill()


async def test_two_processes_sharing_one_outbox_replay_every_entry_once(tmp_path: Path) -> None:
    port, url = down_url()
    outbox = tmp_path / "outbox.db"
    hosts = [host(url, outbox, user, 8) for user in ("u_a", "u_b")]
    try:
        for proc in hosts:
            assert wait_done(proc, 8)[-1] == "done"
    finally:
        for proc in hosts:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    binary = find_server_binary("redis-server", env_var="AUTOPLAY_REDIS_SERVER")
    server = RedisServer(binary, tmp_path, port=port)
    server.start()
    try:
        first = StorageManager([adapter(url)], outbox=outbox)
        second = StorageManager([adapter(url)], outbox=outbox)
        replayed = await asyncio.gather(drain(first), drain(second))
        await first.aclose()
        await second.aclose()
        assert sum(replayed) == 16
        for user in ("u_a", "u_b"):
            assert stored_sessions(url, user) == (8, [f"s{n:03d}" for n in range(1, 9)])
    finally:
        server.kill()


async def test_a_tiny_outbox_drops_the_oldest_counts_them_and_replays_the_rest(tmp_path: Path) -> None:
    from autoplay_obs.storage import Outbox

    port, url = down_url()
    storage = StorageManager([adapter(url)], outbox=Outbox(tmp_path / "o.db", max_entries=4))
    for n in range(1, 11):
        result = await one_pair_end_only(storage, "u_tiny", n)
        assert result.queued and not result.persisted
    binary = find_server_binary("redis-server", env_var="AUTOPLAY_REDIS_SERVER")
    server = RedisServer(binary, tmp_path, port=port)
    server.start()
    try:
        flushed = await storage.flush_outbox()
        assert (flushed.replayed, flushed.remaining, flushed.dropped) == (4, 0, 6)
        count, index = stored_sessions(url, "u_tiny")
        assert (count, index) == (4, ["s007", "s008", "s009", "s010"])  # the newest four
    finally:
        await storage.aclose()
        server.kill()


async def one_pair_end_only(storage: StorageManager, user: str, n: int) -> SessionEndResult:
    from autoplay_obs.user_adoption_state import UserAdoptionState

    snapshot = SessionSnapshot.from_adoption_state(
        UserAdoptionState(user_id=user),
        session_id=f"s{n:03d}",
        session_number=n,
        started_at=1_760_000_000.0 + n,
        catalog_workflow_ids=["a"],
        now=1_760_000_100.0 + n,
    )
    return await end_session(P, user, snapshot, storage, summary="x")


@pytest.mark.parametrize("damage", ["corrupt_file", "path_is_a_directory"])
async def test_an_outbox_that_cannot_be_written_is_a_clear_error_not_a_crash(
    tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "outbox.db"
    if damage == "corrupt_file":
        path.write_bytes(b"this is not an SQLite database" * 100)
    else:
        path.mkdir()
    _, url = down_url()
    storage = StorageManager([adapter(url)], outbox=path)
    result = await one_pair_end_only(storage, "u_bad", 1)
    assert not result.persisted and not result.queued
    assert result.outbox_error is not None and "outbox" in str(result.outbox_error).lower()
    await storage.aclose()
    if damage == "corrupt_file":  # the user's file is reported, never replaced
        assert path.read_bytes().startswith(b"this is not an SQLite database")
