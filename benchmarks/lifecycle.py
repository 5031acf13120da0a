"""Session start+end pairs against one real local Redis: ours vs the reference vs a floor.

A *pair* is what an agent does per session: ``on_session_start``, build the
snapshot with ``SessionSnapshot.from_adoption_state``, ``on_session_end`` (with a
precomputed summary). Every user starts from the same ~30 KB long-time-user
state (``benchmarks/_data.py``) and an onboarding snapshot is stored, so reads
move realistic bytes. Each of U users runs N sequential pairs; the users run
concurrently on one event loop. Variants:

- reference: ``autoplay_sdk.storage`` 0.13.0 (``StorageManager([RedisStorageAdapter])``).
- floor: the reference's six commands per pair (GET state, SET state, GET
  onboarding snapshot, SET NX snapshot, GET state, SET state) sent bare with
  ``redis.asyncio`` and pre-encoded payloads: no decoding, no model work, no
  safety. Nothing correct can be cheaper per round trip.
- ours: ``autoplay_obs.storage`` through the same seed API.

``cmds/pair`` comes from Redis' own command statistics, so a variant that
skips or adds round trips shows it (the reference stops reading the onboarding
snapshot once session 1 falls out of its 50-entry index, i.e. after the first
pair for this data). Each variant gets its own product id and a FLUSHALL.

Run from the repository root: ``python -m benchmarks.lifecycle`` (flags: --pairs,
--users, --variants, --repeat, --redis-url).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._data import T0, BenchData, build
from benchmarks._redis import local_redis

VARIANTS = ("reference", "floor", "ours")
SUMMARY = "Completed the core workflows; still unsure about column configuration."
ONBOARDING_SESSION_ID = "sess_0001"  # session 1 of the seeded index


class VariantUnavailable(Exception):
    """The variant's package cannot be imported; the run reports it and goes on."""


class Runner(Protocol):
    async def pair(self, user_id: str, session_id: str) -> None: ...

    async def aclose(self) -> None: ...


def _state_key(product_id: str, user_id: str) -> str:
    return f"autoplay:user:{product_id}:{user_id}:state"


def _session_key(product_id: str, user_id: str, session_id: str) -> str:
    return f"autoplay:user:{product_id}:{user_id}:session:{session_id}"


# ------------------------------------------------------------------------------ variants


class ReferenceRunner:
    def __init__(self, url: str, product_id: str, catalog: list[str]) -> None:
        try:
            from autoplay_sdk import storage as ref
            from autoplay_sdk.user_adoption_state import SessionSnapshot
        except ImportError as exc:
            raise VariantUnavailable(f"autoplay_sdk not importable: {exc}") from exc
        self._ref = ref
        self._snapshot_cls = SessionSnapshot
        self._adapter = ref.RedisStorageAdapter(url)
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
    """The reference's command sequence with nothing but the network in the way."""

    def __init__(self, url: str, product_id: str, state: bytes, snapshot: bytes) -> None:
        self._redis = redis.asyncio.Redis.from_url(url)
        self._product_id = product_id
        self._state = state
        self._snapshot = snapshot

    async def pair(self, user_id: str, session_id: str) -> None:
        r, p = self._redis, self._product_id
        state_key = _state_key(p, user_id)
        await r.get(state_key)
        await r.set(state_key, self._state)
        await r.get(_session_key(p, user_id, ONBOARDING_SESSION_ID))
        await r.set(_session_key(p, user_id, session_id), self._snapshot, nx=True)
        await r.get(state_key)
        await r.set(state_key, self._state)

    async def aclose(self) -> None:
        await self._redis.aclose()


def make_runner(variant: str, url: str, product_id: str, data: BenchData) -> Runner:
    catalog = [*data.snapshot.completed_workflow_ids, *data.snapshot.in_progress_workflow_ids]
    catalog += data.snapshot.untouched_workflow_ids
    if variant == "reference":
        return ReferenceRunner(url, product_id, catalog)
    if variant == "ours":
        return OursRunner(url, product_id, catalog)
    if variant == "floor":
        return FloorRunner(url, product_id, data.state_bytes, data.snapshot_bytes)
    raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


# ------------------------------------------------------------------------------ harness


@dataclass(frozen=True)
class Result:
    variant: str
    users: int
    pairs: int
    seconds: float
    latencies: list[float]
    commands: int

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds

    def quantile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


def _user_doc(template: dict[str, Any], user_id: str) -> bytes:
    return json.dumps({**template, "user_id": user_id}, separators=(",", ":")).encode()


async def _seed(client: redis.asyncio.Redis, product_id: str, user_ids: list[str], data: BenchData) -> None:
    """Every user: the 30 KB state and the stored onboarding (session 1) snapshot."""
    state_doc = json.loads(data.state_bytes)
    onboarding_doc = {
        **json.loads(data.snapshot_bytes),
        "session_id": ONBOARDING_SESSION_ID,
        "session_number": 1,
        "started_at": T0 + 86_400.0,
        "captured_at": T0 + 86_400.0 + 1_800.0,
        "duration_s": 1_800.0,
    }
    async with client.pipeline(transaction=False) as pipe:
        for user_id in user_ids:
            pipe.set(_state_key(product_id, user_id), _user_doc(state_doc, user_id))
            key = _session_key(product_id, user_id, ONBOARDING_SESSION_ID)
            pipe.set(key, _user_doc(onboarding_doc, user_id))
        await pipe.execute()


async def _total_calls(client: redis.asyncio.Redis) -> int:
    stats = await client.info("commandstats")
    skip = {"cmdstat_info", "cmdstat_config|resetstat", "cmdstat_config"}
    return sum(int(v["calls"]) for k, v in stats.items() if k not in skip)


async def _drive(runner: Runner, user_ids: list[str], pairs: int, tag: str) -> list[float]:
    async def user(user_id: str) -> list[float]:
        out: list[float] = []
        for i in range(pairs):
            t = time.perf_counter()
            await runner.pair(user_id, f"{tag}_{i:05d}")
            out.append(time.perf_counter() - t)
        return out

    per_user = await asyncio.gather(*(user(u) for u in user_ids))
    return [lat for lats in per_user for lat in lats]


async def run_one(url: str, variant: str, users: int, pairs: int, warmup: int, data: BenchData) -> Result:
    admin = redis.asyncio.Redis.from_url(url)
    try:
        await admin.flushall()
        product_id = f"bench_{variant}_u{users}"
        user_ids = [f"user_{k:03d}" for k in range(users)]
        warm_ids = [f"warm_{k:03d}" for k in range(users)]
        await _seed(admin, product_id, user_ids + warm_ids, data)
        runner = make_runner(variant, url, product_id, data)
        try:
            await _drive(runner, warm_ids, warmup, "warm")  # open connections, fill caches
            await admin.config_resetstat()
            t0 = time.perf_counter()
            latencies = await _drive(runner, user_ids, pairs, "sess")
            seconds = time.perf_counter() - t0
            commands = await _total_calls(admin)
        finally:
            await runner.aclose()
        await admin.flushall()
    finally:
        await admin.aclose()
    return Result(variant, users, users * pairs, seconds, latencies, commands)


def _median_run(results: list[Result]) -> Result:
    return sorted(results, key=lambda r: r.pairs_per_s)[len(results) // 2]


def _print_table(results: list[Result], variants: list[str], users_list: list[int]) -> None:
    header = f"{'variant':<10} {'users':>5} {'pairs':>6} {'pairs/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
    print(header + f" {'cmds/pair':>9}")
    print("-" * (len(header) + 10))
    for r in results:
        print(
            f"{r.variant:<10} {r.users:>5} {r.pairs:>6} {r.pairs_per_s:>9.0f} "
            f"{r.quantile_ms(0.5):>8.2f} {r.quantile_ms(0.99):>8.2f} {r.commands / r.pairs:>9.2f}"
        )
    by_key = {(r.variant, r.users): r for r in results}
    if "ours" not in variants:
        return
    print()
    print("ratios (ours / other): pairs/s higher is better, latency lower is better")
    for other in ("reference", "floor"):
        for users in users_list:
            ours, base = by_key.get(("ours", users)), by_key.get((other, users))
            if ours is None or base is None:
                continue
            print(
                f"  ours/{other:<9} users={users:<3} pairs/s x{ours.pairs_per_s / base.pairs_per_s:.2f}"
                f"  p50 x{ours.quantile_ms(0.5) / base.quantile_ms(0.5):.2f}"
                f"  p99 x{ours.quantile_ms(0.99) / base.quantile_ms(0.99):.2f}"
            )


async def _main(args: argparse.Namespace, url: str) -> None:
    data = build()
    print(
        f"redis {url}; state {len(data.state_bytes) / 1024:.1f} KiB, "
        f"snapshot {len(data.snapshot_bytes) / 1024:.1f} KiB; "
        f"{args.pairs} pairs per user, median of {args.repeat} run(s)"
    )
    variants: list[str] = []
    for variant in args.variants:
        try:  # probe imports once, so a missing variant is reported up front
            await (make_runner(variant, url, "probe", data)).aclose()
            variants.append(variant)
        except VariantUnavailable as exc:
            print(f"skipping variant {variant!r}: {exc}")
    # Rounds interleave the variants, so load drifting on a shared machine hits all alike.
    runs: dict[tuple[int, str], list[Result]] = {}
    for _ in range(args.repeat):
        for users in args.users:
            for variant in variants:
                result = await run_one(url, variant, users, args.pairs, args.warmup, data)
                runs.setdefault((users, variant), []).append(result)
    results = [_median_run(cell) for cell in runs.values()]
    print()
    _print_table(results, variants, args.users)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=200, help="sequential pairs per user")
    parser.add_argument("--users", type=int, nargs="+", default=[1, 32], help="concurrent users")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    parser.add_argument("--warmup", type=int, default=10, help="untimed pairs per user first")
    parser.add_argument("--redis-url", help="use this server instead of starting one (it gets FLUSHALLed!)")
    args = parser.parse_args(argv)
    if args.redis_url:
        asyncio.run(_main(args, args.redis_url))
        return
    with local_redis() as url:
        asyncio.run(_main(args, url))


if __name__ == "__main__":
    main()
