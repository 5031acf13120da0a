"""RedisStorageAdapter set-up: URL schemes, span description, and the missing-extra error."""

from __future__ import annotations

import sys

import pytest
import redis.asyncio

from autoplay_obs.errors import ConfigurationError, MissingDependencyError
from autoplay_obs.storage import RedisStorageAdapter


@pytest.mark.parametrize(
    ("url", "connection_class", "described"),
    [
        (
            "redis://cache.internal:6380/2",
            redis.asyncio.Connection,
            {"server.address": "cache.internal", "server.port": 6380, "db.namespace": "2"},
        ),
        (
            "rediss://secure.internal:6390/0",
            redis.asyncio.SSLConnection,
            {"server.address": "secure.internal", "server.port": 6390, "db.namespace": "0"},
        ),
        (
            "unix:///run/redis/redis.sock?db=3",
            redis.asyncio.UnixDomainSocketConnection,
            {"server.address": "/run/redis/redis.sock", "db.namespace": "3"},
        ),
    ],
)
async def test_each_url_scheme_builds_the_right_connection(
    url: str, connection_class: type, described: dict[str, object]
) -> None:
    adapter = RedisStorageAdapter(redis_url=url)  # connects lazily: nothing is dialled here
    try:
        assert adapter._redis.connection_pool.connection_class is connection_class
        assert adapter.describe() == {"db.system.name": "redis", **described}
    finally:
        await adapter.aclose()


def test_a_url_redis_cannot_parse_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="bad redis_url"):
        RedisStorageAdapter(redis_url="http://not-redis:80")


def test_without_redis_py_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)  # import now raises ImportError
    with pytest.raises(MissingDependencyError, match=r'pip install "autoplay-obs\[redis\]"') as caught:
        RedisStorageAdapter(redis_url="redis://localhost")
    assert isinstance(caught.value, ImportError) and caught.value.extra == "redis"


async def test_a_redis_cluster_client_is_accepted() -> None:
    from redis.asyncio.cluster import RedisCluster

    cluster = RedisCluster(host="127.0.0.1", port=7000)  # nothing is dialled before the first command
    adapter = RedisStorageAdapter(client=cluster)
    assert adapter.describe() == {"db.system.name": "redis"}
    assert adapter.bundles_freeze is False  # a cluster pipeline reaches nodes in no set order
