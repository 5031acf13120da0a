"""Span nesting, GenAI memory opt-in and privacy, proved with in-memory exporters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import fakeredis.aioredis
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from autoplay_obs import telemetry
from autoplay_obs.storage import (
    InMemoryStorageAdapter,
    RedisStorageAdapter,
    StorageManager,
    end_session,
    init_user_state,
    start_session,
)
from autoplay_obs.telemetry import _telemetry, prometheus
from autoplay_obs.user_adoption_state import SessionSnapshot

PRODUCT = "prod_1"
USER = "zq7-distinctive-user-4471"


class Captured:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]


@pytest.fixture
def otel() -> Iterator[Captured]:
    captured = Captured()
    telemetry.use_providers(captured.tracer_provider, captured.meter_provider)
    try:
        yield captured
    finally:
        telemetry.use_providers()
        sw = _telemetry.switches()
        sw.genai = sw.capture_content = False
        telemetry.set_user_id_recording("omit")
        captured.tracer_provider.shutdown()
        captured.meter_provider.shutdown()


def snapshot_of(session_id: str, number: int) -> SessionSnapshot:
    return SessionSnapshot.from_adoption_state(
        init_user_state(USER),
        session_id=session_id,
        session_number=number,
        started_at=1_900.0,
        catalog_workflow_ids=["wf_a"],
        now=2_000.0,
    )


class TracingPrimary(InMemoryStorageAdapter):
    """A custom adapter that records spans of its own inside each call."""

    name = "traced"

    def __init__(self, tracer: trace.Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    async def swap_state(self, product_id: str, user_id: str, raw: bytes, expected: str | None) -> Any:
        with self.tracer.start_as_current_span("custom.swap"):
            return await super().swap_state(product_id, user_id, raw, expected)


async def test_a_custom_adapters_own_span_is_a_child_of_the_adapter_span(otel: Captured) -> None:
    adapter = TracingPrimary(otel.tracer_provider.get_tracer("custom"))
    await start_session(PRODUCT, USER, "s1", StorageManager([adapter]))

    start, ours, theirs = (
        otel.span(n) for n in ("autoplay.session.start", "swap_state traced", "custom.swap")
    )
    assert ours.parent is not None and ours.parent.span_id == start.context.span_id
    assert theirs.parent is not None and theirs.parent.span_id == ours.context.span_id
    assert theirs.context.trace_id == start.context.trace_id
    assert ours.kind is SpanKind.CLIENT
    assert dict(ours.attributes or {}) == {
        "autoplay.adapter.name": "traced",
        "autoplay.adapter.role": "primary",
        "autoplay.operation": "swap_state",
        "autoplay.outcome": "ok",
        "db.system.name": "memory",
    }
    assert ours.start_time <= theirs.start_time and theirs.end_time <= ours.end_time


async def test_a_lost_compare_and_set_is_an_event_not_an_error(otel: Captured) -> None:
    shared = InMemoryStorageAdapter()
    first, second = StorageManager([shared]), StorageManager([shared])
    await start_session(PRODUCT, USER, "s0", first)
    await second.read_state(PRODUCT, USER)
    await start_session(PRODUCT, USER, "s1", first)  # second's known revision is now stale
    otel.exporter.clear()
    await start_session(PRODUCT, USER, "s2", second)

    swaps = sorted((s for s in otel.spans() if s.name == "swap_state memory"), key=lambda s: s.start_time)
    assert [s.attributes["autoplay.outcome"] for s in swaps] == ["conflict", "ok"]
    assert [e.name for e in swaps[0].events] == ["autoplay.state.cas_conflict"]
    assert all(s.status.status_code is StatusCode.UNSET for s in swaps)
    assert "error.type" not in (swaps[0].attributes or {})


async def test_genai_memory_attributes_only_when_opted_in(otel: Captured) -> None:
    manager = StorageManager([InMemoryStorageAdapter()])
    await start_session(PRODUCT, USER, "s1", manager)
    assert {s.name for s in otel.spans() if s.parent is None} == {"autoplay.session.start"}
    assert not any(k.startswith("gen_ai.") for s in otel.spans() for k in (s.attributes or {}))
    otel.exporter.clear()

    _telemetry.switches().genai = True
    await start_session(PRODUCT, USER, "s2", manager)
    await end_session(PRODUCT, USER, snapshot_of("s2", 1), manager, summary="knows the basics")
    memory = {"gen_ai.memory.store.name": "autoplay_obs", "gen_ai.memory.scope": "user"}
    memory["gen_ai.memory.type"] = "long_term"
    assert dict(otel.span("search_memory autoplay_obs").attributes or {}) == {
        "autoplay.product_id": PRODUCT,
        "autoplay.session_id": "s2",
        "autoplay.session_number": 1,
        "autoplay.outcome": "ok",
        "gen_ai.operation.name": "search_memory",
        "gen_ai.conversation.id": "s2",
        "gen_ai.memory.search.result.count": 1,
        **memory,
    }
    assert dict(otel.span("update_memory autoplay_obs").attributes or {}) == {
        "autoplay.product_id": PRODUCT,
        "autoplay.session_id": "s2",
        "autoplay.session_number": 1,
        "autoplay.outcome": "ok",
        "gen_ai.operation.name": "update_memory",
        "gen_ai.conversation.id": "s2",
        "gen_ai.memory.update.strategy": "merge",
        **memory,
    }
    otel.exporter.clear()
    _telemetry.switches().capture_content = True
    await end_session(PRODUCT, USER, snapshot_of("s3", 2), manager, summary="now an expert")
    assert otel.span("update_memory autoplay_obs").attributes["gen_ai.memory.content"] == "now an expert"


class ListSink:
    name = "list_sink"

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        self.seen.append("state")

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        return None

    async def save_session_snapshot(
        self, product_id: str, user_id: str, sid: str, doc: dict[str, Any]
    ) -> None:
        self.seen.append("snapshot")

    async def get_session_snapshot(self, product_id: str, user_id: str, sid: str) -> dict[str, Any] | None:
        return None


async def test_no_span_event_attribute_or_label_carries_the_user_id(otel: Captured) -> None:
    sw = _telemetry.switches()
    sw.genai = sw.capture_content = True
    prometheus.enable()
    try:
        client = fakeredis.aioredis.FakeRedis()
        manager = StorageManager([RedisStorageAdapter(client=client), ListSink()])
        await start_session(PRODUCT, USER, "s1", manager)
        await end_session(PRODUCT, USER, snapshot_of("s1", 1), manager, summary="done")
        await start_session(PRODUCT, USER, "s2", manager)
        await manager.drain()
        exposed = prometheus.registry()
        from prometheus_client.openmetrics.exposition import generate_latest

        text = generate_latest(exposed).decode()
    finally:
        prometheus.disable()
    assert otel.spans() and manager.sinks[0].seen  # type: ignore[attr-defined]
    for span in otel.spans():
        dumped = json.dumps(
            [
                span.name,
                dict(span.attributes or {}),
                [(e.name, dict(e.attributes or {})) for e in span.events],
            ]
        )
        assert USER not in dumped, span.name
    data = otel.reader.get_metrics_data()
    assert data is not None
    points = [
        point
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric.data.data_points
    ]
    assert points
    assert all(USER not in json.dumps(dict(p.attributes or {})) for p in points)
    assert "db_client_operation_duration_seconds" in text and USER not in text


def test_only_the_apis_own_providers_count_as_no_sdk() -> None:
    from opentelemetry import metrics

    assert _telemetry._api_own(trace.get_tracer_provider())  # the proxy, nothing set in tests
    assert _telemetry._api_own(metrics.get_meter_provider())
    assert _telemetry._api_own(trace.NoOpTracerProvider())
    assert _telemetry._api_own(metrics.NoOpMeterProvider())
    assert not _telemetry._api_own(TracerProvider())
    assert not _telemetry._api_own(MeterProvider())


async def test_with_no_sdk_failures_are_still_logged(caplog: pytest.LogCaptureFixture) -> None:
    from autoplay_obs.errors import StorageUnavailableError
    from autoplay_obs.telemetry import _hooks

    class Down(InMemoryStorageAdapter):
        name = "down"

        async def load_state(self, product_id: str, user_id: str) -> Any:
            raise StorageUnavailableError("refused")

    telemetry.use_providers()
    _hooks.log.reset()
    current = telemetry.current()
    assert current is not None and current.idle()
    caplog.set_level("WARNING", logger="autoplay_obs")
    result = await start_session(PRODUCT, USER, "s1", StorageManager([Down()]))
    assert result.degraded
    assert sorted(r.getMessage() for r in caplog.records if r.name == "autoplay_obs") == [
        "primary down load_state error: StorageUnavailableError",
        "session start not persisted: StorageUnavailableError",
    ]
    _hooks.log.reset()


async def test_the_sinks_describe_their_endpoint_from_one_base() -> None:
    from autoplay_obs.storage.adapters._sink import AnalyticsSink
    from autoplay_obs.storage.adapters.amplitude import AmplitudeStorageAdapter
    from autoplay_obs.storage.adapters.posthog import PostHogStorageAdapter

    posthog_sink = PostHogStorageAdapter("k", host="https://eu.i.posthog.com", close_timeout=0.2)
    amplitude_sink = AmplitudeStorageAdapter(
        "k", server_url="http://127.0.0.1:8123/2/httpapi", close_timeout=0.2
    )
    try:
        assert isinstance(posthog_sink, AnalyticsSink) and isinstance(amplitude_sink, AnalyticsSink)
        assert posthog_sink.describe() == {"server.address": "eu.i.posthog.com", "server.port": 443}
        assert amplitude_sink.describe() == {"server.address": "127.0.0.1", "server.port": 8123}
        assert await posthog_sink.get_user_state(PRODUCT, USER) is None
    finally:
        await posthog_sink.aclose()
        await amplitude_sink.aclose()
