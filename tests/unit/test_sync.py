"""The blocking API (``autoplay_obs.storage.sync``) on the in-memory primary.

Real redis-server, forks and interpreter exit are in tests/integration/test_sync_integration.py.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from autoplay_obs import telemetry
from autoplay_obs.errors import CallTimeoutError, ConfigurationError, InvalidIdError
from autoplay_obs.storage import InMemoryStorageAdapter, StorageManager
from autoplay_obs.storage import sync as sync_api
from autoplay_obs.storage.sync import (
    SyncStorageManager,
    end_session,
    on_session_end,
    on_session_start,
    start_session,
)
from autoplay_obs.user_adoption_state import SessionSnapshot

P, U = "prod_1", "u_1"
MakeSnapshot = Callable[..., SessionSnapshot]


class RecordingSink:
    """A write-only sink that records what reached it, optionally after a wait."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.writes: list[tuple[str, str]] = []
        self.closed = False

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        await asyncio.sleep(self.delay)
        self.writes.append(("state", user_id))

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        return None

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        await asyncio.sleep(self.delay)
        self.writes.append(("snapshot", session_id))

    async def get_session_snapshot(
        self, product_id: str, user_id: str, session_id: str
    ) -> dict[str, Any] | None:
        return None

    async def aclose(self) -> None:
        self.closed = True


class HangingPrimary(InMemoryStorageAdapter):
    """Reads never answer while ``hang`` is set."""

    hang = True

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        if self.hang:
            await asyncio.Event().wait()  # nobody sets it: only a cancellation ends this
        return await super().get_user_state(product_id, user_id)


@pytest.fixture
def storage() -> Iterator[SyncStorageManager]:
    with SyncStorageManager([InMemoryStorageAdapter()]) as manager:
        yield manager


def test_all_is_explicit_sorted_and_exists() -> None:
    assert sync_api.__all__ == sorted(sync_api.__all__)
    assert [name for name in sync_api.__all__ if not hasattr(sync_api, name)] == []
    seed = {"SyncStorageManager", "end_session", "on_session_end", "on_session_start", "start_session"}
    assert seed <= set(sync_api.__all__)


def test_lifecycle_round_trip(storage: SyncStorageManager, make_snapshot: MakeSnapshot) -> None:
    state, onboarding = on_session_start(product_id=P, user_id=U, session_id="s1", storage=storage)
    assert (state.sessions.count, onboarding) == (0, None)
    updated = on_session_end(
        product_id=P, user_id=U, session_snapshot=make_snapshot("s1"), storage=storage, summary="first"
    )
    assert (updated.sessions.count, updated.onboarding.summary) == (1, "first")

    started = start_session(P, U, "s2", storage)
    assert started.persisted
    assert started.onboarding_session is not None and started.onboarding_session.session_id == "s1"
    ended = end_session(P, U, make_snapshot("s1"), storage)  # a retry of the first session
    assert (ended.duplicate, ended.snapshot_created, ended.state.sessions.count) == (True, False, 1)


def test_dict_methods_block(storage: SyncStorageManager) -> None:
    assert storage.get_user_state(P, U) is None
    storage.save_user_state(P, U, {"_v": 1, "user_id": U})
    found = storage.get_user_state(P, U)
    assert found is not None and found["user_id"] == U
    storage.save_session_snapshot(P, U, "s1", {"_v": 1, "session_id": "s1"})
    storage.save_session_snapshot(P, U, "s1", {"_v": 1, "session_id": "other"})  # write-once
    snapshot = storage.get_session_snapshot(P, U, "s1")
    assert snapshot is not None and snapshot["session_id"] == "s1"


def test_a_new_manager_method_is_one_line() -> None:
    """What ``_blocking`` gives: a blocking method with the async method's name, on the one loop."""
    seen: list[threading.Thread] = []

    async def where(manager: StorageManager, value: int) -> int:
        seen.append(threading.current_thread())
        return value * 2

    class Extended(SyncStorageManager):
        doubled = sync_api._blocking(where)  # type: ignore[arg-type]

    with Extended([InMemoryStorageAdapter()]) as extended:
        assert extended.doubled(21) == 42
        assert extended.doubled.__name__ == "where"
        assert seen == [extended._loop.thread]


def test_bad_arguments_raise_typed(storage: SyncStorageManager, make_snapshot: MakeSnapshot) -> None:
    with pytest.raises(InvalidIdError):
        on_session_start(P, "", "s1", storage)
    with pytest.raises(ConfigurationError, match="SyncStorageManager"):
        on_session_start(P, U, "s1", StorageManager([InMemoryStorageAdapter()]))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="call_timeout"):
        SyncStorageManager([InMemoryStorageAdapter()], call_timeout=0)


def test_manager_arguments_pass_through_and_fail_as_they_would() -> None:
    with SyncStorageManager([InMemoryStorageAdapter()], sink_timeout=1.5, max_summary_chars=300) as storage:
        assert (storage._manager.sink_timeout, storage._manager.max_summary_chars) == (1.5, 300)
    before = set(threading.enumerate())
    with pytest.raises(ConfigurationError, match="at least one adapter"):
        SyncStorageManager([])
    leftover = [t for t in threading.enumerate() if t not in before and t.name == "autoplay-obs-sync"]
    for thread in leftover:
        thread.join(5)
    assert [t for t in leftover if t.is_alive()] == []


def test_called_inside_a_running_loop_raises_at_once(
    storage: SyncStorageManager, make_snapshot: MakeSnapshot
) -> None:
    async def host() -> list[str]:
        errors = []
        calls: list[Callable[[], object]] = [
            lambda: on_session_start(P, U, "s1", storage),
            lambda: on_session_end(P, U, make_snapshot("s1"), storage, summary="x"),
            lambda: storage.get_user_state(P, U),
            lambda: storage.drain(),
            lambda: storage.close(),
            lambda: SyncStorageManager([InMemoryStorageAdapter()]),
        ]
        for call in calls:
            with pytest.raises(ConfigurationError, match="use the async API") as info:
                call()
            errors.append(str(info.value))
        return errors

    assert len(asyncio.run(asyncio.wait_for(host(), 10))) == 6
    assert not storage.closed
    assert on_session_start(P, U, "s1", storage)[0].sessions.current_session_id == "s1"


def test_a_call_from_the_managers_own_loop_is_refused_not_deadlocked(
    storage: SyncStorageManager, make_snapshot: MakeSnapshot
) -> None:
    """A summarizer calling back into the blocking API runs on the loop thread itself."""

    async def reentrant(snapshot: SessionSnapshot) -> str:
        on_session_start(P, "other", "s9", storage)
        return "unreachable"

    ended = end_session(P, U, make_snapshot("s1"), storage, summarizer=reentrant)
    assert (ended.persisted, ended.summary_error) == (True, "ConfigurationError")


def test_a_call_past_its_bound_raises_and_the_loop_stays_usable() -> None:
    primary = HangingPrimary()
    with SyncStorageManager([primary], call_timeout=0.2) as storage:
        with pytest.raises(CallTimeoutError):
            storage.get_user_state(P, U)
        primary.hang = False
        assert storage.get_user_state(P, U) is None
        assert isinstance(CallTimeoutError("x"), TimeoutError)


def test_close_flushes_sinks_and_is_final(make_snapshot: MakeSnapshot) -> None:
    sink = RecordingSink(delay=0.05)
    storage = SyncStorageManager([InMemoryStorageAdapter(), sink])
    on_session_start(P, U, "s1", storage)
    on_session_end(P, U, make_snapshot("s1"), storage, summary="x")
    thread = storage._loop.thread
    storage.close()
    assert ("snapshot", "s1") in sink.writes and sink.closed
    assert not thread.is_alive()
    storage.close()  # idempotent
    with pytest.raises(ConfigurationError, match="closed"):
        on_session_start(P, U, "s2", storage)
    with pytest.raises(ConfigurationError, match="closed"):
        storage.get_user_state(P, U)


def test_drain_waits_for_sink_writes(storage: SyncStorageManager, make_snapshot: MakeSnapshot) -> None:
    sink = RecordingSink(delay=0.05)
    with SyncStorageManager([InMemoryStorageAdapter(), sink]) as with_sink:
        on_session_end(P, U, make_snapshot("s1"), with_sink, summary="x")
        with_sink.drain()
        assert sorted(sink.writes) == [("snapshot", "s1"), ("state", U)]
        assert not sink.closed
    assert sink.closed


def test_close_from_many_threads_waits_for_the_one_flush(make_snapshot: MakeSnapshot) -> None:
    sink = RecordingSink(delay=0.2)
    storage = SyncStorageManager([InMemoryStorageAdapter(), sink])
    on_session_end(P, U, make_snapshot("s1"), storage, summary="x")
    seen: list[bool] = []
    threads = [threading.Thread(target=lambda: (storage.close(), seen.append(sink.closed))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == [True] * 4


def test_calls_racing_a_close_finish_or_are_refused_never_hang(make_snapshot: MakeSnapshot) -> None:
    storage = SyncStorageManager([InMemoryStorageAdapter(), RecordingSink()])
    outcomes: list[str] = []
    go = threading.Barrier(5)

    def caller(t: int) -> None:
        go.wait(10)
        for i in range(200):
            try:
                on_session_end(P, f"u{t}", make_snapshot(f"s{i}", user_id=f"u{t}"), storage, summary="x")
                outcomes.append("ok")
            except ConfigurationError as exc:
                outcomes.append("refused" if "closed" in str(exc) else repr(exc))
                return

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    go.wait(10)
    storage.close()
    for thread in threads:
        thread.join(30)
    assert [t for t in threads if t.is_alive()] == []
    assert set(outcomes) <= {"ok", "refused"}


def test_an_unclosed_manager_is_collected_and_its_thread_stops() -> None:
    sink = RecordingSink()
    storage = SyncStorageManager([InMemoryStorageAdapter(), sink])
    thread, ref = storage._loop.thread, weakref.ref(storage)
    del storage
    gc.collect()
    assert ref() is None  # the exit hook does not keep it alive
    thread.join(10)
    assert not thread.is_alive() and sink.closed


def test_a_plain_summarizer_runs_off_the_loop(
    storage: SyncStorageManager, make_snapshot: MakeSnapshot
) -> None:
    """While a blocking summarizer waits, another thread's call still gets through the loop."""
    entered, other_done = threading.Event(), threading.Event()

    def summarize(snapshot: SessionSnapshot) -> str:
        entered.set()
        return "ran alongside" if other_done.wait(10) else "loop was blocked"

    results: list[Any] = []
    ender = threading.Thread(
        target=lambda: results.append(end_session(P, U, make_snapshot("s1"), storage, summarizer=summarize))
    )
    ender.start()
    assert entered.wait(10)
    on_session_start(P, "someone_else", "s7", storage)
    other_done.set()
    ender.join(20)
    assert not ender.is_alive()
    assert results[0].state.onboarding.summary == "ran alongside"


def test_a_plain_summarizer_past_its_timeout_is_abandoned(
    storage: SyncStorageManager, make_snapshot: MakeSnapshot
) -> None:
    release = threading.Event()

    def hung(snapshot: SessionSnapshot) -> str:
        release.wait(10)
        return "late"

    try:
        ended = end_session(P, U, make_snapshot("s1"), storage, summarizer=hung, summarizer_timeout=0.1)
    finally:
        release.set()
    assert (ended.persisted, ended.summary_error, ended.state.sessions.count) == (True, "TimeoutError", 1)
    assert ended.state.onboarding.summary != "late"


# ------------------------------------------------------------------------------ telemetry


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.set_enabled(True)
    telemetry.use_providers(provider, None)
    try:
        yield exporter
    finally:
        telemetry.use_providers()
        provider.shutdown()


def _one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


@pytest.mark.parametrize("caller", ["main thread", "worker thread"])
def test_the_callers_span_is_the_parent(
    spans: InMemorySpanExporter, storage: SyncStorageManager, make_snapshot: MakeSnapshot, caller: str
) -> None:
    tracer = TracerProvider().get_tracer("host")  # a separate provider: its spans are not exported

    def request() -> tuple[int, int]:
        with tracer.start_as_current_span("host.request") as parent:
            on_session_start(P, U, "s1", storage)
            on_session_end(P, U, make_snapshot("s1"), storage, summary="x")
            context = parent.get_span_context()
            return context.trace_id, context.span_id

    if caller == "main thread":
        trace_id, span_id = request()
    else:
        out: list[tuple[int, int]] = []
        worker = threading.Thread(target=lambda: out.append(request()))
        worker.start()
        worker.join(20)
        (trace_id, span_id) = out[0]
    for name in ("autoplay.session.start", "autoplay.session.end"):
        span = _one(spans, name)
        assert span.parent is not None, name
        assert (span.parent.trace_id, span.parent.span_id) == (trace_id, span_id)
        assert span.context is not None and span.context.trace_id == trace_id


def test_without_a_caller_span_the_library_span_is_a_root(
    spans: InMemorySpanExporter, storage: SyncStorageManager
) -> None:
    on_session_start(P, U, "s1", storage)
    assert _one(spans, "autoplay.session.start").parent is None
