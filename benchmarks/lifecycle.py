"""Session start+end pairs against one real local Redis: ours vs the reference vs a floor.

Every user starts from the same state of the cell's size (``benchmarks/_data.py``:
~5, ~30 or ~300 KB) and a stored onboarding snapshot, so reads move realistic
bytes. In a cell, U users run sequential pairs concurrently on one event loop,
for ``--seconds`` (each user starts pairs until then) or exactly ``--pairs``
each. The variants are in ``benchmarks/_variants.py``.

Cells: every ``--sizes`` at ``--sizes-at-users`` users, and every ``--users``
at ``--users-at-size`` KB (by default 5/30/300 KB at 32 users, and 1/32/256
users at 30 KB). Per cell and variant it reports:

- pairs/s, and latency quantiles per pair;
- client CPU per pair: ``time.process_time()`` over the timed loop / pairs;
- server CPU per pair: Redis' ``INFO cpu`` (used_cpu_sys + used_cpu_user) before
  and after the timed loop / pairs (it includes the server's own timer work);
- cmds/pair from Redis' command statistics, so a variant that skips or adds
  round trips shows it (the reference stops reading the onboarding snapshot once
  session 1 falls out of its 50-entry index).

The timed users first run ``--warmup`` untimed pairs each, so every variant
is timed in its steady state: connections open, caches filled (ours keeps
each user's last document, so its first pair per user reads more), the
onboarding snapshot read once. Each number is the median over ``--repeat``
runs; the rounds interleave the variants, so load drifting on a shared
machine hits all alike. Each run gets its own product id and a FLUSHALL.
``--profile`` adds a cProfile run of ours at 30 KB and 32 users, attributed
to buckets (``benchmarks/_profile.py``).

Run from the repository root: ``python -m benchmarks.lifecycle``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._data import DEFAULT_SIZE_KB, T0, BenchData, build
from benchmarks._profile import breakdown, print_breakdown
from benchmarks._redis import local_redis
from benchmarks._results import Result, median, print_flatness, print_ratios, print_results
from benchmarks._variants import (
    ONBOARDING_SESSION_ID,
    VARIANTS,
    Runner,
    VariantUnavailable,
    make_runner,
    session_key,
    state_key,
)


@dataclass(frozen=True)
class Plan:
    """How long each user drives: exactly ``pairs`` pairs, or new pairs until ``seconds`` passed."""

    pairs: int | None
    seconds: float
    warmup: int


# ------------------------------------------------------------------------------ one run


class _LogCounter(logging.Handler):
    """Counts warnings and errors logged anywhere: a variant that fails pairs quietly shows it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.first = self.first or record.getMessage()


LOGGED = _LogCounter()


def _user_doc(template: dict[str, Any], user_id: str) -> bytes:
    return json.dumps({**template, "user_id": user_id}, separators=(",", ":")).encode()


async def _seed(client: redis.asyncio.Redis, product_id: str, user_ids: list[str], data: BenchData) -> None:
    """Every user: the state and the stored onboarding (session 1) snapshot."""
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
            pipe.set(state_key(product_id, user_id), _user_doc(state_doc, user_id))
            key = session_key(product_id, user_id, ONBOARDING_SESSION_ID)
            pipe.set(key, _user_doc(onboarding_doc, user_id))
        await pipe.execute()


async def _total_calls(client: redis.asyncio.Redis) -> int:
    stats = await client.info("commandstats")
    skip = {"cmdstat_info", "cmdstat_config|resetstat", "cmdstat_config"}
    return sum(int(v["calls"]) for k, v in stats.items() if k not in skip)


async def _server_cpu(client: redis.asyncio.Redis) -> float:
    cpu = await client.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


async def _drive(
    runner: Runner, user_ids: list[str], tag: str, pairs: int | None, deadline: float = 0.0
) -> list[float]:
    """Latencies of every pair; each user runs ``pairs`` pairs, or starts new ones until ``deadline``."""

    def more(done: int) -> bool:
        return done < pairs if pairs is not None else done == 0 or time.perf_counter() < deadline

    async def user(user_id: str) -> list[float]:
        out: list[float] = []
        while more(len(out)):
            t = time.perf_counter()
            await runner.pair(user_id, f"{tag}_{len(out):05d}")
            out.append(time.perf_counter() - t)
        return out

    per_user = await asyncio.gather(*(user(u) for u in user_ids))
    return [lat for lats in per_user for lat in lats]


async def run_one(
    url: str, variant: str, users: int, data: BenchData, plan: Plan, profiler: cProfile.Profile | None = None
) -> Result:
    admin = redis.asyncio.Redis.from_url(url)
    try:
        await admin.flushall()
        product_id = f"bench_{variant}_u{users}"
        user_ids = [f"user_{k:03d}" for k in range(users)]
        await _seed(admin, product_id, user_ids, data)
        runner = make_runner(variant, url, product_id, data, users)
        try:
            await _drive(runner, user_ids, "warm", plan.warmup)  # open connections, fill caches
            await admin.config_resetstat()
            logged0 = LOGGED.count
            server0, cpu0, t0 = await _server_cpu(admin), time.process_time(), time.perf_counter()
            if profiler is not None:
                profiler.enable()
            latencies = await _drive(runner, user_ids, "sess", plan.pairs, t0 + plan.seconds)
            if profiler is not None:
                profiler.disable()
            seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            logged = LOGGED.count - logged0
            server = await _server_cpu(admin) - server0
            commands = await _total_calls(admin)
        finally:
            await runner.aclose()
        await admin.flushall()
    finally:
        await admin.aclose()
    pairs = len(latencies)
    return Result(variant, data.size_kb, users, pairs, seconds, latencies, commands, cpu, server, logged)


# ------------------------------------------------------------------------------ main


def _cells(args: argparse.Namespace) -> list[tuple[float, int]]:
    cells = [(size, args.sizes_at_users) for size in args.sizes]
    cells += [(args.users_at_size, users) for users in args.users]
    return list(dict.fromkeys(cells))


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cpus"


async def _profile(url: str, args: argparse.Namespace, plan: Plan, data: BenchData) -> None:
    users = args.sizes_at_users
    plain = await run_one(url, "ours", users, data, plan)
    profiler = cProfile.Profile(time.process_time)
    profiled = await run_one(url, "ours", users, data, plan, profiler)
    print(
        f"\nclient CPU breakdown of ours at {data.size_kb:g}K, {users} users "
        f"(cProfile, process time; unprofiled {plain.client_us:.0f} us/pair, "
        f"profiled {profiled.client_us:.0f} us/pair)"
    )
    print_breakdown(breakdown(profiler, profiled.pairs), plain.client_us)


async def _main(args: argparse.Namespace, url: str) -> None:
    logging.getLogger().addHandler(LOGGED)  # also keeps the reference's tracebacks off the tables
    plan = Plan(args.pairs, args.seconds, args.warmup)
    cells = _cells(args)
    data = {size: build(size_kb=size) for size in dict.fromkeys([*(s for s, _ in cells), args.users_at_size])}
    pace = f"{args.pairs} pairs per user" if args.pairs is not None else f"{args.seconds:g} s per run"
    print(f"redis {url}; {pace}, median of {args.repeat} run(s); {_load()}")
    for size, d in data.items():
        kb = len(d.state_bytes) / 1000, len(d.snapshot_bytes) / 1000
        print(f"  {size:g}K: state {kb[0]:.1f} KB, snapshot {kb[1]:.1f} KB")
    variants: list[str] = []
    for variant in args.variants:
        try:  # probe imports once, so a missing variant is reported up front
            await make_runner(variant, url, "probe", data[args.users_at_size]).aclose()
            variants.append(variant)
        except VariantUnavailable as exc:
            print(f"skipping variant {variant!r}: {exc}")
    runs: dict[tuple[float, int, str], list[Result]] = {}
    started = time.perf_counter()
    for _ in range(args.repeat):
        for size, users in cells:
            for variant in variants:
                try:
                    result = await run_one(url, variant, users, data[size], plan)
                except redis.RedisError as exc:  # one failed run must not lose the others
                    print(f"  {variant} at {size:g}K, {users} users failed: {exc!r}")
                    continue
                runs.setdefault((size, users, variant), []).append(result)
    results = [median(cell) for cell in runs.values()]
    if LOGGED.count:
        print(f"{LOGGED.count} warnings or errors were logged, the first: {LOGGED.first}")
    print(f"measured in {time.perf_counter() - started:.0f} s; {_load()}\n")
    print_results(results)
    print()
    print_ratios(results)
    print("\nper-pair client CPU across users (should be flat):")
    print_flatness(results, args.users_at_size)
    if args.profile:
        await _profile(url, args, plan, data[args.users_at_size])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--sizes", type=float, nargs="+", default=[5, DEFAULT_SIZE_KB, 300], help="state KB")
    parser.add_argument("--sizes-at-users", type=int, default=32, help="concurrent users of the size sweep")
    parser.add_argument("--users", type=int, nargs="+", default=[1, 32, 256], help="concurrent users")
    parser.add_argument(
        "--users-at-size", type=float, default=DEFAULT_SIZE_KB, help="state KB of the users sweep"
    )
    parser.add_argument("--seconds", type=float, default=0.5, help="timed seconds per run (unless --pairs)")
    parser.add_argument("--pairs", type=int, help="exactly this many sequential pairs per user instead")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    parser.add_argument("--warmup", type=int, default=1, help="untimed pairs per user first")
    parser.add_argument("--profile", action="store_true", help="also break down ours' client CPU")
    parser.add_argument("--redis-url", help="use this server instead of starting one (it gets FLUSHALLed!)")
    args = parser.parse_args(argv)
    if args.redis_url:
        asyncio.run(_main(args, args.redis_url))
        return
    with local_redis() as url:
        asyncio.run(_main(args, url))


if __name__ == "__main__":
    main()
