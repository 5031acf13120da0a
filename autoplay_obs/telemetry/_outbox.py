"""The outbox, observed: what was queued, replayed, dropped or parked, how deep it is, how old.

Decisions:
- Queuing happens inside the session end's span (an ``autoplay.outbox.queued``
  event on it, plus a child span around the write to the file); each replay
  is a span of its own, linked to the span of the session end that queued it,
  so a trace shows both halves of a session that waited out an outage.
- Depth and the oldest entry's age are gauges of what this process last saw
  (at each queue and replay round): several processes sharing one file each
  report the same file.
- Counts, never ids or bodies.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from autoplay_obs.telemetry._calls import trace_id_of
from autoplay_obs.telemetry._telemetry import current

__all__ = ["outbox_dropped", "outbox_put", "outbox_replay", "outbox_status"]


@contextlib.contextmanager
def outbox_put() -> Iterator[None]:
    """Around the write of one session end to the outbox file."""
    t = current()
    if t is None or t.idle():
        yield
        return
    with t.tracer.start_as_current_span("autoplay.outbox.queue", kind=SpanKind.INTERNAL):
        yield
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event("autoplay.outbox.queued")
    t.recorder.record("outbox_queued", 1, (), trace_id_of(span) if t.recorder.prom is not None else None)


def outbox_dropped(dropped: Mapping[Any, int]) -> None:
    """Entries the outbox's bounds dropped (each one a lost session)."""
    t = current()
    if t is None or t.idle():
        return
    for reason, count in dropped.items():
        if count:
            t.recorder.record("outbox_dropped", count, (str(reason),))


def outbox_status(depth: int, oldest_age_s: float | None) -> None:
    t = current()
    if t is None or t.idle():
        return
    t.recorder.record("outbox_depth", depth)
    t.recorder.record("outbox_oldest_age", oldest_age_s or 0.0)


class ReplaySpan:
    """One entry's replay: ``finish(outcome, reason)`` records how it ended."""

    def __init__(self, span: Any, started: float) -> None:
        self.span, self.started = span, started

    def finish(self, outcome: str, reason: str | None = None) -> None:
        t = current()
        if t is None or t.idle():
            return
        trace_id = trace_id_of(self.span) if t.recorder.prom is not None else None
        t.recorder.record("outbox_replay_duration", time.perf_counter() - self.started, (outcome,), trace_id)
        if outcome == "replayed":
            t.recorder.record("outbox_replayed", 1, (), trace_id)
        elif outcome == "parked":
            t.recorder.record("outbox_parked", 1, (reason or "refused",), trace_id)
        if self.span.is_recording():
            self.span.set_attribute("autoplay.outcome", outcome)
            if outcome != "replayed":
                self.span.set_status(Status(StatusCode.ERROR, reason or outcome))


@contextlib.contextmanager
def outbox_replay(queued_by: trace.SpanContext | None, attempts: int) -> Iterator[ReplaySpan]:
    """Around one entry's replay; its span links to the session end that queued it."""
    t = current()
    started = time.perf_counter()
    if t is None or t.idle():
        yield ReplaySpan(trace.INVALID_SPAN, started)
        return
    links = [Link(queued_by)] if queued_by is not None else []
    with t.tracer.start_as_current_span(
        "autoplay.outbox.replay", links=links, attributes={"autoplay.outbox.attempts": attempts}
    ) as span:
        yield ReplaySpan(span, started)
