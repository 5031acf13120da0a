"""What a demo run did, counted from the lifecycle's result objects (no metrics needed)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from autoplay_obs.storage import AdapterCall, SessionEndResult, SessionStartResult

__all__ = ["AdapterStats", "DemoStats", "percentile"]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class AdapterStats:
    calls: int = 0
    failed: int = 0
    timeouts: int = 0
    durations: list[float] = field(default_factory=list)
    error_types: Counter[str] = field(default_factory=Counter)


@dataclass
class DemoStats:
    """Counters the summary prints and the tests check."""

    started: int = 0
    start_persisted: int = 0
    degraded_starts: int = 0
    start_errors: Counter[str] = field(default_factory=Counter)
    returning_starts: int = 0
    onboarding_context: int = 0
    ended: int = 0
    persisted: int = 0
    not_persisted: int = 0
    end_errors: Counter[str] = field(default_factory=Counter)
    retried_ends: int = 0
    duplicates: int = 0
    snapshots_created: int = 0
    snapshots_existing: int = 0
    snapshots_failed: int = 0
    summarizer_failures: Counter[str] = field(default_factory=Counter)
    summarizer_calls: int = 0
    conflicts: int = 0
    trimmed: int = 0
    repaired_documents: int = 0
    refused_documents: int = 0
    start_latencies: list[float] = field(default_factory=list)
    end_latencies: list[float] = field(default_factory=list)
    adapters: dict[tuple[str, str], AdapterStats] = field(default_factory=dict)
    persisted_ends_by_user: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    users_seen: set[str] = field(default_factory=set)
    sink_delivery: dict[str, dict[str, int]] = field(default_factory=dict)
    injected: dict[str, int] = field(default_factory=dict)
    checked_users: int = 0
    count_mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    primary_label: str = ""
    product_id: str = ""
    sink_names: list[str] = field(default_factory=list)
    results: list[Any] = field(default_factory=list, repr=False)
    """Every start and end result, for per-adapter accounting once the sinks have drained."""

    def record_start(self, user_id: str, result: SessionStartResult, latency: float) -> None:
        self.users_seen.add(user_id)
        self.started += 1
        self.start_latencies.append(latency)
        self.conflicts += result.conflicts
        self.start_persisted += result.persisted
        if result.degraded:
            self.degraded_starts += 1
        if result.error is not None:
            self.start_errors[type(result.error).__name__] += 1
            if type(result.error).__name__ in ("UnsupportedVersionError", "UnreadableDocumentError"):
                self.refused_documents += 1
        if result.state.sessions_count > 0:
            self.returning_starts += 1
            if result.onboarding_session is not None:
                self.onboarding_context += 1
        if any(not note.startswith("onboarding snapshot") for note in result.repairs):
            self.repaired_documents += 1
        self.results.append(result)

    def record_end(self, user_id: str, result: SessionEndResult, latency: float, *, retry: bool) -> None:
        self.end_latencies.append(latency)
        self.conflicts += result.conflicts
        self.trimmed += result.trimmed
        if result.snapshot_created is True:
            self.snapshots_created += 1
        elif result.snapshot_created is False:
            self.snapshots_existing += 1
        else:
            self.snapshots_failed += 1
        if result.summary_error is not None:
            self.summarizer_failures[result.summary_error] += 1
        if retry:
            self.retried_ends += 1
            self.duplicates += result.duplicate
        else:
            self.ended += 1
            if result.persisted:
                self.persisted += 1
            else:
                self.not_persisted += 1
                self.end_errors[type(result.error).__name__] += 1
        if result.persisted and not result.duplicate:
            self.persisted_ends_by_user[user_id] += 1
        self.results.append(result)

    def tally_adapter_calls(self) -> None:
        """Per-adapter counts; call after the sinks drained (their calls land late)."""
        for result in self.results:
            for call in result.adapter_calls:
                self._count_call(call)

    def _count_call(self, call: AdapterCall) -> None:
        stats = self.adapters.setdefault((call.adapter, call.role), AdapterStats())
        stats.calls += 1
        stats.durations.append(call.duration_s)
        outcome = call.outcome.value
        if outcome in ("error", "timeout"):
            stats.failed += 1
            stats.timeouts += outcome == "timeout"
            stats.error_types[call.error_type or "?"] += 1

    @property
    def summarizer_failed(self) -> int:
        return sum(self.summarizer_failures.values())
