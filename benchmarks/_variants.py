"""The three contenders of the lifecycle benchmark, each behind one ``pair()`` call.

- reference: ``autoplay_sdk.storage`` 0.13.0 (``StorageManager([RedisStorageAdapter])``).
- floor: the reference's six commands per pair (GET state, SET state, GET
  onboarding snapshot, SET NX snapshot, GET state, SET state) sent bare with
  ``redis.asyncio`` and pre-encoded payloads: no decoding, no model work, no
  safety. Nothing correct can be cheaper per round trip.
- ours: ``autoplay_obs.storage`` through the same seed API.

A *pair* is what an agent does per session: ``on_session_start``, build the
snapshot with ``SessionSnapshot.from_adoption_state``, ``on_session_end`` (with
a precomputed summary).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import redis.asyncio

from benchmarks._data import BenchData

__all__ = [
    "ONBOARDING_SESSION_ID",
    "VARIANTS",
    "Runner",
    "VariantUnavailable",
    "make_runner",
    "session_key",
    "state_key",
]

VARIANTS = ("reference", "floor", "ours")
SUMMARY = "Completed the core workflows; still unsure about column configuration."
ONBOARDING_SESSION_ID = "sess_0001"  # session 1 of the seeded index
FLOOR_CONNECTIONS = 64  # RedisStorageAdapter's default max_connections


class VariantUnavailable(Exception):
    """The variant's package cannot be imported; the run reports it and goes on."""


class Runner(Protocol):
    async def pair(self, user_id: str, session_id: str) -> None:
        """One session start+end for ``user_id``."""

    async def aclose(self) -> None:
        """Close the variant's connections."""


def state_key(product_id: str, user_id: str) -> str:
    return f"autoplay:user:{product_id}:{user_id}:state"


def session_key(product_id: str, user_id: str, session_id: str) -> str:
    return f"autoplay:user:{product_id}:{user_id}:session:{session_id}"


class ReferenceRunner:
    """The reference through its seed API.

    Its adapter builds a plain redis-py pool, which refuses the 101st
    concurrent command; the URL's ``max_connections`` lifts that to the user
    count, so 256 users measure pairs rather than refusals.
    """

    def __init__(self, url: str, product_id: str, catalog: list[str], users: int) -> None:
        try:
            from autoplay_sdk import storage as ref
            from autoplay_sdk.user_adoption_state import SessionSnapshot
        except ImportError as exc:
            raise VariantUnavailable(f"autoplay_sdk not importable: {exc}") from exc
        self._ref = ref
        self._snapshot_cls = SessionSnapshot
        self._adapter = ref.RedisStorageAdapter(f"{url}?max_connections={max(100, users)}")
        self._storage = ref.StorageManager([self._adapter])
        self._product_id = product_id
        self._catalog = catalog

    async def pair(self, user_id: str, session_id: str) -> None:
        started_at = time.time()
        state, _onboarding = await self._ref.on_session_start(
            self._product_id, user_id, session_id, self._storage
        )
        snapshot = self._snapshot_cls.from_adoption_state(
            state,
            session_id=session_id,
            session_number=state.sessions_count + 1,
            started_at=started_at,
            catalog_workflow_ids=self._catalog,
        )
        await self._ref.on_session_end(self._product_id, user_id, snapshot, self._storage, summary=SUMMARY)

    async def aclose(self) -> None:
        await self._adapter._redis.aclose()  # the reference exposes no close()


class OursRunner:
    def __init__(self, url: str, product_id: str, catalog: list[str]) -> None:
        try:
            from autoplay_obs import storage as ours
            from autoplay_obs.user_adoption_state import SessionSnapshot
        except ImportError as exc:
            raise VariantUnavailable(f"autoplay_obs.storage not importable yet: {exc}") from exc
        self._ours = ours
        self._snapshot_cls = SessionSnapshot
        self._adapter = ours.RedisStorageAdapter(redis_url=url)
        self._storage = ours.StorageManager([self._adapter])
        self._product_id = product_id
        self._catalog = catalog

    async def pair(self, user_id: str, session_id: str) -> None:
        started_at = time.time()
        state, _onboarding = await self._ours.on_session_start(
            self._product_id, user_id, session_id, self._storage
        )
        snapshot = self._snapshot_cls.from_adoption_state(
            state,
            session_id=session_id,
            session_number=state.sessions_count + 1,
            started_at=started_at,
            catalog_workflow_ids=self._catalog,
        )
        await self._ours.on_session_end(self._product_id, user_id, snapshot, self._storage, summary=SUMMARY)

    async def aclose(self) -> None:
        close: Callable[[], Awaitable[None]] | None = getattr(self._adapter, "aclose", None)
        if close is not None:
            await close()


class FloorRunner:
    """The reference's command sequence with nothing but the network in the way.

    Its pool is ours' default (a blocking pool of 64 connections): redis-py's
    plain pool refuses a 101st concurrent command, which 256 users reach.
    """

    def __init__(self, url: str, product_id: str, state: bytes, snapshot: bytes) -> None:
        pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=FLOOR_CONNECTIONS)
        self._redis = redis.asyncio.Redis.from_pool(pool)  # closes the pool with the client
        self._product_id = product_id
        self._state = state
        self._snapshot = snapshot

    async def pair(self, user_id: str, session_id: str) -> None:
        r, p = self._redis, self._product_id
        key = state_key(p, user_id)
        await r.get(key)
        await r.set(key, self._state)
        await r.get(session_key(p, user_id, ONBOARDING_SESSION_ID))
        await r.set(session_key(p, user_id, session_id), self._snapshot, nx=True)
        await r.get(key)
        await r.set(key, self._state)

    async def aclose(self) -> None:
        await self._redis.aclose()


def make_runner(variant: str, url: str, product_id: str, data: BenchData, users: int = 1) -> Runner:
    catalog = [*data.snapshot.completed_workflow_ids, *data.snapshot.in_progress_workflow_ids]
    catalog += data.snapshot.untouched_workflow_ids
    if variant == "reference":
        return ReferenceRunner(url, product_id, catalog, users)
    if variant == "ours":
        return OursRunner(url, product_id, catalog)
    if variant == "floor":
        return FloorRunner(url, product_id, data.state_bytes, data.snapshot_bytes)
    raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
