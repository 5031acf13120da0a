"""Scrape the real ``/metrics`` endpoint over HTTP, in OpenMetrics, and lint it with promtool.

promtool 2.x ``check metrics`` parses the classic text format only (an
OpenMetrics exemplar is a parse error to it), so the same endpoint is scraped
twice: with ``Accept: application/openmetrics-text`` for the families,
labels and exemplars (parsed by prometheus_client's strict OpenMetrics
parser), and with the default Accept for promtool's lint.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from autoplay_obs import telemetry
from autoplay_obs.errors import StorageUnavailableError
from autoplay_obs.storage import InMemoryStorageAdapter, StorageManager, end_session, start_session
from autoplay_obs.telemetry import INSTRUMENTS, configure_telemetry, prometheus
from autoplay_obs.user_adoption_state import SessionSnapshot

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


RUN = uuid.uuid4().hex[:8]  # the library's registry is per process: label this test's samples apart


class Primary(InMemoryStorageAdapter):
    name = f"memory_{RUN}"


class DeadSink:
    name = f"dead_sink_{RUN}"

    async def save_user_state(self, *args: Any) -> None:
        raise StorageUnavailableError("connection refused")

    async def get_user_state(self, *args: Any) -> None:
        return None

    async def save_session_snapshot(self, *args: Any) -> None:
        raise StorageUnavailableError("connection refused")

    async def get_session_snapshot(self, *args: Any) -> None:
        return None


@pytest.fixture
def metrics_endpoint() -> Iterator[tuple[str, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_providers(tracer_provider=provider)
    server, thread = prometheus.start_http_server(0)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics", exporter
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        prometheus.disable()
        telemetry.use_providers()
        provider.shutdown()


def scrape(url: str, accept: str | None) -> tuple[str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


@pytest.mark.prometheus
async def test_scrape_openmetrics_with_exemplars_and_promtool(
    metrics_endpoint: tuple[str, InMemorySpanExporter],
) -> None:
    url, exporter = metrics_endpoint
    manager = StorageManager([Primary(), DeadSink()])
    started = await start_session("prod", "user", "s1", manager)
    snapshot = SessionSnapshot.from_adoption_state(
        started.state, session_id="s1", session_number=1, started_at=1.0, catalog_workflow_ids=[], now=2.0
    )
    await end_session("prod", "user", snapshot, manager, summary="done")
    await manager.drain()
    span_trace_ids = {format(s.context.trace_id, "032x") for s in exporter.get_finished_spans()}
    assert len(span_trace_ids) == 2  # one trace per lifecycle call

    content_type, text = await asyncio.to_thread(scrape, url, OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for inst in INSTRUMENTS.values():
        assert families[inst.prometheus_name].type == inst.prometheus_type

    durations = families["autoplay_adapter_operation_duration_seconds"]
    assert durations.unit == "seconds"
    swap_counts = [
        s
        for s in durations.samples
        if s.name.endswith("_count")
        and s.labels.get("operation") == "swap_state"
        and s.labels["adapter"] == Primary.name
    ]
    assert swap_counts and swap_counts[0].labels == {
        "adapter": Primary.name,
        "role": "primary",
        "operation": "swap_state",
        "outcome": "ok",
    }
    exemplars = [
        s.exemplar
        for s in durations.samples
        if s.exemplar is not None and s.labels["adapter"] in (Primary.name, DeadSink.name)
    ]
    assert exemplars
    assert {e.labels["trace_id"] for e in exemplars} <= span_trace_ids
    assert {e.labels["trace_id"] for e in exemplars} == span_trace_ids  # start and end both linked

    failures = [
        s
        for s in families["autoplay_adapter_operation_failures"].samples
        if s.name.endswith("_total") and s.labels["adapter"] == DeadSink.name
    ]
    assert sorted((s.labels["operation"], s.labels["error_type"], s.value) for s in failures) == [
        ("save_session_snapshot", "StorageUnavailableError", 1.0),
        ("save_user_state", "StorageUnavailableError", 2.0),
    ]
    assert all(s.exemplar is not None and s.exemplar.labels["trace_id"] in span_trace_ids for s in failures)
    fanout = {
        s.labels["result"]: s.value
        for s in families["autoplay_fanout_results"].samples
        if s.name.endswith("_total")
    }
    assert fanout.get("degraded", 0) >= 2

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (CI installs Debian's prometheus)")
    _, classic = await asyncio.to_thread(scrape, url, None)
    assert "autoplay_adapter_operation_failures_total" in classic
    checked = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=classic.encode(),
        capture_output=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr.decode() + checked.stdout.decode()


class _Collector(BaseHTTPRequestHandler):
    """A stand-in OTLP/HTTP collector: records the paths posted to, answers 200."""

    paths: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def test_configure_telemetry_exports_otlp_and_serves_prometheus() -> None:
    collector = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    handle = configure_telemetry(
        service_name="autoplay-test",
        prometheus_port=0,
        otlp_endpoint=f"http://127.0.0.1:{collector.server_port}",
        install_globally=False,
    )
    try:
        assert handle.prometheus_port
        await start_session("prod", "user", "s1", StorageManager([Primary()]))
        _, text = await asyncio.to_thread(
            scrape, f"http://127.0.0.1:{handle.prometheus_port}/metrics", OPENMETRICS
        )
        assert f'adapter="{Primary.name}"' in text
        await asyncio.to_thread(handle.shutdown)  # flushes the batch span processor and the metric reader
        assert "/v1/traces" in _Collector.paths
        assert "/v1/metrics" in _Collector.paths
    finally:
        collector.shutdown()
        collector.server_close()
        prometheus.disable()
        telemetry.use_providers()


async def test_shutdown_with_an_unreachable_collector_is_bounded_by_export_timeout() -> None:
    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    handle = configure_telemetry(
        service_name="autoplay-test",
        otlp_endpoint=f"http://127.0.0.1:{dead_port}",
        install_globally=False,
        export_timeout=1.0,
    )
    try:
        await start_session("prod", "user", "s1", StorageManager([Primary()]))
        started = time.monotonic()
        await asyncio.to_thread(handle.shutdown)
        # The SDK's defaults retry for tens of seconds; a 1 s budget per export keeps it to a few.
        assert time.monotonic() - started < 8.0
    finally:
        telemetry.use_providers()
