"""The sinks' delivery ledgers, read at collection time as one observed counter.

Decisions:
- A ledger registers itself; it is held weakly, and its totals are kept when
  it is garbage-collected, so the counter never goes backwards.
- ``in_flight`` is derived (enqueued minus the settled outcomes), never
  exposed as a counter: it goes down.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import metrics

__all__ = ["delivery_counts", "observe_deliveries", "register_delivery_ledger"]

_ledgers: weakref.WeakSet[Any] = weakref.WeakSet()
_retired: Counter[tuple[str, str, str]] = Counter()
_retired_lock = threading.Lock()


def register_delivery_ledger(ledger: Any) -> None:
    """A sink's ledger (``.sink``, ``.snapshot()``, ``.counts``), read at every collection."""
    _ledgers.add(ledger)
    weakref.finalize(ledger, _retire, ledger.sink, ledger.counts)


def _retire(sink: str, counts: Mapping[tuple[str, str], int]) -> None:
    with _retired_lock:
        for (outcome, reason), count in counts.items():
            _retired[(sink, outcome, reason)] += count


def delivery_counts() -> dict[tuple[str, str, str], int]:
    """Running totals per (sink, outcome, reason) over every ledger, live or retired."""
    with _retired_lock:
        totals: Counter[tuple[str, str, str]] = Counter(_retired)
    for ledger in list(_ledgers):
        for (outcome, reason), count in ledger.snapshot().items():
            if outcome != "in_flight":
                totals[(ledger.sink, outcome, reason)] += count
    return dict(totals)


def observe_deliveries(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    for (sink, outcome, reason), count in delivery_counts().items():
        yield metrics.Observation(count, {"sink": sink, "outcome": outcome, "reason": reason})
