"""Shared fixtures: real servers the suite starts itself, plus fakes for unit tests.

Decisions:

- A real ``redis-server`` (from PATH, or ``$AUTOPLAY_REDIS_SERVER``) runs once per
  test session on a free 127.0.0.1 port and a unix socket in its own tmp dir,
  with persistence off. Tests may ``kill()`` it to simulate Redis dying mid-run;
  ``start()`` brings it back on the same port and socket, and the function-scoped
  ``redis_url`` fixture restarts it if a previous test left it dead.
- A missing server binary skips the test locally but FAILS it when
  ``AUTOPLAY_REQUIRE_SERVERS=1`` (CI). In that mode any test marked
  ``redis_server`` or ``prometheus`` (markers are added automatically to tests
  using the server fixtures) that ends up skipped is reported as failed, so CI
  can never pass green while the real-server tests silently did not run.
- ``recording_http_server`` is a threaded stdlib HTTP server that records what
  the official analytics SDKs send and answers per path with a chosen status,
  delay (a hang) or a dropped connection.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fakeredis.aioredis
import pytest
import redis
import redis.asyncio

from autoplay_obs.user_adoption_state import SessionSnapshot, UserAdoptionState

REQUIRE_SERVERS_ENV = "AUTOPLAY_REQUIRE_SERVERS"
SERVER_MARKERS = ("redis_server", "prometheus")
# Fixtures (exact names, then name prefixes) that imply a real server; tests using them
# get the marker automatically, so enforcement cannot miss a test that forgot it.
_FIXTURE_MARKERS = {"redis_server": "redis_server", "redis_url": "redis_server"}
_FIXTURE_PREFIX_MARKERS = {"prometheus": "prometheus"}


def servers_required() -> bool:
    """CI sets AUTOPLAY_REQUIRE_SERVERS=1: a missing real server is then a failure."""
    return os.environ.get(REQUIRE_SERVERS_ENV, "") == "1"


def find_server_binary(name: str, env_var: str | None = None) -> str:
    """Path of a server binary, or skip (locally) / fail (CI) with a clear message."""
    override = os.environ.get(env_var) if env_var else None
    path = override or shutil.which(name)
    if path and os.access(path, os.X_OK):
        return path
    message = (
        f"`{name}` not found on PATH"
        + (f" (nor via ${env_var})" if env_var else "")
        + f"; install it (e.g. `apt-get install {name}`, or run `bash .ci/run`)."
    )
    if servers_required():
        pytest.fail(f"{message} {REQUIRE_SERVERS_ENV}=1 forbids skipping.", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A port the OS says is free right now (small race accepted; start() retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- redis


class RedisServer:
    """One ``redis-server`` process that tests can kill and restart on the same port."""

    def __init__(
        self, binary: str, workdir: Path, port: int | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.extra_args = extra_args
        # Short path: unix socket paths are limited to ~107 bytes.
        self.socket_path = str(workdir / "redis.sock")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart) on the same port and socket; return once PING answers."""
        if self.running:
            return
        log = self.workdir / "redis.log"
        # fmt: off
        args = [
            self.binary,
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--unixsocket", self.socket_path, "--unixsocketperm", "700",
            "--dir", str(self.workdir), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--protected-mode", "no", "--logfile", str(log),
            *self.extra_args,
        ]
        # fmt: on
        stderr = self.workdir / "redis.stderr"  # errors before the logfile opens land here
        with stderr.open("ab") as err:
            self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                output = stderr.read_text() + (log.read_text() if log.exists() else "")
                raise RuntimeError(
                    f"redis-server exited with {self._proc.returncode} on port {self.port}:\n{output[-2000:]}"
                )
            if self._ping():
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port} in {timeout}s")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown, no goodbye to clients."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(timeout=10)
        self._proc = None

    def flushall(self) -> None:
        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5) as client:
            client.flushall()

    def client(self, **kwargs: Any) -> redis.asyncio.Redis:
        """A fresh async client; the caller closes it (``await client.aclose()``)."""
        return redis.asyncio.Redis.from_url(self.url, **kwargs)

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's real redis-server; skips locally / fails in CI if it is missing."""
    binary = find_server_binary("redis-server", env_var="AUTOPLAY_REDIS_SERVER")
    workdir = Path(tempfile.mkdtemp(prefix="ap-redis-"))
    server: RedisServer | None = None
    try:
        for attempt in range(3):  # the free port can be taken between probe and bind
            server = RedisServer(binary, workdir)
            try:
                server.start()
                break
            except RuntimeError:
                server.kill()
                if attempt == 2:
                    raise
        assert server is not None
        yield server
    finally:
        if server is not None:
            server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of a running, empty Redis (restarted if an earlier test killed it)."""
    redis_server.start()
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
async def fake_redis() -> AsyncIterator[fakeredis.aioredis.FakeRedis]:
    """A private in-process Redis per test; Lua scripting works because lupa is installed."""
    client = fakeredis.aioredis.FakeRedis()
    try:
        yield client
    finally:
        await client.aclose()


# ---------------------------------------------------------------- recording HTTP server


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it; ``body`` is gunzipped when it was gzip."""

    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    body: bytes
    json: Any
    received_at: float

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


@dataclass
class Behaviour:
    """How the server answers a path: status, optional hang, or a dropped connection."""

    status: int = 200
    delay: float = 0.0
    close: bool = False
    body: bytes | None = None  # default: JSON both PostHog and Amplitude SDKs accept
    headers: dict[str, str] = field(default_factory=dict)


class _QuietHTTPServer(ThreadingHTTPServer):
    """Dropped and reset connections are what these tests provoke: not worth a traceback."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class RecordingHTTPServer:
    """A real HTTP server on 127.0.0.1 that records requests; stoppable on a fixed port."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self._behaviours: dict[str | None, Behaviour] = {}
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_behaviour(
        self,
        path: str | None = None,
        *,
        status: int = 200,
        delay: float = 0.0,
        close: bool = False,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer ``path`` (exact, query ignored; ``None`` = every other path) this way."""
        with self._lock:
            self._behaviours[path] = Behaviour(status, delay, close, body, dict(headers or {}))

    def reset_behaviour(self) -> None:
        with self._lock:
            self._behaviours.clear()

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def wait_for_requests(
        self, count: int = 1, timeout: float = 10.0, path: str | None = None
    ) -> list[RecordedRequest]:
        """Block until ``count`` requests (to ``path`` if given) arrived; SDKs send async."""

        def matching() -> list[RecordedRequest]:
            return [r for r in self.requests if path is None or _strip_query(r.path) == path]

        with self._arrived:
            if not self._arrived.wait_for(lambda: len(matching()) >= count, timeout):
                raise TimeoutError(f"expected {count} request(s), got {len(matching())}")
            return matching()

    def start(self) -> None:
        """Listen again (on the same port after a stop(), so clients see it come back)."""
        if self._server is not None:
            return
        self._stopping.clear()
        server = _QuietHTTPServer(("127.0.0.1", self.port), self._handler_class())
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: new connections are refused; hanging handlers are released."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:  # keep-alive connections would otherwise keep being served
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def _record(self, request: RecordedRequest) -> None:
        with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()

    def _behaviour_for(self, path: str) -> Behaviour:
        with self._lock:
            return self._behaviours.get(path) or self._behaviours.get(None) or Behaviour()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with owner._lock:
                    owner._connections.add(self.connection)

            def finish(self) -> None:
                with owner._lock:
                    owner._connections.discard(self.connection)
                super().finish()

            def _read_body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                raw = self._read_body()
                headers = dict(self.headers.items())
                owner._record(_decode_request(self.command, self.path, headers, raw))
                behaviour = owner._behaviour_for(_strip_query(self.path))
                if behaviour.delay:
                    owner._stopping.wait(behaviour.delay)
                if behaviour.close or owner._stopping.is_set():
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                body = behaviour.body
                if body is None:
                    body = json.dumps({"code": behaviour.status, "status": 1}).encode()
                self.send_response(behaviour.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in behaviour.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler


def _strip_query(path: str) -> str:
    return path.split("?", 1)[0]


def _decode_request(method: str, path: str, headers: dict[str, str], raw: bytes) -> RecordedRequest:
    body = raw
    encoding = next((v for k, v in headers.items() if k.lower() == "content-encoding"), "")
    if "gzip" in encoding.lower() or raw[:2] == b"\x1f\x8b":
        with contextlib.suppress(OSError, EOFError):
            body = gzip.decompress(raw)
    try:
        parsed: Any = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return RecordedRequest(method, path, headers, raw, body, parsed, time.time())


@pytest.fixture
def recording_http_server() -> Iterator[RecordingHTTPServer]:
    """A running recording server; stopped (and hanging handlers released) afterwards."""
    server = RecordingHTTPServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ----------------------------------------------------------- require-servers enforcement


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests using a real-server fixture get its marker, so enforcement cannot miss them."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        wanted = {m for name, m in _FIXTURE_MARKERS.items() if name in fixtures}
        wanted |= {
            m for prefix, m in _FIXTURE_PREFIX_MARKERS.items() if any(f.startswith(prefix) for f in fixtures)
        }
        for marker in wanted:
            if item.get_closest_marker(marker) is None:
                item.add_marker(marker)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """With AUTOPLAY_REQUIRE_SERVERS=1, a skipped real-server test is a failure."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not (report.skipped and servers_required()) or hasattr(report, "wasxfail"):
        return
    markers = [m for m in SERVER_MARKERS if item.get_closest_marker(m) is not None]
    if not markers:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"{REQUIRE_SERVERS_ENV}=1 but this {'/'.join(markers)} test was skipped: {reason}"


# ---------------------------------------------------------------- session snapshots

SNAPSHOT_T0 = 1_700_000_000.0


@pytest.fixture
def make_snapshot() -> Callable[..., SessionSnapshot]:
    """A snapshot factory with explicit, distinct timestamps (no wall-clock races)."""

    def make(
        session_id: str,
        *,
        number: int = 1,
        captured_at: float | None = None,
        user_id: str = "u_1",
        state: UserAdoptionState | None = None,
        catalog: tuple[str, ...] = ("create_project", "invite_team"),
    ) -> SessionSnapshot:
        captured = SNAPSHOT_T0 + 60.0 * number if captured_at is None else captured_at
        return SessionSnapshot.from_adoption_state(
            state or UserAdoptionState(user_id=user_id),
            session_id=session_id,
            session_number=number,
            started_at=captured - 30.0,
            catalog_workflow_ids=list(catalog),
            now=captured,
        )

    return make
