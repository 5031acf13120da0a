"""What a demo run did, counted from the lifecycle's result objects (no metrics needed).

Decisions:

- Streaming only: counters and fixed-size latency histograms, never a list
  that grows per session, event or result, so a run of hours stays in a few
  tens of megabytes (a ten-minute run of the old lists reached gigabytes).
  The only per-key maps are per user, and the user count is a flag.
- Percentiles come from a log-bucketed histogram (2 % wide buckets from 1 us
  to hours), reported as the bucket's upper edge clamped to the exact min and
  max: within 2 % of the exact value, in fixed memory.
- A result's sink calls land after it returns (background writes), so its
  adapter calls are counted once it is a second older than the longest sink
  write can take (the injected latency, at most the manager's sink timeout),
  or at the end of the run after the drain. Results are held only for that
  window: what is held grows with the session rate, not the run's length. A
  sink write still running after it (an event loop stalled for a second)
  would be missed from the per-adapter table, never from the session counts.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field

from autoplay_obs.errors import DocumentError
from autoplay_obs.storage import AdapterCall, SessionEndResult, SessionStartResult

__all__ = ["AdapterStats", "CallTally", "DemoStats", "LatencyStats"]

_FLOOR = 1e-6
_GROWTH = 1.02
_BUCKETS = 1400  # 1e-6 * 1.02**1400 is about 1e6 s: nothing the demo measures falls off the end


class LatencyStats:
    """Count, min, max and a log-bucketed histogram of durations in seconds; fixed memory."""

    __slots__ = ("_buckets", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._buckets: list[int] = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.min = min(self.min, seconds)
        self.max = max(self.max, seconds)
        index = 0 if seconds <= _FLOOR else math.ceil(math.log(seconds / _FLOOR, _GROWTH))
        self._buckets[min(index, _BUCKETS - 1)] += 1

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile (q in 0..100), within one bucket (2 %); NaN when empty."""
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for index, count in enumerate(self._buckets):
            seen += count
            if seen >= rank:
                return min(self.max, max(self.min, _FLOOR * _GROWTH**index))
        return self.max


@dataclass
class AdapterStats:
    calls: int = 0
    failed: int = 0
    timeouts: int = 0
    durations: LatencyStats = field(default_factory=LatencyStats)
    error_types: Counter[str] = field(default_factory=Counter)


Result = SessionStartResult | SessionEndResult


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
    start_latencies: LatencyStats = field(default_factory=LatencyStats)
    end_latencies: LatencyStats = field(default_factory=LatencyStats)
    adapters: dict[tuple[str, str], AdapterStats] = field(default_factory=dict)
    persisted_ends_by_user: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    users_seen: set[str] = field(default_factory=set)
    sink_delivery: dict[str, dict[str, int]] = field(default_factory=dict)
    injected: dict[str, int] = field(default_factory=dict)
    checked_users: int = 0
    count_mismatches: list[str] = field(default_factory=list)
    """At most one line per user."""
    notes: list[str] = field(default_factory=list)
    outage_label: str = ""
    """How the primary was taken down, when it was."""
    primary_label: str = ""
    product_id: str = ""
    sink_names: list[str] = field(default_factory=list)
    keys_removed: int | None = None
    """Keys ``--cleanup`` deleted from Redis (None: not asked, or not on Redis)."""
    keys_left: int | None = None
    """Keys the run left in Redis without ``--cleanup`` (None: not on Redis)."""
    queued_ends: int = 0
    """Session ends (retries included) the library queued in the outbox (``queued=True``)."""
    outbox_errors: Counter[str] = field(default_factory=Counter)
    """Session ends the outbox could not take, by error type."""
    refused_sessions: int = 0
    """Sessions not persisted because the stored document was refused: no replay can fix that."""
    unqueued_lost: int = 0
    """Sessions no end persisted or queued, other than the refused ones."""
    queued_sessions_by_user: Counter[str] = field(default_factory=Counter)
    """Sessions counted only once their queued end is replayed (no end of theirs persisted anew)."""
    outbox_label: str = "off"
    outbox_queued: int = 0
    """Entries this run added to the outbox file (one per session: a second end of it is not added)."""
    outbox_replayed: int = 0
    outbox_parked: int = 0
    outbox_dropped: int = 0
    outbox_left: int = 0
    """Entries still pending after the end-of-run flush."""
    flush_s: float = 0.0

    def record_start(self, user_id: str, result: SessionStartResult, latency: float) -> None:
        self.users_seen.add(user_id)
        self.started += 1
        self.start_latencies.add(latency)
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

    def record_end(self, user_id: str, result: SessionEndResult, latency: float, *, retry: bool) -> None:
        self.end_latencies.add(latency)
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
        self.queued_ends += result.queued
        if result.outbox_error is not None:
            self.outbox_errors[type(result.outbox_error).__name__] += 1
        if result.persisted and not result.duplicate:
            self.persisted_ends_by_user[user_id] += 1

    def record_session(self, user_id: str, ends: list[SessionEndResult]) -> None:
        """One session's ends together (the original and a retry): counted, queued, refused or lost."""
        if any(end.persisted and not end.duplicate for end in ends):
            return  # already in persisted_ends_by_user
        if any(end.queued for end in ends):
            self.queued_sessions_by_user[user_id] += 1
        elif any(isinstance(end.error, DocumentError) for end in ends):
            self.refused_sessions += 1
        elif not any(end.persisted for end in ends):
            self.unqueued_lost += 1

    @property
    def lost(self) -> int:
        """Sessions that never reached the primary and never will (refused documents aside)."""
        return self.unqueued_lost + self.outbox_left + self.outbox_dropped

    def count_call(self, call: AdapterCall) -> None:
        stats = self.adapters.setdefault((call.adapter, call.role), AdapterStats())
        stats.calls += 1
        stats.durations.add(call.duration_s)
        outcome = call.outcome.value
        if outcome in ("error", "timeout"):
            stats.failed += 1
            stats.timeouts += outcome == "timeout"
            stats.error_types[call.error_type or "?"] += 1

    @property
    def summarizer_failed(self) -> int:
        return sum(self.summarizer_failures.values())


class CallTally:
    """Counts each result's adapter calls once its background sink calls have landed.

    Holds a result for ``settle_after`` seconds (the manager's sink timeout and
    a margin), so what it keeps is bounded by the session rate, not the run.
    """

    def __init__(self, stats: DemoStats, settle_after: float) -> None:
        self.stats = stats
        self.settle_after = settle_after
        self._held: deque[tuple[float, Result]] = deque()

    def __len__(self) -> int:
        return len(self._held)

    def add(self, result: Result, now: float) -> None:
        self._held.append((now + self.settle_after, result))
        self.settle(now)

    def settle(self, now: float) -> None:
        """Count the results whose sink calls are over by ``now``."""
        while self._held and self._held[0][0] <= now:
            self._count(self._held.popleft()[1])

    def settle_all(self) -> None:
        """After the drain: every remaining result is complete."""
        while self._held:
            self._count(self._held.popleft()[1])

    def _count(self, result: Result) -> None:
        for call in result.adapter_calls:
            self.stats.count_call(call)
