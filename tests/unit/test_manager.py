"""StorageManager: configuration, read fall-through, sink isolation (invariant 7), custom primaries."""

from __future__ import annotations

import asyncio
import copy
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from autoplay_obs.errors import (
    ConfigurationError,
    ConflictError,
    StorageError,
    StorageUnavailableError,
)
from autoplay_obs.storage import (
    InMemoryStorageAdapter,
    Outcome,
    StorageManager,
    end_session,
    on_session_end,
    on_session_start,
    start_session,
)
from autoplay_obs.user_adoption_state import SessionSnapshot

P, U = "prod_1", "u_1"
MakeSnapshot = Callable[..., SessionSnapshot]


class DictAdapter:
    """A custom adapter with only the seed's four dict methods (no AtomicStore)."""

    def __init__(self, *, state: dict[str, Any] | None = None, snapshot: dict[str, Any] | None = None):
        self.states: dict[tuple[str, str], dict[str, Any]] = {}
        self.snapshots: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.fixed_state = state
        self.fixed_snapshot = snapshot
        self.reads = 0

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        self.states[product_id, user_id] = state

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        self.reads += 1
        return self.fixed_state or self.states.get((product_id, user_id))

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        self.snapshots[product_id, user_id, session_id] = snapshot

    async def get_session_snapshot(
        self, product_id: str, user_id: str, session_id: str
    ) -> dict[str, Any] | None:
        self.reads += 1
        return self.fixed_snapshot or self.snapshots.get((product_id, user_id, session_id))


class FailingAdapter(DictAdapter):
    """Every call raises a non-library exception (a custom adapter's own error)."""

    class Boom(RuntimeError):
        pass

    async def save_user_state(self, *args: Any) -> None:
        raise self.Boom("write failed")

    async def get_user_state(self, *args: Any) -> dict[str, Any] | None:
        self.reads += 1
        raise self.Boom("read failed")

    async def save_session_snapshot(self, *args: Any) -> None:
        raise self.Boom("write failed")

    async def get_session_snapshot(self, *args: Any) -> dict[str, Any] | None:
        self.reads += 1
        raise self.Boom("read failed")


class HangingSink(DictAdapter):
    """Writes block until ``release`` is set (or forever)."""

    def __init__(self, release: asyncio.Event | None = None) -> None:
        super().__init__()
        self.release = release
        self.started = 0
        self.finished = 0

    async def _hang(self) -> None:
        self.started += 1
        if self.release is None:
            await asyncio.sleep(100)
        else:
            await self.release.wait()
        self.finished += 1

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        await self._hang()
        await super().save_user_state(product_id, user_id, state)

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        await self._hang()
        await super().save_session_snapshot(product_id, user_id, session_id, snapshot)

    async def get_user_state(self, *args: Any) -> dict[str, Any] | None:
        return None

    async def get_session_snapshot(self, *args: Any) -> dict[str, Any] | None:
        return None


# -- configuration ------------------------------------------------------------------


def test_no_adapters_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        StorageManager([])


@pytest.mark.parametrize(
    "not_an_adapter",
    [object(), "redis://localhost", {"save_user_state": None}, None],
    ids=["object", "str", "dict", "none"],
)
def test_an_object_lacking_adapter_methods_is_a_configuration_error(not_an_adapter: Any) -> None:
    with pytest.raises(ConfigurationError):
        StorageManager([not_an_adapter])
    with pytest.raises(ConfigurationError):
        StorageManager([InMemoryStorageAdapter(), not_an_adapter])


def test_an_adapter_missing_one_method_is_refused() -> None:
    class ThreeMethods:
        async def save_user_state(self, *a: Any) -> None: ...
        async def get_user_state(self, *a: Any) -> None: ...
        async def save_session_snapshot(self, *a: Any) -> None: ...

        get_session_snapshot = "not callable"

    with pytest.raises(ConfigurationError, match="get_session_snapshot"):
        StorageManager([ThreeMethods()])


def test_first_adapter_is_the_primary() -> None:
    primary, sink = InMemoryStorageAdapter(), DictAdapter()
    manager = StorageManager([primary, sink])
    assert manager.primary is primary
    assert manager.sinks == [sink]


# -- dict-level reads: the first that returns a value --------------------------------


async def test_reads_come_from_the_primary_when_it_has_a_value() -> None:
    primary = DictAdapter(state={"user_id": "from-primary"}, snapshot={"session_id": "p"})
    sink = DictAdapter(state={"user_id": "from-sink"}, snapshot={"session_id": "s"})
    manager = StorageManager([primary, sink])
    assert await manager.get_user_state(P, U) == {"user_id": "from-primary"}
    assert await manager.get_session_snapshot(P, U, "s1") == {"session_id": "p"}
    assert sink.reads == 0


async def test_reads_fall_through_to_the_first_adapter_with_a_value() -> None:
    empty = DictAdapter()
    second = DictAdapter(state={"user_id": "second"}, snapshot={"session_id": "second"})
    third = DictAdapter(state={"user_id": "third"}, snapshot={"session_id": "third"})
    manager = StorageManager([empty, second, third])
    assert await manager.get_user_state(P, U) == {"user_id": "second"}
    assert await manager.get_session_snapshot(P, U, "s1") == {"session_id": "second"}
    assert third.reads == 0


async def test_all_absent_reads_none() -> None:
    manager = StorageManager([DictAdapter(), DictAdapter()])
    assert await manager.get_user_state(P, U) is None
    assert await manager.get_session_snapshot(P, U, "s1") is None


async def test_a_read_error_with_no_value_anywhere_raises_storage_error() -> None:
    manager = StorageManager([FailingAdapter(), DictAdapter()])
    with pytest.raises(StorageError) as state_error:
        await manager.get_user_state(P, U)
    assert isinstance(state_error.value.__cause__, FailingAdapter.Boom)
    with pytest.raises(StorageError):
        await manager.get_session_snapshot(P, U, "s1")


async def test_a_read_error_on_the_only_adapter_is_never_absent() -> None:
    manager = StorageManager([FailingAdapter()])
    with pytest.raises(StorageUnavailableError):
        await manager.get_user_state(P, U)


async def test_a_failed_primary_read_falls_through_to_a_value() -> None:
    backup = DictAdapter(state={"user_id": "backup"})
    manager = StorageManager([FailingAdapter(), backup])
    assert await manager.get_user_state(P, U) == {"user_id": "backup"}


async def test_dict_write_failure_on_the_primary_raises() -> None:
    sink = DictAdapter()
    manager = StorageManager([FailingAdapter(), sink])
    with pytest.raises(StorageError):
        await manager.save_user_state(P, U, {"user_id": U})
    await manager.drain()
    assert sink.states == {}  # a write the primary refused is not mirrored


async def test_dict_writes_reach_primary_and_sinks() -> None:
    primary, sink = InMemoryStorageAdapter(), DictAdapter()
    manager = StorageManager([primary, sink])
    await manager.save_user_state(P, U, {"user_id": U, "n": 1})
    await manager.save_session_snapshot(P, U, "s1", {"session_id": "s1"})
    await manager.drain()
    assert await primary.get_user_state(P, U) == {"user_id": U, "n": 1}
    stored = await primary.load_state(P, U)  # the bytes carry a fresh revision at their head
    assert stored is not None and re.match(rb'\{"_rev":"[0-9a-f]{32}",', stored.raw)
    assert sink.states[P, U] == {"user_id": U, "n": 1}
    assert sink.snapshots[P, U, "s1"] == {"session_id": "s1"}


# -- sinks never touch the primary path ------------------------------------------------


async def test_failing_and_hanging_sinks_do_not_affect_session_end(make_snapshot: MakeSnapshot) -> None:
    primary, failing, hanging = InMemoryStorageAdapter(), FailingAdapter(), HangingSink()
    storage = StorageManager([primary, failing, hanging], sink_timeout=0.2)
    await on_session_start(P, U, "s1", storage=storage)

    started = time.perf_counter()
    result = await end_session(P, U, make_snapshot("s1"), storage, summary="done")
    elapsed = time.perf_counter() - started
    assert elapsed < storage.sink_timeout + 1.0

    assert result.persisted is True and result.error is None
    assert result.snapshot_created is True
    assert result.state.sessions_count == 1
    stored = await primary.get_user_state(P, U)
    assert stored["sessions"]["count"] == 1
    assert stored["onboarding"]["summary"] == "done"
    assert await primary.get_session_snapshot(P, U, "s1") is not None

    await storage.drain()
    sink_calls = [c for c in result.adapter_calls if c.role == "sink"]
    by_adapter = {(c.adapter, c.operation): c for c in sink_calls}
    for operation in ("save_session_snapshot", "save_user_state"):
        failed = by_adapter[("FailingAdapter", operation)]
        assert failed.outcome is Outcome.ERROR
        assert failed.error_type == "Boom"
        timed_out = by_adapter[("HangingSink", operation)]
        assert timed_out.outcome is Outcome.TIMEOUT
        assert timed_out.error_type == "TimeoutError"
        assert timed_out.duration_s >= 0.15
    assert hanging.finished == 0
    primary_calls = [c for c in result.adapter_calls if c.role == "primary"]
    assert {c.outcome for c in primary_calls} <= {Outcome.OK, Outcome.NOT_FOUND}


async def test_failing_and_hanging_sinks_do_not_affect_session_start() -> None:
    primary = InMemoryStorageAdapter()
    storage = StorageManager([primary, FailingAdapter(), HangingSink()], sink_timeout=0.2)
    started = time.perf_counter()
    state, onboarding = await on_session_start(P, U, "s1", storage=storage)
    assert time.perf_counter() - started < storage.sink_timeout + 1.0
    assert state.current_session_id == "s1" and onboarding is None
    assert (await primary.get_user_state(P, U))["sessions"]["current_session_id"] == "s1"
    await storage.drain()


async def test_session_end_does_not_wait_for_a_slow_sink(make_snapshot: MakeSnapshot) -> None:
    """With a generous sink timeout, the call returns while the sink is still blocked."""
    release = asyncio.Event()
    primary, slow = InMemoryStorageAdapter(), HangingSink(release)
    storage = StorageManager([primary, slow], sink_timeout=30.0)
    await on_session_start(P, U, "s1", storage=storage)

    started = time.perf_counter()
    result = await end_session(P, U, make_snapshot("s1"), storage, summary="x")
    assert time.perf_counter() - started < 1.0
    assert result.persisted and result.state.sessions_count == 1
    await asyncio.sleep(0.05)  # the sink writes start in the background...
    assert slow.finished == 0 and slow.started >= 1  # ...and stay blocked after the call returned

    release.set()
    await storage.drain()
    assert slow.snapshots[P, U, "s1"]["session_id"] == "s1"
    assert slow.states[P, U]["sessions"]["count"] == 1
    ok = [c for c in result.adapter_calls if c.role == "sink"]
    assert {(c.operation, c.outcome) for c in ok} == {
        ("save_session_snapshot", Outcome.OK),
        ("save_user_state", Outcome.OK),
    }


async def test_sinks_get_the_stored_documents(make_snapshot: MakeSnapshot) -> None:
    primary, sink = InMemoryStorageAdapter(), DictAdapter()
    storage = StorageManager([primary, sink])
    await on_session_start(P, U, "s1", storage=storage)
    await on_session_end(P, U, make_snapshot("s1"), storage=storage, summary="sum")
    await storage.drain()
    assert sink.states[P, U] == await primary.get_user_state(P, U)
    assert sink.snapshots[P, U, "s1"] == await primary.get_session_snapshot(P, U, "s1")


async def test_a_retried_end_does_not_resend_the_snapshot_to_sinks(make_snapshot: MakeSnapshot) -> None:
    class CountingSink(DictAdapter):
        snapshot_writes = 0

        async def save_session_snapshot(self, *args: Any) -> None:
            self.snapshot_writes += 1

    sink = CountingSink()
    storage = StorageManager([InMemoryStorageAdapter(), sink])
    for _ in range(3):
        await on_session_end(P, U, make_snapshot("s1"), storage=storage)
    await storage.drain()
    assert sink.snapshot_writes == 1


async def test_adapter_calls_record_the_primary_operations(make_snapshot: MakeSnapshot) -> None:
    storage = StorageManager([InMemoryStorageAdapter()])
    start = await start_session(P, U, "s1", storage)
    ops = [(c.adapter, c.role, c.operation, c.outcome) for c in start.adapter_calls]
    assert ("memory", "primary", "load_state", Outcome.NOT_FOUND) in ops
    assert ("memory", "primary", "swap_state", Outcome.OK) in ops
    end = await end_session(P, U, make_snapshot("s1"), storage)
    ops = [(c.operation, c.outcome) for c in end.adapter_calls]
    assert ("create_snapshot", Outcome.OK) in ops
    assert ("swap_state", Outcome.OK) in ops
    retry = await end_session(P, U, make_snapshot("s1"), storage)
    assert ("create_snapshot", Outcome.DUPLICATE) in [(c.operation, c.outcome) for c in retry.adapter_calls]
    assert all(c.duration_s >= 0 for c in retry.adapter_calls)


# -- a primary that is not an AtomicStore -----------------------------------------------


async def test_a_custom_dict_only_primary_works(make_snapshot: MakeSnapshot) -> None:
    primary = DictAdapter()
    storage = StorageManager([primary])
    state, onboarding = await on_session_start(P, U, "s1", storage=storage)
    assert state.current_session_id == "s1" and onboarding is None
    assert primary.states[P, U]["sessions"]["current_session_id"] == "s1"

    first = make_snapshot("s1", number=1)
    result = await end_session(P, U, first, storage, summary="one")
    assert result.persisted and result.snapshot_created is True
    assert primary.states[P, U]["sessions"]["count"] == 1
    assert primary.snapshots[P, U, "s1"] == first.to_dict()

    retry = await end_session(
        P, U, make_snapshot("s1", number=1, captured_at=first.captured_at + 99), storage
    )
    assert retry.duplicate is True and retry.snapshot_created is False
    assert primary.snapshots[P, U, "s1"] == first.to_dict()
    assert primary.states[P, U]["sessions"]["count"] == 1

    state, onboarding = await on_session_start(P, U, "s2", storage=storage)
    assert state.sessions_count == 1
    assert onboarding is not None and onboarding.session_id == "s1"


async def test_a_custom_primary_works_without_a_manager(make_snapshot: MakeSnapshot) -> None:
    primary = DictAdapter()
    await on_session_start(P, U, "s1", storage=primary)
    updated = await on_session_end(P, U, make_snapshot("s1"), storage=primary, summary="s")
    assert updated.sessions_count == 1
    assert primary.states[P, U]["onboarding"]["summary"] == "s"


async def test_a_failing_custom_primary_degrades_and_never_raises(make_snapshot: MakeSnapshot) -> None:
    storage = StorageManager([FailingAdapter()])
    start = await start_session(P, U, "s1", storage)
    assert start.degraded is True and start.persisted is False
    assert isinstance(start.error, StorageUnavailableError)
    assert isinstance(start.error.__cause__, FailingAdapter.Boom)
    assert start.state.current_session_id == "s1"
    error_calls = [c for c in start.adapter_calls if c.outcome is Outcome.ERROR]
    assert error_calls and error_calls[0].error_type == "Boom"

    end = await end_session(P, U, make_snapshot("s1"), storage)
    assert end.persisted is False and end.snapshot_created is None
    assert isinstance(end.error, StorageError)


async def test_endless_conflicts_end_in_conflict_error_not_an_exception(make_snapshot: MakeSnapshot) -> None:
    class AlwaysConflicts(InMemoryStorageAdapter):
        async def swap_state(self, product_id: str, user_id: str, raw: bytes, expected: str | None) -> Any:
            stored = await self.load_state(product_id, user_id)
            return False, stored

    storage = StorageManager([AlwaysConflicts()], write_deadline=0.2)
    started = time.perf_counter()
    result = await end_session(P, U, make_snapshot("s1"), storage)
    assert time.perf_counter() - started < 3.0
    assert result.persisted is False
    assert isinstance(result.error, ConflictError)
    assert any(c.outcome is Outcome.CONFLICT for c in result.adapter_calls)


async def test_aclose_drains_sinks_and_closes_adapters() -> None:
    class Closable(DictAdapter):
        closed = False

        async def aclose(self) -> None:
            self.closed = True

    release = asyncio.Event()
    primary, slow = Closable(), HangingSink(release)
    async with StorageManager([primary, slow], sink_timeout=5) as storage:
        await storage.save_user_state(P, U, {"user_id": U})
        asyncio.get_running_loop().call_later(0.05, release.set)
    assert primary.closed is True
    assert slow.states[P, U] == {"user_id": U}


async def test_one_sink_mutating_its_document_does_not_change_what_another_sink_gets(
    make_snapshot: MakeSnapshot,
) -> None:
    """Sinks run concurrently; each must get the stored document, not one shared mutable dict."""

    class PrefixingSink(DictAdapter):
        async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
            state["sessions"]["count"] = -1
            state["ap_prefixed"] = True

        async def save_session_snapshot(
            self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
        ) -> None:
            snapshot["session_id"] = "rewritten"

    class CopyingSink(DictAdapter):
        async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
            self.states[product_id, user_id] = copy.deepcopy(state)

        async def save_session_snapshot(
            self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
        ) -> None:
            self.snapshots[product_id, user_id, session_id] = copy.deepcopy(snapshot)

    primary, second = InMemoryStorageAdapter(), CopyingSink()
    storage = StorageManager([primary, PrefixingSink(), second])
    await on_session_end(P, U, make_snapshot("s1"), storage=storage)
    await storage.drain()
    assert second.states[P, U] == await primary.get_user_state(P, U)
    assert second.snapshots[P, U, "s1"] == await primary.get_session_snapshot(P, U, "s1")


async def test_a_dict_level_snapshot_retry_never_sends_sinks_other_content_than_the_frozen_one() -> None:
    """The primary keeps the first snapshot (write-once); sinks must not see a second version."""
    primary, sink = InMemoryStorageAdapter(), DictAdapter()
    storage = StorageManager([primary, sink])
    await storage.save_session_snapshot(P, U, "s1", {"session_id": "s1", "attempt": 1})
    await storage.save_session_snapshot(P, U, "s1", {"session_id": "s1", "attempt": 2})
    await storage.drain()
    assert await primary.get_session_snapshot(P, U, "s1") == {"session_id": "s1", "attempt": 1}
    assert sink.snapshots[P, U, "s1"] == {"session_id": "s1", "attempt": 1}
