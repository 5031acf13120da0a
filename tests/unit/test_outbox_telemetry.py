"""The outbox, observed: queue and replay spans (the replay linked to the end that queued it) and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from autoplay_obs import telemetry
from autoplay_obs.errors import StorageUnavailableError
from autoplay_obs.storage import InMemoryStorageAdapter, Outbox, StorageManager, end_session
from autoplay_obs.storage._protocol import Stored
from autoplay_obs.user_adoption_state import SessionSnapshot, UserAdoptionState

P, U = "prod", "u_1"
T0 = 1_760_000_000.0


class Switchable(InMemoryStorageAdapter):
    """The in-memory primary, unreachable while ``down``."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise StorageUnavailableError("memory: switched off")

    async def load_state(self, product_id: str, user_id: str) -> Stored | None:
        self._check()
        return await super().load_state(product_id, user_id)

    async def create_snapshot(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> bool:
        self._check()
        return await super().create_snapshot(product_id, user_id, session_id, raw)

    async def swap_state(
        self, product_id: str, user_id: str, raw: bytes, expected: str | None
    ) -> tuple[bool, Stored | None]:
        self._check()
        return await super().swap_state(product_id, user_id, raw, expected)


@pytest.fixture
def otel() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.use_providers(tracer_provider, meter_provider)
    try:
        yield exporter, reader
    finally:
        telemetry.use_providers()
        tracer_provider.shutdown()
        meter_provider.shutdown()


def metric_points(reader: InMemoryMetricReader) -> dict[str, dict[frozenset[tuple[str, Any]], float]]:
    out: dict[str, dict[frozenset[tuple[str, Any]], float]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    value = point.count if isinstance(point, HistogramDataPoint) else point.value
                    out.setdefault(metric.name, {})[frozenset((point.attributes or {}).items())] = value
    return out


def snapshot(n: int) -> SessionSnapshot:
    return SessionSnapshot.from_adoption_state(
        UserAdoptionState(user_id=U),
        session_id=f"s{n}",
        session_number=n,
        started_at=T0 + n,
        catalog_workflow_ids=["a"],
        now=T0 + 100 + n,
    )


async def test_a_queued_end_and_its_replay_are_spans_linked_and_counted(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader], tmp_path: Path
) -> None:
    exporter, reader = otel
    primary = Switchable()
    storage = StorageManager([primary], outbox=Outbox(tmp_path / "o.db", max_entries=2), replay_interval=3600)
    primary.down = True
    results = [await end_session(P, U, snapshot(n), storage, summary="x") for n in (1, 2, 3)]
    assert [r.queued for r in results] == [True, True, True]
    primary.down = False
    flushed = await storage.flush_outbox()
    assert (flushed.replayed, flushed.remaining, flushed.dropped) == (2, 0, 1)
    await storage.aclose()

    spans = exporter.get_finished_spans()
    ends = [s for s in spans if s.name == "autoplay.session.end"]
    queues = [s for s in spans if s.name == "autoplay.outbox.queue"]
    replays = [
        s
        for s in spans
        if s.name == "autoplay.outbox.replay" and dict(s.attributes or {})["autoplay.outcome"] == "replayed"
    ]  # the background replay also tried while the primary was down: those failed
    assert len(ends) == 3 and len(queues) == 3 and len(replays) == 2
    assert all(q.parent is not None and q.parent.span_id in {e.context.span_id for e in ends} for q in queues)
    assert all(any(ev.name == "autoplay.outbox.queued" for ev in e.events) for e in ends)
    # each replay links to the queuing of its session end (a child of that end's span): the
    # two newest survived the bound
    linked = {link.context.span_id for r in replays for link in r.links}
    assert linked == {queues[1].context.span_id, queues[2].context.span_id}
    assert all(link.context.trace_id == queues[1].context.trace_id for link in replays[0].links) or all(
        link.context.trace_id == queues[2].context.trace_id for link in replays[0].links
    )

    points = metric_points(reader)
    assert points["autoplay.outbox.queued"] == {frozenset(): 3}
    assert points["autoplay.outbox.replayed"] == {frozenset(): 2}
    assert points["autoplay.outbox.dropped"] == {frozenset({("reason", "max_entries")}): 1}
    assert points["autoplay.outbox.replay.duration"][frozenset({("outcome", "replayed")})] == 2
    assert points["autoplay.outbox.depth"] == {frozenset(): 0}
    assert points["autoplay.outbox.oldest_age"] == {frozenset(): 0.0}


async def test_an_entry_whose_document_is_refused_is_parked_and_counted(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader], tmp_path: Path
) -> None:
    _, reader = otel
    primary = Switchable()
    storage = StorageManager([primary], outbox=tmp_path / "o.db", replay_interval=3600)
    primary.down = True
    assert (await end_session(P, U, snapshot(1), storage, summary="x")).queued
    primary.down = False
    await primary._put_state(P, U, b'{"_v": 2, "user_id": "u_1"}')  # a newer writer's document
    flushed = await storage.flush_outbox()  # or the background replay got there first
    assert (flushed.replayed, flushed.remaining) == (0, 0)
    assert storage.outbox is not None and (await storage.outbox.status()).parked == 1
    await storage.aclose()
    assert metric_points(reader)["autoplay.outbox.parked"] == {frozenset({("reason", "state_refused")}): 1}


class MergeFails(Switchable):
    """Freezes snapshots, but the compare-and-set fails while ``down``."""

    async def load_state(self, product_id: str, user_id: str) -> Stored | None:
        return await InMemoryStorageAdapter.load_state(self, product_id, user_id)

    async def create_snapshot(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> bool:
        return await InMemoryStorageAdapter.create_snapshot(self, product_id, user_id, session_id, raw)


async def test_a_replayed_end_older_than_a_full_index_still_counts_when_its_own_freeze_landed(
    tmp_path: Path,
) -> None:
    """Its snapshot is there (its own original write), and the index cannot tell: the
    write's own head says this end froze it, so the replay counts it instead of calling it a retry."""
    primary = MergeFails()
    storage = StorageManager([primary], outbox=tmp_path / "o.db", replay_interval=3600)
    primary.down = True
    late = await end_session(P, U, snapshot(1), storage, summary="x")
    assert late.queued and late.snapshot_created is True
    primary.down = False
    for n in range(2, 58):  # 56 newer sessions: the index is full of sessions newer than the queued one
        assert (await end_session(P, U, snapshot(n), storage, summary="x")).persisted
    await storage.flush_outbox()
    await storage.aclose()
    doc = await primary.get_user_state(P, U)
    assert doc is not None and doc["sessions"]["count"] == 57
