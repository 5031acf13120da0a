"""What one outbox ``put`` costs, with ``synchronous=FULL`` (the default) and ``NORMAL``.

Each ``put`` is timed from the event loop: the hop to the outbox's worker
thread, one ``BEGIN IMMEDIATE`` transaction (age expiry, insert, bounds,
counters) and its commit -- with FULL, an fsync of the WAL; with NORMAL, none
(until a checkpoint). The snapshot is a ~4 KB document, the size of a typical
``SessionSnapshot``. Rounds interleave the two modes, each on its own file in
``--dir`` (default: a temp dir; put it on the disk the host will use, since
fsync cost is the disk's), and percentiles over all rounds are printed.

This only matters while the primary is down: a healthy session end never
touches the outbox.

Run from the repository root: ``python -m benchmarks.outbox_put``
(flags: --puts, --rounds, --dir, --prefill).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoplay_obs.storage._outbox import Outbox
from autoplay_obs.storage._outbox_types import OutboxItem

MODES = ("FULL", "NORMAL")
SNAPSHOT = b'{"_v":1,"pad":"' + b"x" * 4000 + b'"}'


async def _round(outbox: Outbox, start: int, puts: int) -> list[float]:
    timings = []
    for i in range(start, start + puts):
        item = OutboxItem("bench", f"user-{i % 32}", f"session-{i}", SNAPSHOT, "a short summary")
        began = time.perf_counter()
        await outbox.put(item)
        timings.append(time.perf_counter() - began)
    return timings


def _row(mode: str, timings: list[float]) -> str:
    ordered = sorted(timings)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3  # noqa: E731
    return (
        f"{mode:<7} {len(ordered):>6} {statistics.median(ordered) * 1e3:>9.3f} {pick(0.9):>9.3f}"
        f" {pick(0.99):>9.3f} {statistics.fmean(ordered) * 1e3:>9.3f}"
    )


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--puts", type=int, default=200, help="puts per mode per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where the outbox files go")
    parser.add_argument("--prefill", type=int, default=0, help="entries already queued before timing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        boxes = {mode: Outbox(Path(tmp) / f"{mode}.db", synchronous=mode) for mode in MODES}
        for box in boxes.values():
            await box.open()
            await _round(box, -10 - args.prefill, 10 + args.prefill)  # warm-up, and the prefill
        timings: dict[str, list[float]] = {mode: [] for mode in MODES}
        for r in range(args.rounds):
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                timings[mode] += await _round(boxes[mode], r * args.puts, args.puts)
        for box in boxes.values():
            await box.aclose()
        print(f"outbox put latency, ms ({tmp}; {args.prefill} entries queued before timing)")
        print(f"{'mode':<7} {'puts':>6} {'median':>9} {'p90':>9} {'p99':>9} {'mean':>9}")
        for mode in MODES:
            print(_row(mode, timings[mode]))


if __name__ == "__main__":
    asyncio.run(main())
