"""Telemetry of the lifecycle and the manager, proved exactly with in-memory exporters.

Each scenario injects its own SDK providers through ``telemetry.use_providers``
(never the set-once globals) and asserts the exact spans, statuses, events and
counter increments it must produce.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fakeredis.aioredis
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from autoplay_obs import __version__, telemetry
from autoplay_obs.errors import StorageUnavailableError
from autoplay_obs.storage import (
    InMemoryStorageAdapter,
    RedisStorageAdapter,
    StorageManager,
    end_session,
    init_user_state,
    start_session,
)
from autoplay_obs.storage._keys import user_state_key
from autoplay_obs.telemetry import _hooks
from autoplay_obs.telemetry._switches import Switches
from autoplay_obs.user_adoption_state import SessionIndexEntry, SessionSnapshot, encode

PRODUCT, USER = "prod_1", "user_42"


# ------------------------------------------------------------------------------ fixtures


@dataclass
class Otel:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]

    def names(self) -> list[str]:
        return sorted(s.name for s in self.spans())

    def metrics(self) -> dict[str, dict[frozenset[tuple[str, Any]], float]]:
        """Metric name -> {label set: counter value, or histogram count}."""
        out: dict[str, dict[frozenset[tuple[str, Any]], float]] = {}
        data = self.reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                assert scope_metrics.scope.name == "autoplay_obs"
                assert scope_metrics.scope.version == __version__
                for metric in scope_metrics.metrics:
                    if metric.name == "autoplay.sink.deliveries":  # read from live sink ledgers,
                        continue  # which other tests' sinks may still hold; see test_sink_delivery_metrics
                    points = out.setdefault(metric.name, {})
                    for point in metric.data.data_points:
                        value = point.count if isinstance(point, HistogramDataPoint) else point.value
                        points[frozenset((point.attributes or {}).items())] = value
        return out

    def points(self, name: str) -> dict[frozenset[tuple[str, Any]], float]:
        return self.metrics().get(name, {})

    def buckets(self, name: str) -> tuple[float, ...]:
        data = self.reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        return tuple(metric.data.data_points[0].explicit_bounds)
        raise AssertionError(name)

    def counters(self) -> dict[str, dict[frozenset[tuple[str, Any]], float]]:
        """Only the non-zero counters (histograms excluded)."""
        return {
            name: {labels: v for labels, v in points.items() if v}
            for name, points in self.metrics().items()
            if not name.endswith(".duration")
        }


def labels(**kv: Any) -> frozenset[tuple[str, Any]]:
    return frozenset(kv.items())


@pytest.fixture
def otel() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.set_enabled(True)
    telemetry.use_providers(tracer_provider, meter_provider)
    _hooks.log.reset()
    try:
        yield Otel(exporter, reader)
    finally:
        telemetry.use_providers()
        telemetry.set_enabled(True)
        telemetry.set_user_id_recording("omit")
        _hooks.log.reset()
        tracer_provider.shutdown()
        meter_provider.shutdown()


class Sink:
    """A sink adapter with the four seed methods; optionally raising or hanging on writes."""

    def __init__(self, name: str, *, fail: BaseException | None = None, hang: float = 0.0) -> None:
        self.name = name
        self.fail = fail
        self.hang = hang
        self.writes: list[str] = []

    async def _write(self, what: str) -> None:
        if self.hang:
            await asyncio.sleep(self.hang)
        if self.fail is not None:
            raise self.fail
        self.writes.append(what)

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        await self._write("state")

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        return None

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        await self._write("snapshot")

    async def get_session_snapshot(
        self, product_id: str, user_id: str, session_id: str
    ) -> dict[str, Any] | None:
        return None


class DownPrimary:
    """A primary whose every call fails as an unreachable store would."""

    name = "down"

    async def save_user_state(self, *args: Any) -> None:
        raise StorageUnavailableError("connection refused")

    async def get_user_state(self, *args: Any) -> dict[str, Any] | None:
        raise StorageUnavailableError("connection refused")

    async def save_session_snapshot(self, *args: Any) -> None:
        raise StorageUnavailableError("connection refused")

    async def get_session_snapshot(self, *args: Any) -> dict[str, Any] | None:
        raise StorageUnavailableError("connection refused")


def snapshot_of(session_id: str, number: int, captured_at: float = 2_000.0) -> SessionSnapshot:
    state = init_user_state(USER)
    return SessionSnapshot.from_adoption_state(
        state,
        session_id=session_id,
        session_number=number,
        started_at=captured_at - 100.0,
        catalog_workflow_ids=["wf_a"],
        now=captured_at,
    )


def adapter_attrs(adapter: str, role: str, operation: str, outcome: str, **extra: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "autoplay.adapter.name": adapter,
        "autoplay.adapter.role": role,
        "autoplay.operation": operation,
        "autoplay.outcome": outcome,
    }
    if adapter == "memory":
        attrs["db.system.name"] = "memory"
    attrs.update(extra)
    return attrs


def children_of(otel: Otel, parent: ReadableSpan) -> list[str]:
    parent_id = parent.context.span_id
    return sorted(s.name for s in otel.spans() if s.parent is not None and s.parent.span_id == parent_id)


# ------------------------------------------------------------------------------ scenarios


async def test_healthy_start_and_end_with_two_sinks(otel: Otel) -> None:
    manager = StorageManager([InMemoryStorageAdapter(), Sink("sink_a"), Sink("sink_b")])
    started = await start_session(PRODUCT, USER, "s1", manager)
    ended = await end_session(PRODUCT, USER, snapshot_of("s1", 1), manager, summary="did things")
    await manager.drain()
    assert started.persisted and ended.persisted

    start, end = otel.span("autoplay.session.start"), otel.span("autoplay.session.end")
    assert dict(start.attributes or {}) == {
        "autoplay.product_id": PRODUCT,
        "autoplay.session_id": "s1",
        "autoplay.session_number": 1,
        "autoplay.outcome": "ok",
    }
    assert dict(end.attributes or {}) == {
        "autoplay.product_id": PRODUCT,
        "autoplay.session_id": "s1",
        "autoplay.session_number": 1,
        "autoplay.outcome": "ok",
    }
    for span in (start, end):
        assert span.instrumentation_scope.name == "autoplay_obs"
        assert span.instrumentation_scope.version == __version__
        assert span.parent is None
        assert span.status.status_code is StatusCode.UNSET
        assert span.events == ()
    # One child span per adapter call the manager made, and nothing else.
    for span, result in ((start, started), (end, ended)):
        assert children_of(otel, span) == sorted(f"{c.operation} {c.adapter}" for c in result.adapter_calls)
    assert {"swap_state memory", "save_user_state sink_a", "save_user_state sink_b"} <= set(
        children_of(otel, start)
    )
    assert {
        "create_snapshot memory",
        "swap_state memory",
        "save_session_snapshot sink_a",
        "save_session_snapshot sink_b",
        "save_user_state sink_a",
        "save_user_state sink_b",
    } <= set(children_of(otel, end))
    swap = next(s for s in otel.spans() if s.name == "swap_state memory" and s.parent == end.context)
    assert swap.kind is SpanKind.CLIENT
    assert dict(swap.attributes or {}) == adapter_attrs("memory", "primary", "swap_state", "ok")
    sink_span = next(s for s in otel.spans() if s.name == "save_session_snapshot sink_b")
    assert dict(sink_span.attributes or {}) == adapter_attrs("sink_b", "sink", "save_session_snapshot", "ok")
    assert all(s.status.status_code is StatusCode.UNSET for s in otel.spans())

    assert otel.counters() == {
        "autoplay.snapshot.writes": {labels(result="created"): 1},
        "autoplay.fanout.results": {labels(result="all_ok"): 2},
    }
    expected = Counter(
        labels(adapter=c.adapter, role=c.role, operation=c.operation, outcome=c.outcome.value)
        for c in (*started.adapter_calls, *ended.adapter_calls)
    )
    assert otel.metrics()["autoplay.adapter.operation.duration"] == dict(expected)


async def test_sink_raising(otel: Otel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="autoplay_obs")
    manager = StorageManager(
        [InMemoryStorageAdapter(), Sink("sink_a"), Sink("flaky", fail=RuntimeError("boom"))]
    )
    result = await start_session(PRODUCT, USER, "s1", manager)
    await manager.drain()
    assert result.persisted

    start = otel.span("autoplay.session.start")
    assert start.status.status_code is StatusCode.UNSET
    assert start.attributes["autoplay.outcome"] == "ok"  # the primary path is untouched
    failed = otel.span("save_user_state flaky")
    assert failed.parent == start.context
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "RuntimeError"
    assert dict(failed.attributes or {}) == adapter_attrs(
        "flaky", "sink", "save_user_state", "error", **{"error.type": "RuntimeError"}
    )
    assert otel.span("save_user_state sink_a").status.status_code is StatusCode.UNSET
    assert otel.counters() == {
        "autoplay.adapter.operation.failures": {
            labels(adapter="flaky", role="sink", operation="save_user_state", error_type="RuntimeError"): 1
        },
        "autoplay.fanout.results": {labels(result="degraded"): 1},
    }
    ours = [r for r in caplog.records if r.name == "autoplay_obs"]
    assert len(ours) == 1
    assert ours[0].levelno == logging.WARNING
    assert ours[0].error_type == "RuntimeError"  # type: ignore[attr-defined]
    assert ours[0].trace_id == format(failed.context.trace_id, "032x")  # type: ignore[attr-defined]
    assert ours[0].span_id == format(failed.context.span_id, "016x")  # type: ignore[attr-defined]
    assert "boom" not in ours[0].getMessage()  # error types only, never messages


async def test_sink_hanging_past_its_timeout(otel: Otel) -> None:
    manager = StorageManager([InMemoryStorageAdapter(), Sink("slow", hang=30.0)], sink_timeout=0.05)
    result = await start_session(PRODUCT, USER, "s1", manager)
    assert result.persisted
    # The start returned before the sink gave up: no fan-out verdict yet.
    assert "autoplay.fanout.results" not in otel.counters()
    await manager.drain()

    timed_out = otel.span("save_user_state slow")
    assert timed_out.parent == otel.span("autoplay.session.start").context
    assert timed_out.status.status_code is StatusCode.ERROR
    assert dict(timed_out.attributes or {}) == adapter_attrs(
        "slow", "sink", "save_user_state", "timeout", **{"error.type": "TimeoutError"}
    )
    assert (timed_out.end_time - timed_out.start_time) / 1e9 >= 0.04
    assert otel.counters() == {
        "autoplay.adapter.operation.failures": {
            labels(adapter="slow", role="sink", operation="save_user_state", error_type="TimeoutError"): 1
        },
        "autoplay.fanout.results": {labels(result="degraded"): 1},
    }


async def test_primary_down(otel: Otel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="autoplay_obs")
    manager = StorageManager([DownPrimary(), Sink("sink_a")])
    started = await start_session(PRODUCT, USER, "s1", manager)
    ended = await end_session(PRODUCT, USER, snapshot_of("s1", 1), manager, summary="x")
    for _ in range(5):  # a dead store on the hot path
        await start_session(PRODUCT, USER, "s1", manager)
    await manager.drain()
    assert not started.persisted and started.degraded and not ended.persisted

    starts = [s for s in otel.spans() if s.name == "autoplay.session.start"]
    assert len(starts) == 6
    start, end = starts[0], otel.span("autoplay.session.end")
    assert children_of(otel, start) == ["load_state down"]
    assert children_of(otel, end) == ["create_snapshot down", "load_state down"]
    for span, phase in ((start, "start"), (end, "end")):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "StorageUnavailableError"
        assert span.attributes["autoplay.outcome"] == "not_persisted"
        assert span.attributes["error.type"] == "StorageUnavailableError"
        assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
            (
                "autoplay.state.not_persisted",
                {"autoplay.phase": phase, "error.type": "StorageUnavailableError"},
            )
        ]
    load = next(s for s in otel.spans() if s.name == "load_state down" and s.parent == start.context)
    assert load.status.status_code is StatusCode.ERROR
    assert dict(load.attributes or {}) == adapter_attrs(
        "down", "primary", "load_state", "error", **{"error.type": "StorageUnavailableError"}
    )
    assert otel.counters() == {
        "autoplay.adapter.operation.failures": {
            labels(
                adapter="down", role="primary", operation="load_state", error_type="StorageUnavailableError"
            ): 7,
            labels(
                adapter="down",
                role="primary",
                operation="create_snapshot",
                error_type="StorageUnavailableError",
            ): 1,
        },
        "autoplay.sessions.not_persisted": {labels(phase="start"): 6, labels(phase="end"): 1},
        "autoplay.fanout.results": {labels(result="primary_failed"): 7},
    }
    assert otel.metrics()["autoplay.adapter.operation.duration"] == {
        labels(adapter="down", role="primary", operation="load_state", outcome="error"): 7,
        labels(adapter="down", role="primary", operation="create_snapshot", outcome="error"): 1,
    }
    # Rate-limited: one line per kind of failure, not one per call.
    ours = sorted(r.getMessage() for r in caplog.records if r.name == "autoplay_obs")
    assert ours == [
        "primary down create_snapshot error: StorageUnavailableError",
        "primary down load_state error: StorageUnavailableError",
        "session end not persisted: StorageUnavailableError",
        "session start not persisted: StorageUnavailableError",
    ]


async def test_duplicate_session_end(otel: Otel) -> None:
    manager = StorageManager([InMemoryStorageAdapter()])
    await end_session(PRODUCT, USER, snapshot_of("s1", 1), manager, summary="x")
    otel.exporter.clear()
    again = await end_session(PRODUCT, USER, snapshot_of("s1", 1), manager, summary="x")
    assert again.duplicate and again.snapshot_created is False

    end = otel.span("autoplay.session.end")
    assert end.attributes["autoplay.outcome"] == "duplicate"
    assert end.status.status_code is StatusCode.UNSET
    assert [e.name for e in end.events] == ["autoplay.snapshot.exists"]
    assert children_of(otel, end) == sorted(f"{c.operation} {c.adapter}" for c in again.adapter_calls)
    assert "swap_state memory" not in children_of(otel, end)  # nothing merged twice
    create = otel.span("create_snapshot memory")
    assert create.attributes["autoplay.outcome"] == "duplicate"
    assert create.status.status_code is StatusCode.UNSET
    assert otel.counters() == {
        "autoplay.snapshot.writes": {labels(result="created"): 1, labels(result="duplicate"): 1},
        "autoplay.fanout.results": {labels(result="all_ok"): 2},
    }


async def test_concurrent_ends_force_compare_and_set_retries(otel: Otel) -> None:
    shared = InMemoryStorageAdapter()
    first, second = StorageManager([shared]), StorageManager([shared])
    await start_session(PRODUCT, USER, "s0", first)
    await second.read_state(PRODUCT, USER)  # both now expect the same revision
    otel.exporter.clear()
    results = await asyncio.gather(
        end_session(PRODUCT, USER, snapshot_of("s1", 1, 2_000.0), first, summary="a"),
        end_session(PRODUCT, USER, snapshot_of("s2", 2, 2_001.0), second, summary="b"),
    )
    conflicts = sum(r.conflicts for r in results)
    assert conflicts == 1
    assert all(r.persisted for r in results)

    events = [
        (span, event)
        for span in otel.spans()
        if span.name == "autoplay.session.end"
        for event in span.events
        if event.name == "autoplay.state.cas_retry"
    ]
    assert len(events) == conflicts
    for span, event in events:
        attrs = dict(event.attributes or {})
        assert attrs["autoplay.attempt"] >= 1
        # Revision tokens (32 hex written by a manager, or a 40-hex SHA-1), never bodies.
        assert re.fullmatch(r"[0-9a-f]{32}|[0-9a-f]{40}", attrs["autoplay.revision.expected"])
        assert re.fullmatch(r"[0-9a-f]{32}|[0-9a-f]{40}", attrs["autoplay.revision.current"])
        assert attrs["autoplay.revision.expected"] != attrs["autoplay.revision.current"]
        assert span.attributes["autoplay.outcome"] == "ok"
    conflicted = [s for s in otel.spans() if s.attributes.get("autoplay.outcome") == "conflict"]
    assert len(conflicted) == conflicts
    assert all(s.name == "swap_state memory" for s in conflicted)
    assert all(s.status.status_code is StatusCode.UNSET for s in conflicted)
    counters = otel.counters()
    assert counters["autoplay.state.cas.conflicts"] == {labels(): conflicts}
    assert counters["autoplay.fanout.results"] == {labels(result="all_ok"): 3}
    assert (
        otel.metrics()["autoplay.adapter.operation.duration"][
            labels(adapter="memory", role="primary", operation="swap_state", outcome="conflict")
        ]
        == conflicts
    )


async def test_summarizer_raising(otel: Otel) -> None:
    manager = StorageManager([InMemoryStorageAdapter()])

    async def summarizer(snapshot: SessionSnapshot) -> str:
        raise ValueError("the LLM said no")

    result = await end_session(PRODUCT, USER, snapshot_of("s1", 1), manager, summarizer=summarizer)
    assert result.persisted and result.summary_error == "ValueError"

    end, summary = otel.span("autoplay.session.end"), otel.span("autoplay.summarizer")
    assert summary.parent == end.context
    assert summary.status.status_code is StatusCode.ERROR
    assert summary.status.description == "ValueError"
    assert dict(summary.attributes or {}) == {"autoplay.outcome": "error", "error.type": "ValueError"}
    assert end.attributes["autoplay.outcome"] == "ok"  # the session was still saved
    counters = otel.counters()
    assert counters["autoplay.summarizer.failures"] == {labels(error_type="ValueError"): 1}
    assert otel.metrics()["autoplay.summarizer.duration"] == {labels(): 1}


async def test_summarizer_timeout(otel: Otel) -> None:
    manager = StorageManager([InMemoryStorageAdapter()])

    async def summarizer(snapshot: SessionSnapshot) -> str:
        await asyncio.sleep(30)
        return "never"

    result = await end_session(
        PRODUCT, USER, snapshot_of("s1", 1), manager, summarizer=summarizer, summarizer_timeout=0.02
    )
    assert result.persisted and result.summary_error == "TimeoutError"
    summary = otel.span("autoplay.summarizer")
    assert dict(summary.attributes or {}) == {"autoplay.outcome": "timeout", "error.type": "TimeoutError"}
    assert otel.counters()["autoplay.summarizer.failures"] == {labels(error_type="TimeoutError"): 1}


async def test_index_overflowing_fifty(otel: Otel) -> None:
    primary = InMemoryStorageAdapter()
    state = init_user_state(USER)
    for n in range(1, 51):
        state.record_session(
            SessionIndexEntry(
                session_id=f"old_{n}", session_number=n, started_at=float(n), captured_at=n + 0.5
            )
        )
    assert await primary.swap_state(PRODUCT, USER, encode(state), None) == (True, None)
    manager = StorageManager([primary])
    result = await end_session(PRODUCT, USER, snapshot_of("s51", 51, 5_000.0), manager, summary="x")
    assert result.trimmed == 1

    end = otel.span("autoplay.session.end")
    assert end.attributes["autoplay.session_number"] == 51
    assert [(e.name, dict(e.attributes or {})) for e in end.events] == [
        ("autoplay.session_index.trimmed", {"autoplay.trimmed": 1})
    ]
    assert otel.counters()["autoplay.session_index.truncations"] == {labels(): 1}


async def test_corrupt_document_repaired(otel: Otel) -> None:
    primary = InMemoryStorageAdapter()
    document = json.loads(encode(init_user_state(USER)))
    del document["_v"]
    document["first_seen_at"] = "1700000000"
    await primary.save_user_state(PRODUCT, USER, document)
    result = await start_session(PRODUCT, USER, "s1", StorageManager([primary]))
    assert result.persisted and len(result.repairs) >= 1

    start = otel.span("autoplay.session.start")
    assert start.attributes["autoplay.outcome"] == "ok"
    assert [(e.name, dict(e.attributes or {})) for e in start.events] == [
        (
            "autoplay.document.repaired",
            {"autoplay.document": "state", "autoplay.repairs": len(result.repairs)},
        )
    ]
    for event in start.events:  # counts only, never the document
        assert "1700000000" not in json.dumps(dict(event.attributes or {}))
    assert otel.counters() == {
        "autoplay.documents.repaired": {labels(document="state"): 1},
        "autoplay.fanout.results": {labels(result="all_ok"): 1},
    }


@pytest.mark.parametrize(
    ("version", "event", "counter"),
    [
        (None, "autoplay.document.repaired", "autoplay.documents.repaired"),
        (99, "autoplay.document.refused", "autoplay.documents.refused"),
    ],
)
async def test_onboarding_snapshot_repaired_or_refused(
    otel: Otel, version: int | None, event: str, counter: str
) -> None:
    primary = InMemoryStorageAdapter()
    state = init_user_state(USER)
    state.record_session(
        SessionIndexEntry(session_id="s_on", session_number=1, started_at=1.0, captured_at=2.0)
    )
    await primary.swap_state(PRODUCT, USER, encode(state), None)
    document = json.loads(encode(snapshot_of("s_on", 1)))
    if version is None:
        del document["_v"]
    else:
        document["_v"] = version
    assert await primary.create_snapshot(PRODUCT, USER, "s_on", json.dumps(document).encode())
    result = await start_session(PRODUCT, USER, "s2", StorageManager([primary]))
    assert result.persisted
    assert (result.onboarding_session is None) == (version is not None)

    start = otel.span("autoplay.session.start")
    events = [(e.name, dict(e.attributes or {})) for e in start.events]
    assert len(events) == 1 and events[0][0] == event
    assert events[0][1]["autoplay.document"] == "snapshot"
    assert start.attributes["autoplay.outcome"] == "ok"
    counters = otel.counters()
    assert counters[counter] == {labels(document="snapshot"): 1}
    assert "autoplay.documents.repaired" not in counters or counter == "autoplay.documents.repaired"


async def test_unsupported_document_refused(otel: Otel) -> None:
    primary = InMemoryStorageAdapter()
    document = json.loads(encode(init_user_state(USER)))
    document["_v"] = 99
    await primary.save_user_state(PRODUCT, USER, document)
    result = await start_session(PRODUCT, USER, "s1", StorageManager([primary]))
    assert not result.persisted

    start = otel.span("autoplay.session.start")
    assert start.status.status_code is StatusCode.ERROR
    assert start.attributes["autoplay.outcome"] == "not_persisted"
    assert [e.name for e in start.events] == ["autoplay.document.refused", "autoplay.state.not_persisted"]
    assert otel.counters() == {
        "autoplay.documents.refused": {labels(document="state"): 1},
        "autoplay.sessions.not_persisted": {labels(phase="start"): 1},
        "autoplay.fanout.results": {labels(result="primary_failed"): 1},
    }


async def test_redis_spans_follow_database_conventions(otel: Otel) -> None:
    adapter = RedisStorageAdapter(client=fakeredis.aioredis.FakeRedis())
    described = adapter.describe()
    manager = StorageManager([adapter])
    started = await start_session(PRODUCT, USER, "s1", manager)
    ended = await end_session(PRODUCT, USER, snapshot_of("s1", 1), manager, summary="x")

    calls = [(c.operation, c.outcome.value) for c in (*started.adapter_calls, *ended.adapter_calls)]
    assert calls == [("load_state", "not_found"), ("swap_state", "ok"), ("freeze_and_swap", "ok")]
    server = {
        "db.system.name": "redis",
        "db.namespace": "0",
        "server.address": described["server.address"],
        "server.port": described["server.port"],
    }
    spans = sorted((s for s in otel.spans() if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time)
    assert [(s.name, dict(s.attributes or {})) for s in spans] == [
        (
            "GET 0",
            {
                **adapter_attrs("redis", "primary", "load_state", "not_found"),
                **server,
                "db.operation.name": "GET",
            },
        ),
        (
            "EVALSHA 0",
            {
                **adapter_attrs("redis", "primary", "swap_state", "ok"),
                **server,
                "db.operation.name": "EVALSHA",
            },
        ),
        (
            "PIPELINE 0",
            {
                **adapter_attrs("redis", "primary", "freeze_and_swap", "ok"),
                **server,
                "db.operation.name": "PIPELINE",
                "db.operation.batch.size": 2,
            },
        ),
    ]
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)
    db = otel.points("db.client.operation.duration")
    assert db == {
        labels(**server, **{"db.operation.name": "GET"}): 1,
        labels(**server, **{"db.operation.name": "EVALSHA"}): 1,
        labels(**server, **{"db.operation.name": "PIPELINE"}): 1,
    }
    assert otel.buckets("db.client.operation.duration") == (
        0.001,
        0.005,
        0.01,
        0.05,
        0.1,
        0.5,
        1.0,
        5.0,
        10.0,
    )


async def test_redis_error_type_is_the_error_prefix(otel: Otel) -> None:
    client = fakeredis.aioredis.FakeRedis()
    adapter = RedisStorageAdapter(client=client)
    await client.rpush(user_state_key(PRODUCT, USER), "not a document")
    result = await start_session(PRODUCT, USER, "s1", StorageManager([adapter]))
    assert result.degraded and not result.persisted

    get = otel.span("GET 0")
    assert get.status.status_code is StatusCode.ERROR
    assert get.status.description == "WRONGTYPE"
    assert dict(get.attributes or {}) == {
        **adapter_attrs("redis", "primary", "load_state", "error"),
        **adapter.describe(),
        "db.operation.name": "GET",
        "error.type": "WRONGTYPE",
        "db.response.status_code": "WRONGTYPE",
    }
    assert otel.counters()["autoplay.adapter.operation.failures"] == {
        labels(adapter="redis", role="primary", operation="load_state", error_type="ResponseError"): 1
    }
    assert otel.points("db.client.operation.duration") == {
        labels(**adapter.describe(), **{"db.operation.name": "GET", "error.type": "WRONGTYPE"}): 1
    }


# ------------------------------------------------------------------------------ switches


async def test_switched_off_records_nothing(otel: Otel) -> None:
    telemetry.set_enabled(False)
    manager = StorageManager([DownPrimary()])
    result = await start_session(PRODUCT, USER, "s1", manager)
    assert result.degraded
    assert otel.spans() == []
    assert otel.metrics() == {}


async def test_no_sdk_starts_invalid_spans_and_attaches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import context as otel_context

    telemetry.use_providers()
    attached: list[object] = []
    real_attach = otel_context.attach

    def counting_attach(ctx: Any) -> object:
        attached.append(ctx)
        return real_attach(ctx)

    monkeypatch.setattr(otel_context, "attach", counting_attach)
    result = await start_session(PRODUCT, USER, "s1", StorageManager([InMemoryStorageAdapter()]))
    assert result.persisted
    assert attached == []  # no SDK: nothing made current, no context switch


async def test_use_providers_swaps_the_object_and_resets(otel: Otel) -> None:
    from autoplay_obs.telemetry import _telemetry

    injected = telemetry.current()
    assert injected is not None and injected.tracer_provider is not None
    telemetry.use_providers()
    assert telemetry.current() is _telemetry._global
    telemetry.set_enabled(False)
    assert telemetry.current() is None
    telemetry.set_enabled(True)
    assert telemetry.current() is _telemetry._global


@pytest.mark.parametrize("mode", ["omit", "hashed", "raw"])
async def test_user_id_recording(otel: Otel, mode: str) -> None:
    telemetry.set_user_id_recording(mode, key="k3y")
    await start_session(PRODUCT, USER, "s1", StorageManager([InMemoryStorageAdapter()]))
    attrs = dict(otel.span("autoplay.session.start").attributes or {})
    expected = {
        "omit": None,
        "hashed": hmac.new(b"k3y", USER.encode(), hashlib.sha256).hexdigest(),
        "raw": USER,
    }[mode]
    assert attrs.get("autoplay.user_id") == expected
    for span in otel.spans():  # never anywhere else
        if span.name != "autoplay.session.start" or mode == "omit":
            assert USER not in json.dumps(dict(span.attributes or {}))


def test_user_id_env_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(telemetry.ENV_SWITCH, "off")
    monkeypatch.setenv(telemetry.ENV_RECORD_USER_ID, "hashed")
    monkeypatch.setenv(telemetry.ENV_USER_ID_KEY, "from-env")
    monkeypatch.setenv(telemetry.ENV_DB_METRICS, "off")
    monkeypatch.setenv(telemetry.ENV_SEMCONV_OPT_IN, "database, gen_ai_latest_experimental")
    state = Switches.from_env()
    assert state.enabled is False
    assert state.user_id_mode == "hashed" and state.user_id_key == b"from-env"
    assert state.db_metrics is False and state.genai is True and state.capture_content is False
    assert Switches.from_env({}) == Switches(True, "omit", Switches.from_env({}).user_id_key)


def test_instrument_table_is_the_only_definition() -> None:
    from autoplay_obs.telemetry import INSTRUMENTS

    names = {i.name for i in INSTRUMENTS.values()}
    assert names == {
        "autoplay.adapter.operation.duration",
        "db.client.operation.duration",
        "autoplay.adapter.operation.failures",
        "autoplay.snapshot.writes",
        "autoplay.summaries.truncated",
        "autoplay.state.cas.conflicts",
        "autoplay.summarizer.duration",
        "autoplay.summarizer.failures",
        "autoplay.session_index.truncations",
        "autoplay.documents.repaired",
        "autoplay.documents.refused",
        "autoplay.sessions.not_persisted",
        "autoplay.fanout.results",
        "autoplay.sink.deliveries",
    }
    for inst in INSTRUMENTS.values():
        assert not {"user_id", "session_id", "product_id"} & set(inst.labels)
    assert INSTRUMENTS["adapter_duration"].buckets[0] == 0.0005
    assert INSTRUMENTS["adapter_duration"].buckets[-1] == 10.0


def test_importing_the_library_needs_neither_sdk_nor_prometheus_client() -> None:
    code = (
        "import sys\n"
        "import autoplay_obs.storage, autoplay_obs.telemetry\n"
        "loaded = [m for m in sys.modules if m.startswith(('prometheus_client', 'opentelemetry.sdk'))]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
