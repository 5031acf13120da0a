"""Fixtures for the real-server storage suites: our adapter, a raw client, snapshots."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from autoplay_obs.storage import RedisStorageAdapter


@pytest.fixture
async def adapter(redis_url: str) -> AsyncIterator[RedisStorageAdapter]:
    """Our Redis primary on the suite's real, empty server."""
    a = RedisStorageAdapter(redis_url=redis_url)
    try:
        yield a
    finally:
        await a.aclose()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client for writing and reading the stored bytes directly."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
