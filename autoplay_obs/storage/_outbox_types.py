"""The values the outbox takes and hands back, and its status for the command line.

Decisions:

- Plain frozen dataclasses, not msgspec Structs: none of them is a stored
  document (the snapshot inside an entry is kept as the exact bytes the
  primary would have stored).
- Drop reasons are a closed set of label values (``DROP_REASONS``), so a
  metric labelled by reason stays bounded.
- An entry carries the W3C trace context of the call that queued it as
  strings; ``span_context()`` turns it back into something a replay span can
  link to, through OpenTelemetry's public propagator API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "DROP_REASONS",
    "DropReason",
    "EntryState",
    "OutboxEntry",
    "OutboxItem",
    "OutboxStatus",
    "PutResult",
    "format_status",
]

DropReason = Literal["max_entries", "max_bytes", "max_age"]
DROP_REASONS: Final[tuple[DropReason, ...]] = ("max_entries", "max_bytes", "max_age")
EntryState = Literal["pending", "parked"]

_PROPAGATOR: Final = TraceContextTextMapPropagator()


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One session end the primary did not acknowledge, as handed to ``Outbox.put``."""

    product_id: str
    user_id: str
    session_id: str
    snapshot: bytes
    summary: str | None = None

    @property
    def size(self) -> int:
        """Bytes this item counts against ``max_bytes``: the snapshot plus the summary."""
        return len(self.snapshot) + (len(self.summary.encode()) if self.summary is not None else 0)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One queued session end as stored; ``id`` grows with queue order and is never reused."""

    id: int
    product_id: str
    user_id: str
    session_id: str
    snapshot: bytes
    summary: str | None
    queued_at: float
    attempts: int
    state: EntryState
    traceparent: str | None = None
    tracestate: str | None = None
    last_error: str | None = None
    park_reason: str | None = None
    claimed_by: str | None = None
    lease_until: float | None = None

    def span_context(self) -> trace.SpanContext | None:
        """The span that queued this entry, for a link from its replay span; None if none was active."""
        if not self.traceparent:
            return None
        carrier = {"traceparent": self.traceparent}
        if self.tracestate:
            carrier["tracestate"] = self.tracestate
        context = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
        return context if context.is_valid else None


def current_trace_headers() -> tuple[str | None, str | None]:
    """``traceparent`` / ``tracestate`` of the active span (both None when no span is recording)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent"), carrier.get("tracestate")


@dataclass(frozen=True, slots=True)
class PutResult:
    """What ``put`` did: the entry's id, whether it is new, and what it dropped to make room."""

    entry_id: int
    queued: bool  # False: this session was already in the outbox, which keeps the first copy
    dropped: Mapping[DropReason, int] = field(default_factory=dict)
    depth: int = 0  # entries in the outbox after this put (pending and parked)
    total_bytes: int = 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    """A consistent picture of one outbox file; counters cover the file's whole life."""

    path: str
    pending: int
    parked: int
    leased: int
    total_bytes: int
    file_bytes: int
    oldest_age_s: float | None  # of the oldest pending entry (parked ones wait for an operator)
    queued_total: int
    replayed_total: int
    parked_total: int
    dropped_total: Mapping[DropReason, int]
    max_entries: int
    max_bytes: int
    max_age_s: float
    synchronous: str

    @property
    def depth(self) -> int:
        return self.pending + self.parked

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``autoplay-obs outbox status --json``)."""
        return {
            "path": self.path,
            "depth": self.depth,
            "pending": self.pending,
            "parked": self.parked,
            "leased": self.leased,
            "bytes": self.total_bytes,
            "file_bytes": self.file_bytes,
            "oldest_age_s": self.oldest_age_s,
            "queued_total": self.queued_total,
            "replayed_total": self.replayed_total,
            "parked_total": self.parked_total,
            "dropped_total": {reason: self.dropped_total.get(reason, 0) for reason in DROP_REASONS},
            "limits": {
                "max_entries": self.max_entries,
                "max_bytes": self.max_bytes,
                "max_age_s": self.max_age_s,
            },
            "synchronous": self.synchronous,
        }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def format_status(status: OutboxStatus) -> str:
    """An aligned two-column table for people (``autoplay-obs outbox status``)."""
    dropped = status.dropped_total
    rows = [
        ("outbox", status.path),
        ("depth", f"{status.depth} of {status.max_entries} entries"),
        ("  pending", str(status.pending)),
        ("  parked", str(status.parked)),
        ("  being replayed", str(status.leased)),
        (
            "bytes",
            f"{_size(status.total_bytes)} of {_size(status.max_bytes)} (file {_size(status.file_bytes)})",
        ),
        ("oldest pending", f"{_age(status.oldest_age_s)} (max age {_age(status.max_age_s)})"),
        ("queued (all time)", str(status.queued_total)),
        ("replayed (all time)", str(status.replayed_total)),
        ("parked (all time)", str(status.parked_total)),
        *((f"dropped: {reason}", str(dropped.get(reason, 0))) for reason in DROP_REASONS),
        ("synchronous", status.synchronous),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
