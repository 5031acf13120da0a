"""The host's own Redis instrumentation sees every command a session start and end send.

The adapter talks to Redis through redis-py's public API only (commands, a
registered script, a non-transactional pipeline), so the instrumentation a
host already runs covers our traffic like its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from autoplay_obs import telemetry
from autoplay_obs.storage import RedisStorageAdapter, StorageManager, end_session, start_session
from autoplay_obs.user_adoption_state import SessionSnapshot

P, U = "prod_1", "u_1"
T0 = 1_760_000_000.0


@pytest.fixture
def host_spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        instrumentor.uninstrument()


async def test_every_command_of_a_start_and_end_pair_is_a_host_span(
    redis_url: str, host_spans: InMemorySpanExporter
) -> None:
    async with StorageManager([RedisStorageAdapter(redis_url=redis_url)]) as storage:
        started = await start_session(P, U, "s1", storage)  # cold: read, then compare-and-set
        snapshot = SessionSnapshot.from_adoption_state(
            started.state, session_id="s1", session_number=1, started_at=T0, catalog_workflow_ids=["a"]
        )
        host_spans.clear()
        await start_session(P, U, "s1", storage)  # warm: the compare-and-set alone
        ended = await end_session(P, U, snapshot, storage, summary="done")
    assert ended.persisted and ended.snapshot_created is True
    names = [span.name for span in host_spans.get_finished_spans()]
    statements = [
        str((span.attributes or {}).get("db.statement", "")) for span in host_spans.get_finished_spans()
    ]
    assert names[0] == "EVALSHA"  # the start's compare-and-set
    # the end's snapshot SET NX and its compare-and-set, one pipeline, the snapshot first
    assert len(names) == 2, names
    assert statements[1].index("SET") < statements[1].index("EVALSHA"), statements[1]
    assert all(span.status.is_ok for span in host_spans.get_finished_spans())


async def test_the_hosts_redis_spans_are_children_of_ours(redis_url: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    telemetry.use_providers(provider)
    try:
        async with StorageManager([RedisStorageAdapter(redis_url=redis_url)]) as storage:
            started = await start_session(P, "u_2", "s1", storage)
            snapshot = SessionSnapshot.from_adoption_state(
                started.state, session_id="s1", session_number=1, started_at=T0, catalog_workflow_ids=["a"]
            )
            await end_session(P, "u_2", snapshot, storage, summary="done")
    finally:
        telemetry.use_providers()
        instrumentor.uninstrument()
    spans = list(exporter.get_finished_spans())
    by_id = {s.context.span_id: s for s in spans}
    ours = {s.name for s in spans if s.instrumentation_scope.name == "autoplay_obs"}
    assert ours == {"autoplay.session.start", "autoplay.session.end", "GET 0", "EVALSHA 0", "PIPELINE 0"}
    hosts = [s for s in spans if s.instrumentation_scope.name != "autoplay_obs"]
    parents = sorted((s.name, by_id[s.parent.span_id].name) for s in hosts if s.parent is not None)
    assert len(parents) == len(hosts)  # every host span has a parent of ours
    assert parents == [("EVALSHA", "EVALSHA 0"), ("GET", "GET 0"), ("SET EVALSHA", "PIPELINE 0")], parents
    pipeline = next(s for s in spans if s.name == "PIPELINE 0")
    assert pipeline.attributes["db.operation.batch.size"] == 2
    assert pipeline.attributes["db.operation.name"] == "PIPELINE"
