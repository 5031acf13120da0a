"""The blocking API against a real redis-server, across forks and interpreter exit."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from autoplay_obs.errors import ConfigurationError
from autoplay_obs.storage import RedisStorageAdapter, user_state_key
from autoplay_obs.storage.sync import SyncStorageManager, end_session, on_session_start
from autoplay_obs.user_adoption_state import MAX_SESSION_INDEX, SessionSnapshot, decode_user_state

if TYPE_CHECKING:
    from conftest import RecordingHTTPServer

P = "prod_1"
THREADS, ENDS, USERS = 8, 50, 4
MakeSnapshot = Callable[..., SessionSnapshot]
ROOT = Path(__file__).resolve().parents[2]


def stored_state(url: str, user_id: str) -> tuple[int, list[str]]:
    """(sessions.count, the index's session ids) as an independent client reads them."""
    with redis.Redis.from_url(url) as client:
        raw = client.get(user_state_key(P, user_id))
    assert raw is not None
    state = decode_user_state(raw, user_id=user_id).value
    return state.sessions.count, [entry.session_id for entry in state.sessions.index]


def test_threads_sharing_one_manager_lose_nothing(redis_url: str, make_snapshot: MakeSnapshot) -> None:
    """8 threads x 50 ends over 4 users (every tenth end a retry): exact counts, no error, no hang."""
    plans: list[list[tuple[str, str]]] = []
    for t in range(THREADS):
        plan = []
        for i in range(ENDS):
            if i % 10 == 9:  # a retried end of this thread's previous session
                plan.append(plan[-1])
            else:
                plan.append((f"u{(t + i) % USERS}", f"s-{t}-{i}"))
        plans.append(plan)
    expected: dict[str, set[str]] = defaultdict(set)
    for plan in plans:
        for user_id, session_id in plan:
            expected[user_id].add(session_id)

    errors: list[BaseException] = []
    duplicates = [0] * THREADS
    with SyncStorageManager([RedisStorageAdapter(redis_url=redis_url)]) as storage:

        def work(t: int) -> None:
            try:
                for user_id, session_id in plans[t]:
                    on_session_start(P, user_id, session_id, storage)
                    number = int(session_id.rsplit("-", 1)[1]) + 1
                    snapshot = make_snapshot(
                        session_id, number=number, user_id=user_id, captured_at=1e9 + t * 1000 + number
                    )
                    ended = end_session(P, user_id, snapshot, storage, summary="s")
                    assert ended.persisted, ended.error
                    duplicates[t] += ended.duplicate
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(THREADS)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        elapsed = time.perf_counter() - started
        hung = [thread.name for thread in threads if thread.is_alive()]
        assert hung == [], f"threads still running after 120 s: {hung}"
    assert errors == []
    assert sum(duplicates) == THREADS * (ENDS // 10)
    for user_id, sessions in expected.items():
        count, index = stored_state(redis_url, user_id)
        assert count == len(sessions), user_id
        assert len(index) == min(len(sessions), MAX_SESSION_INDEX)
        assert len(set(index)) == len(index) and set(index) <= sessions
    print(f"{THREADS * ENDS} start+end pairs in {elapsed:.2f} s")


def _wait_child(pid: int, timeout: float) -> int:
    """The child's exit status; a child still running after ``timeout`` is killed and fails the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"forked child {pid} hung for {timeout} s and was killed")


def test_a_forked_child_gets_a_clear_error_and_the_parent_keeps_working(redis_url: str) -> None:
    with SyncStorageManager([RedisStorageAdapter(redis_url=redis_url)]) as storage:
        on_session_start(P, "u1", "s1", storage)  # connections exist in the parent before the fork
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report and leave without running the parent's test machinery
            code = 3
            try:
                os.close(read_end)
                try:
                    on_session_start(P, "u1", "s2", storage)
                    message = "no error"
                except ConfigurationError as exc:
                    message, code = f"ConfigurationError: {exc}", 0
                storage.close()  # a no-op in the child: returns, does not touch the parent's loop
                os.write(write_end, message.encode())
            finally:
                os._exit(code)
        os.close(write_end)
        try:
            ready, _, _ = select.select([read_end], [], [], 20)
            report = os.read(read_end, 4096).decode() if ready else ""
        finally:
            os.close(read_end)
        assert _wait_child(pid, 20) == 0, report
        assert report.startswith("ConfigurationError:") and "fork" in report
        assert on_session_start(P, "u1", "s3", storage)[0].sessions.current_session_id == "s3"


SINK = """
import asyncio
import json
import sys


class FileSink:
    '''A write-only sink that appends each write to a file, after a wait.'''

    def __init__(self, path):
        self.path = path

    async def _write(self, what, ident):
        await asyncio.sleep(1.0)  # still pending when the script's last line returns
        with open(self.path, "a") as f:
            f.write(json.dumps([what, ident]) + "\\n")

    async def save_user_state(self, product_id, user_id, state):
        await self._write("state", user_id)

    async def get_user_state(self, product_id, user_id):
        return None

    async def save_session_snapshot(self, product_id, user_id, session_id, snapshot):
        await self._write("snapshot", session_id)

    async def get_session_snapshot(self, product_id, user_id, session_id):
        return None
"""


def _run_script(body: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "host.py"
    script.write_text(SINK + textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=60, env=env
    )


HOST = """
import os
import time
from autoplay_obs.storage import RedisStorageAdapter
from autoplay_obs.storage.sync import SyncStorageManager, on_session_end, on_session_start
from autoplay_obs.user_adoption_state import SessionSnapshot

storage = SyncStorageManager([RedisStorageAdapter(redis_url=sys.argv[1]), FileSink(sys.argv[2])])
state, _ = on_session_start("prod_1", "u1", "s1", storage=storage)
snapshot = SessionSnapshot.from_adoption_state(
    state, session_id="s1", session_number=1, started_at=time.time() - 60, catalog_workflow_ids=["a"]
)
on_session_end("prod_1", "u1", snapshot, storage=storage, summary="done")
"""


# The start's state, the end's snapshot and state: each mirrored once.
SINK_WRITES = ['["snapshot", "s1"]', '["state", "u1"]', '["state", "u1"]']


def test_exit_without_close_flushes_the_sinks(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "sink.jsonl"
    done = _run_script(HOST + "print('ended, not closed')\n", tmp_path, redis_url, str(out))
    assert done.returncode == 0, done.stderr
    assert "ended, not closed" in done.stdout
    assert sorted(out.read_text().splitlines()) == SINK_WRITES


def test_exit_without_close_delivers_posthog_events(
    recording_http_server: RecordingHTTPServer, tmp_path: Path
) -> None:
    """The official PostHog SDK behind the manager: its events reach the server at exit."""
    body = """
import time
from autoplay_obs.storage import InMemoryStorageAdapter
from autoplay_obs.storage.adapters.posthog import PostHogStorageAdapter
from autoplay_obs.storage.sync import SyncStorageManager, on_session_end, on_session_start
from autoplay_obs.user_adoption_state import SessionSnapshot

posthog = PostHogStorageAdapter(
    api_key="phc_test", host=sys.argv[1], flush_interval=30, flush_at=100, max_retries=0, close_timeout=5
)
storage = SyncStorageManager([InMemoryStorageAdapter(), posthog])
state, _ = on_session_start("prod_1", "u1", "s1", storage=storage)
snapshot = SessionSnapshot.from_adoption_state(
    state, session_id="s1", session_number=1, started_at=time.time() - 60, catalog_workflow_ids=["a"]
)
on_session_end("prod_1", "u1", snapshot, storage=storage, summary="done")
"""
    done = _run_script(body, tmp_path, recording_http_server.url)
    assert done.returncode == 0, done.stderr
    events = [
        event.get("event")
        for request in recording_http_server.wait_for_requests(1, timeout=10)
        for event in (request.json or {}).get("batch", [])
    ]
    assert sorted(events) == ["$set", "$set", "autoplay_session_captured"]


def test_a_pre_fork_server_worker_exits_cleanly_and_the_master_still_flushes(
    redis_url: str, tmp_path: Path
) -> None:
    """Like gunicorn --preload: the master built the manager; a worker forks, calls, exits normally."""
    out = tmp_path / "sink.jsonl"
    body = (
        HOST
        + """
from autoplay_obs.errors import ConfigurationError

pid = os.fork()
if pid == 0:
    try:
        on_session_start("prod_1", "u2", "s1", storage=storage)
        print("child: no error")
    except ConfigurationError as exc:
        print("child: ConfigurationError", "fork" in str(exc))
    sys.exit(0)  # the normal exit path: atexit hooks run in the child too
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status))
"""
    )
    done = _run_script(body, tmp_path, redis_url, str(out))
    assert done.returncode == 0, done.stderr
    assert "child: ConfigurationError True" in done.stdout
    assert "child exit 0" in done.stdout
    assert sorted(out.read_text().splitlines()) == SINK_WRITES
