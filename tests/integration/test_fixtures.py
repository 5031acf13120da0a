"""The shared fixtures do what other tests rely on: real kills, same-port restarts,
a working unix socket, and an HTTP server that records and misbehaves on request."""

from __future__ import annotations

import gzip
import http.client
import json
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import pytest
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

if TYPE_CHECKING:
    import fakeredis.aioredis

    from tests.conftest import RecordingHTTPServer, RedisServer


@pytest.mark.redis_server
async def test_redis_kill_then_start_on_same_port(redis_server: RedisServer, redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, retry=Retry(NoBackoff(), 0))
    try:
        await client.set("k", "v")
        port = redis_server.port

        redis_server.kill()
        with pytest.raises(redis.exceptions.ConnectionError):
            await client.ping()

        redis_server.start()
        assert redis_server.port == port
        assert redis_server.url == redis_url
        assert await client.ping() is True
        assert await client.get("k") is None  # persistence is off: a crash loses data
    finally:
        await client.aclose()


@pytest.mark.redis_server
async def test_redis_url_restarts_a_killed_server(redis_server: RedisServer) -> None:
    # Leaves the server dead on purpose; the next test's redis_url must revive it.
    redis_server.kill()
    assert not redis_server.running


@pytest.mark.redis_server
async def test_redis_url_fixture_revives_and_flushes(redis_url: str, redis_server: RedisServer) -> None:
    # Runs after the test above left the server dead.
    assert redis_server.running
    client = redis_server.client()
    try:
        assert await client.dbsize() == 0
    finally:
        await client.aclose()


@pytest.mark.redis_server
async def test_redis_unix_socket(redis_server: RedisServer, redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.unix_url)
    try:
        await client.set("via-socket", "1")
        assert await client.get("via-socket") == b"1"
    finally:
        await client.aclose()
    tcp = redis_server.client()
    try:
        assert await tcp.get("via-socket") == b"1"  # same server behind both
    finally:
        await tcp.aclose()


async def test_fake_redis_runs_lua(fake_redis: fakeredis.aioredis.FakeRedis) -> None:
    assert await fake_redis.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, "a", "b")
    assert await fake_redis.get("a") == b"b"


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float = 5.0) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return int(response.status)


def test_recording_server_records_json_and_gzip(recording_http_server: RecordingHTTPServer) -> None:
    server = recording_http_server
    status = _post(
        f"{server.url}/batch/?v=1",
        json.dumps({"event": "x"}).encode(),
        {"Content-Type": "application/json", "X-Api-Key": "k"},
    )
    assert status == 200
    _post(
        f"{server.url}/2/httpapi",
        gzip.compress(b'{"events": [1]}'),
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    first, second = server.wait_for_requests(2)
    assert (first.method, first.path, first.json) == ("POST", "/batch/?v=1", {"event": "x"})
    assert first.header("x-api-key") == "k"
    assert second.json == {"events": [1]}
    assert second.raw_body[:2] == b"\x1f\x8b"


def test_recording_server_status_delay_close_and_refusal(
    recording_http_server: RecordingHTTPServer,
) -> None:
    server = recording_http_server
    server.set_behaviour("/fail", status=503)
    with pytest.raises(urllib.error.HTTPError) as info:
        _post(f"{server.url}/fail", b"{}", {})
    assert info.value.code == 503

    server.set_behaviour("/slow", delay=0.5)
    started = time.monotonic()
    assert _post(f"{server.url}/slow", b"{}", {}) == 200
    assert time.monotonic() - started >= 0.45

    server.set_behaviour("/hang", delay=30)
    with pytest.raises(TimeoutError):
        _post(f"{server.url}/hang", b"{}", {}, timeout=0.3)

    server.set_behaviour("/drop", close=True)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        _post(f"{server.url}/drop", b"{}", {})

    port = server.port
    server.stop()
    with pytest.raises(urllib.error.URLError) as refused:
        _post(f"{server.url}/anything", b"{}", {})
    assert isinstance(refused.value.reason, ConnectionRefusedError)
    server.start()
    assert server.port == port
    assert _post(f"{server.url}/anything", b"{}", {}) == 200
    assert [r.path for r in server.requests] == ["/fail", "/slow", "/hang", "/drop", "/anything"]


def test_recording_server_stop_cuts_keep_alive_connections(
    recording_http_server: RecordingHTTPServer,
) -> None:
    server = recording_http_server
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("POST", "/e", body=iter([b'{"a":', b"1}"]), encode_chunked=True)
        assert conn.getresponse().read() and server.requests[-1].json == {"a": 1}
        server.stop()
        # A pooled connection must not keep talking to a "stopped" server.
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            conn.request("POST", "/e", body=b"{}")
            conn.getresponse().read()
        assert len(server.requests) == 1  # nothing reached the stopped server
    finally:
        conn.close()
