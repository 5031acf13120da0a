"""Sink delivery ledgers surface as the ``autoplay.sink.deliveries`` metric, in OTel and Prometheus."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from autoplay_obs import telemetry
from autoplay_obs.storage.adapters._analytics import DeliveryLedger
from autoplay_obs.telemetry import prometheus


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry.use_providers(meter_provider=provider)
    try:
        yield reader
    finally:
        telemetry.use_providers()
        provider.shutdown()


def _settle(ledger: DeliveryLedger) -> None:
    for key in ("a", "b", "c", "d"):
        ledger.begin(key)
    ledger.settle("a", "delivered", "acknowledged")
    ledger.settle("b", "delivered", "acknowledged")
    ledger.settle("c", "failed", "http_500")
    ledger.refuse("e", "queue_full")  # enqueued and dropped at once; "d" stays in flight


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    try:
        yield prometheus.enable()
    finally:
        prometheus.disable()


def test_prometheus_exposes_each_ledger_outcome_with_its_reason(registry: CollectorRegistry) -> None:
    ledger = DeliveryLedger("test-sink-prom")
    _settle(ledger)
    text = generate_latest(registry).decode()
    family = next(f for f in text_string_to_metric_families(text) if f.name == "autoplay_sink_deliveries")
    mine = {
        (s.labels["outcome"], s.labels["reason"]): s.value
        for s in family.samples
        if s.labels["sink"] == "test-sink-prom" and s.name.endswith("_total")
    }
    assert mine == {
        ("enqueued", ""): 5,
        ("delivered", "acknowledged"): 2,
        ("failed", "http_500"): 1,
        ("dropped", "queue_full"): 1,
    }
    # One event is neither delivered, failed nor dropped yet: in flight, derived by subtraction.
    assert mine[("enqueued", "")] - sum(v for k, v in mine.items() if k[0] != "enqueued") == 1


def test_otel_reader_observes_the_same_totals(reader: InMemoryMetricReader) -> None:
    ledger = DeliveryLedger("test-sink-otel")
    _settle(ledger)
    data = reader.get_metrics_data()
    points = [
        point
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "autoplay.sink.deliveries"
        for point in metric.data.data_points
        if point.attributes["sink"] == "test-sink-otel"
    ]
    seen = {(p.attributes["outcome"], p.attributes["reason"]): p.value for p in points}
    assert seen[("enqueued", "")] == 5
    assert seen[("delivered", "acknowledged")] == 2
    assert seen[("dropped", "queue_full")] == 1


def test_a_collected_ledger_keeps_its_totals_so_the_counter_never_goes_backwards() -> None:
    import gc

    kept, dropped = DeliveryLedger("test-sink-retired"), DeliveryLedger("test-sink-retired")
    for i in range(5):
        kept.refuse(f"k{i}", "closed")
    for i in range(3):
        dropped.refuse(f"d{i}", "closed")
    before = telemetry_counts("test-sink-retired")
    del dropped
    gc.collect()
    assert telemetry_counts("test-sink-retired") == before == {("enqueued", ""): 8, ("dropped", "closed"): 8}
    assert kept.totals()["dropped"] == 5


def telemetry_counts(sink: str) -> dict[tuple[str, str], int]:
    from autoplay_obs.telemetry._delivery import delivery_counts

    return {(o, r): n for (s, o, r), n in delivery_counts().items() if s == sink}
