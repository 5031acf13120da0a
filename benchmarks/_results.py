"""One run's figures, the median over repeated runs, and the lifecycle benchmark's tables."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from benchmarks._variants import VARIANTS

__all__ = ["Result", "median", "print_flatness", "print_ratios", "print_results"]


@dataclass(frozen=True)
class Result:
    variant: str
    size_kb: float
    users: int
    pairs: int
    seconds: float
    latencies: list[float]
    commands: int
    client_cpu: float  # seconds of this process over the timed loop
    server_cpu: float  # seconds of redis-server over the timed loop
    logged: int  # warnings and errors logged over the timed loop (failed pairs)

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds

    @property
    def client_us(self) -> float:
        return self.client_cpu / self.pairs * 1e6

    @property
    def server_us(self) -> float:
        return self.server_cpu / self.pairs * 1e6

    def quantile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


def _times(ratio: float) -> str:
    return f"x{ratio:.2f}"


def median(runs: list[Result]) -> Result:
    """A run whose every figure is the median of the runs' (latencies: of the median-throughput run)."""
    mid = sorted(runs, key=lambda r: r.pairs_per_s)[len(runs) // 2]
    pairs = mid.pairs
    return Result(
        mid.variant,
        mid.size_kb,
        mid.users,
        pairs,
        pairs / statistics.median(r.pairs_per_s for r in runs),
        mid.latencies,
        round(statistics.median(r.commands / r.pairs for r in runs) * pairs),
        statistics.median(r.client_us for r in runs) * pairs / 1e6,
        statistics.median(r.server_us for r in runs) * pairs / 1e6,
        max(r.logged for r in runs),
    )


def print_results(results: list[Result]) -> None:
    header = (
        f"{'size':>5} {'users':>5} {'variant':<10} {'pairs':>6} {'pairs/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'cmds/pair':>9} {'client us/pair':>14} {'server us/pair':>14} {'logged':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.size_kb:>4g}K {r.users:>5} {r.variant:<10} {r.pairs:>6} {r.pairs_per_s:>8.0f} "
            f"{r.quantile_ms(0.5):>8.2f} {r.quantile_ms(0.99):>8.2f} {r.commands / r.pairs:>9.2f} "
            f"{r.client_us:>14.0f} {r.server_us:>14.0f} {r.logged:>6}"
        )


def print_ratios(results: list[Result]) -> None:
    by_key = {(r.size_kb, r.users, r.variant): r for r in results}
    cells = list(dict.fromkeys((r.size_kb, r.users) for r in results))
    print("ours / other: pairs/s (higher is better), client and server CPU per pair (lower is better)")
    print(f"{'size':>5} {'users':>5} {'other':<10} {'pairs/s':>8} {'client CPU':>10} {'server CPU':>10}")
    for size, users in cells:
        ours = by_key.get((size, users, "ours"))
        for other in ("floor", "reference"):
            base = by_key.get((size, users, other))
            if ours is None or base is None:
                continue
            print(
                f"{size:>4g}K {users:>5} {other:<10} {_times(ours.pairs_per_s / base.pairs_per_s):>8} "
                f"{_times(ours.client_us / base.client_us):>10} {_times(ours.server_us / base.server_us):>10}"
            )


def print_flatness(results: list[Result], size_kb: float) -> None:
    """Client CPU per pair across the users sweep: flat means no cost grows with concurrency."""
    for variant in VARIANTS:
        row = sorted(
            (r for r in results if r.variant == variant and r.size_kb == size_kb), key=lambda r: r.users
        )
        if len(row) < 2:
            continue
        spread = max(r.client_us for r in row) / min(r.client_us for r in row)
        cells = ", ".join(f"{r.users}u {r.client_us:.0f}" for r in row)
        print(f"  {variant:<10} client us/pair at {size_kb:g}K: {cells}  (max/min x{spread:.2f})")
