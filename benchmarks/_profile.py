"""Where ours spends client CPU per pair: a cProfile run attributed to a few buckets.

Decisions:
- The profiler's clock is ``time.process_time``, so waiting on the socket
  costs nothing and the buckets add up to client CPU, like the tables.
- A function either names its bucket (``classify``: by package or by name) or
  inherits one: its self time goes up the caller edges cProfile keeps (each
  edge's share of the time), through other unnamed functions, to the nearest
  named caller. So ``msgspec.structs.replace`` called from ``copy()`` is copy,
  ``socket.send`` called from redis-py is redis-py, and the opentelemetry API
  called from our hooks is telemetry. cProfile keeps edges, not stacks, so
  this is exact for a function with one kind of caller and a proportional
  split otherwise.
- Our own functions count as "lifecycle" unless they are copy, codec or
  telemetry; a named function is its own bucket even under a telemetry
  wrapper (``traced_session`` wraps the whole lifecycle call).
- Time with no named caller at all (the event loop, reading replies off the
  socket into the stream buffer) is "asyncio/other".
- cProfile slows every call by a similar constant, which inflates small
  functions most; shares are printed next to the profiled microseconds and
  applied to the unprofiled client CPU per pair for a scaled estimate.
"""

from __future__ import annotations

import cProfile
import functools
import pstats
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

import autoplay_obs

__all__ = ["BUCKETS", "Breakdown", "breakdown", "print_breakdown"]

BUCKETS = ("copy", "encode", "decode", "redis-py", "telemetry", "lifecycle", "harness", "asyncio/other")
_OTHER = "asyncio/other"

_REDIS_DIR = str(Path(redis.__file__).resolve().parent) + "/"
_OURS_DIR = str(Path(autoplay_obs.__file__).resolve().parent) + "/"
_HARNESS_DIR = str(Path(__file__).resolve().parent) + "/"
_CODEC = _OURS_DIR + "user_adoption_state/_codec.py"

Func = tuple[str, int, str]  # pstats' (file, line, name); builtins have file "~"


@functools.cache
def classify(func: Func) -> str | None:
    """The bucket a function names by itself, or None when it inherits its caller's."""
    file, _line, name = func
    if file == "~":  # a builtin: msgspec's C entry points name a bucket, the rest inherit
        if "msgspec" in name and ("decode" in name or "convert" in name):
            return "decode"
        if "msgspec" in name and "encode" in name:
            return "encode"
        if "copy" in name:
            return "copy"
        return None
    path = str(Path(file).resolve()) if not file.startswith("<") else file
    if path.startswith(_REDIS_DIR):
        return "redis-py"
    if path.endswith("/copy.py") and not path.startswith(_OURS_DIR):  # the stdlib's copy module
        return "copy"
    if not path.startswith(_OURS_DIR):
        return "harness" if path.startswith(_HARNESS_DIR) else None
    if path.startswith(_OURS_DIR + "telemetry/"):
        return "telemetry"
    if name in ("copy", "_copy_json"):
        return "copy"
    if path == _OURS_DIR + "_json.py" or (path == _CODEC and name == "encode"):
        return "encode"
    if path == _CODEC:
        return "decode"
    return "lifecycle"


@dataclass(frozen=True)
class Breakdown:
    """Client CPU seconds per bucket over the profiled loop, and the heaviest functions."""

    seconds: dict[str, float]
    pairs: int
    top: list[tuple[Func, str, int, float]]  # function, bucket, calls, self seconds


class _Attributor:
    """Resolves an unnamed function to a mix of buckets through its caller edges."""

    def __init__(self, stats: dict[Func, Any]) -> None:
        self._stats = stats
        self._memo: dict[Func, dict[str, float]] = {}
        self._active: set[Func] = set()

    def mix(self, func: Func) -> dict[str, float]:
        """Fractions per bucket of one second spent in ``func`` (cumulative-time weights)."""
        named = classify(func)
        if named is not None:
            return {named: 1.0}
        if func in self._memo:
            return self._memo[func]
        if func in self._active or func not in self._stats:  # a cycle, or a caller never recorded
            return {_OTHER: 1.0}
        self._active.add(func)
        mix = self._spread({caller: edge[3] for caller, edge in self._stats[func][4].items()})
        self._active.discard(func)
        self._memo[func] = mix
        return mix

    def _spread(self, weights: dict[Func, float]) -> dict[str, float]:
        total = sum(weights.values())
        if total <= 0.0:
            return {_OTHER: 1.0}
        out: dict[str, float] = defaultdict(float)
        for caller, weight in weights.items():
            for bucket, fraction in self.mix(caller).items():
                out[bucket] += fraction * weight / total
        return out

    def self_time(self, func: Func) -> dict[str, float]:
        """``func``'s own seconds per bucket (split over callers by each edge's self time)."""
        _cc, _nc, tt, _ct, callers = self._stats[func]
        named = classify(func)
        if named is not None:
            return {named: tt}
        edge_tt = {caller: edge[2] for caller, edge in callers.items()}
        return {bucket: tt * fraction for bucket, fraction in self._spread(edge_tt).items()}


def breakdown(profiler: cProfile.Profile, pairs: int, top: int = 12) -> Breakdown:
    stats: dict[Func, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    attributor = _Attributor(stats)
    seconds: dict[str, float] = dict.fromkeys(BUCKETS, 0.0)
    heaviest: list[tuple[Func, str, int, float]] = []
    for func, (_cc, nc, tt, _ct, _callers) in stats.items():
        for bucket, share in attributor.self_time(func).items():
            seconds[bucket] += share
        mix = attributor.mix(func)
        heaviest.append((func, max(mix, key=mix.__getitem__), nc, tt))
    heaviest.sort(key=lambda row: row[3], reverse=True)
    return Breakdown(seconds, pairs, heaviest[:top])


def _label(func: Func) -> str:
    file, line, name = func
    if file == "~":
        return name
    path = Path(file)
    return f"{path.parent.name}/{path.name}:{line}({name})"


def print_breakdown(result: Breakdown, unprofiled_us_per_pair: float) -> None:
    """Per bucket: profiled µs/pair, share, and the share of the unprofiled CPU per pair."""
    total = sum(result.seconds.values())
    print(f"{'bucket':<14} {'profiled us/pair':>16} {'share':>7} {'scaled us/pair':>15}")
    print("-" * 55)
    for bucket in BUCKETS:
        us = result.seconds[bucket] / result.pairs * 1e6
        share = result.seconds[bucket] / total if total else 0.0
        print(f"{bucket:<14} {us:>16.1f} {share:>6.1%} {share * unprofiled_us_per_pair:>15.1f}")
    print(f"{'total':<14} {total / result.pairs * 1e6:>16.1f} {'100%':>7} {unprofiled_us_per_pair:>15.1f}")
    print()
    print(f"heaviest functions by self time ({result.pairs} pairs)")
    print(f"  {'self us/pair':>12} {'calls/pair':>10}  {'bucket':<13} function")
    for func, bucket, calls, tt in result.top:
        print(
            f"  {tt / result.pairs * 1e6:>12.1f} {calls / result.pairs:>10.1f}  {bucket:<13} {_label(func)}"
        )
