"""The Prometheus side: families built from the instrument table, exemplars that match spans."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from autoplay_obs import telemetry
from autoplay_obs.errors import MissingDependencyError
from autoplay_obs.storage import InMemoryStorageAdapter, StorageManager, start_session
from autoplay_obs.telemetry import INSTRUMENTS, prometheus

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@dataclass
class Prom:
    exporter: InMemorySpanExporter
    registry: CollectorRegistry

    def families(self) -> dict[str, Any]:
        text = openmetrics_latest(self.registry).decode()
        return {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def span(self, name: str) -> ReadableSpan:
        found = [s for s in self.exporter.get_finished_spans() if s.name == name]
        assert len(found) == 1, [s.name for s in self.exporter.get_finished_spans()]
        return found[0]


@pytest.fixture
def prom_otel() -> Iterator[Prom]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_providers(tracer_provider=provider)
    registry = prometheus.enable()
    try:
        yield Prom(exporter, registry)
    finally:
        prometheus.disable()
        telemetry.use_providers()
        provider.shutdown()


class FailingSink:
    def __init__(self, name: str) -> None:
        self.name = name

    async def save_user_state(self, *args: Any) -> None:
        raise ConnectionError("sink unreachable")

    async def get_user_state(self, *args: Any) -> None:
        return None

    async def save_session_snapshot(self, *args: Any) -> None:
        raise ConnectionError("sink unreachable")

    async def get_session_snapshot(self, *args: Any) -> None:
        return None


def trace_id_of(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


def test_every_instrument_is_a_family_with_its_labels(prom_otel: Prom) -> None:
    described = {m.name: m for m in prom_otel.registry.collect()}
    for inst in INSTRUMENTS.values():
        family = described[inst.prometheus_name]
        assert family.type == inst.prometheus_type
        assert family.documentation == inst.description
        assert family.unit == inst.prometheus_unit
    assert INSTRUMENTS["adapter_duration"].prometheus_name == "autoplay_adapter_operation_duration_seconds"
    assert INSTRUMENTS["adapter_failures"].prometheus_name == "autoplay_adapter_operation_failures"


async def test_samples_carry_the_span_trace_id_as_exemplar(prom_otel: Prom) -> None:
    sink = FailingSink(f"sink_{uuid.uuid4().hex[:8]}")
    manager = StorageManager([InMemoryStorageAdapter(), sink])
    before = prom_otel.value("autoplay_fanout_results_total", result="degraded")
    await start_session("prod", "user", "s1", manager)
    await manager.drain()

    failed_span = prom_otel.span(f"save_user_state {sink.name}")
    families = prom_otel.families()
    failures = [
        s
        for s in families["autoplay_adapter_operation_failures"].samples
        if s.labels.get("adapter") == sink.name and s.name.endswith("_total")
    ]
    assert [(s.labels, s.value) for s in failures] == [
        (
            {
                "adapter": sink.name,
                "role": "sink",
                "operation": "save_user_state",
                "error_type": "ConnectionError",
            },
            1.0,
        )
    ]
    assert failures[0].exemplar is not None
    assert failures[0].exemplar.labels == {"trace_id": trace_id_of(failed_span)}

    buckets = [
        s
        for s in families["autoplay_adapter_operation_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels.get("adapter") == sink.name and s.exemplar is not None
    ]
    assert len(buckets) == 1
    assert buckets[0].labels["outcome"] == "error"
    assert buckets[0].exemplar.labels == {"trace_id": trace_id_of(failed_span)}
    # the whole lifecycle call shares one trace: the session span's id is the exemplar of its verdict
    session = prom_otel.span("autoplay.session.start")
    assert trace_id_of(session) == trace_id_of(failed_span)
    assert prom_otel.value("autoplay_fanout_results_total", result="degraded") == before + 1


async def test_without_a_tracer_samples_have_no_exemplar(prom_otel: Prom) -> None:
    telemetry.use_providers()  # no SDK: no spans, Prometheus still counts
    sink = FailingSink(f"sink_{uuid.uuid4().hex[:8]}")
    manager = StorageManager([InMemoryStorageAdapter(), sink])
    await start_session("prod", "user", "s1", manager)
    await manager.drain()
    failures = [
        s
        for s in prom_otel.families()["autoplay_adapter_operation_failures"].samples
        if s.labels.get("adapter") == sink.name and s.name.endswith("_total")
    ]
    assert [(s.value, s.exemplar) for s in failures] == [(1.0, None)]
    assert prom_otel.exporter.get_finished_spans() == ()


def _call_wsgi(app: Any, accept: str | None) -> tuple[str, bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": ""}
    if accept:
        environ["HTTP_ACCEPT"] = accept
    body = b"".join(app(environ, start_response))
    assert seen["status"].startswith("200")
    return seen["headers"]["Content-Type"], body


def test_wsgi_app_negotiates_openmetrics(prom_otel: Prom) -> None:
    app = prometheus.make_wsgi_app()
    content_type, body = _call_wsgi(app, OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    assert b"# TYPE autoplay_adapter_operation_duration_seconds histogram" in body
    content_type, body = _call_wsgi(app, None)
    assert content_type.startswith("text/plain")


async def test_asgi_app_serves_the_library_registry(prom_otel: Prom) -> None:
    app = prometheus.make_asgi_app()
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/metrics",
        "query_string": b"",
        "headers": [(b"accept", OPENMETRICS.encode())],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 200
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b"autoplay_fanout_results" in body


def test_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(MissingDependencyError, match=r"autoplay-obs\[prometheus\]"):
        prometheus.make_wsgi_app()


def test_library_registry_is_private(prom_otel: Prom) -> None:
    from prometheus_client import REGISTRY

    assert prom_otel.registry is not REGISTRY
    assert REGISTRY.get_sample_value("autoplay_fanout_results_total", {"result": "all_ok"}) is None


async def test_disabled_prometheus_records_nothing(prom_otel: Prom) -> None:
    prometheus.disable()
    before = prom_otel.value("autoplay_fanout_results_total", result="all_ok")
    await start_session("prod", "user", "s1", StorageManager([InMemoryStorageAdapter()]))
    await asyncio.sleep(0)
    assert prom_otel.value("autoplay_fanout_results_total", result="all_ok") == before
