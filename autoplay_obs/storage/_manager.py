"""Fan-out across adapters: the first is the readable primary, the rest are sinks.

Decisions:
- The primary is awaited; its failures become typed errors the lifecycle turns
  into degraded results. Sinks run as background tasks, each bounded by
  ``sink_timeout``, so a slow or dead sink changes neither the latency nor the
  outcome of a call. ``drain()`` / ``aclose()`` wait for them.
- Every adapter call becomes an ``AdapterCall`` (outcome, duration, error type)
  appended to the recorder of the lifecycle call that caused it, so nothing a
  sink does is swallowed.
- User state changes are compare-and-set on the primary, with a pure change
  function applied to a copy of its own (``update_state``). Writers for the
  same user in this process queue on a per-user lock, so they do not fight;
  writers in other processes lose a compare-and-set, get the current document
  back in the same reply and the change is applied to that.
- Per user the manager keeps the last document it saw: its bytes, token and
  decoding (a bounded LRU). The token is the next compare-and-set's
  expectation, so a warm change needs no read and no decode; a stale entry
  just loses the compare-and-set. The decoded state is never handed out: the
  frozen parts are shared and the containers copied (``copy()``).
- A manager belongs to the event loop that first uses it (``_loop``).
- ``outbox=`` (a path or an ``Outbox``) is the guarantee against outages: a
  session end returns only once its session is acknowledged by the primary
  or durably queued there (``_session_end``); ``_replay`` merges it later.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from autoplay_obs import _json
from autoplay_obs.errors import AutoplayError, ConfigurationError, StorageError, StorageUnavailableError
from autoplay_obs.storage._adapters import DictPrimary, Lru, adapter_name, checked_adapters
from autoplay_obs.storage._loop import LoopBinding
from autoplay_obs.storage._outbox import Outbox
from autoplay_obs.storage._outbox_types import OutboxEntry
from autoplay_obs.storage._protocol import (
    AtomicStore,
    AutoplayStorageAdapter,
    without_revision,
)
from autoplay_obs.storage._replay import FlushResult, Replayer
from autoplay_obs.storage._results import AdapterCall, Outcome, Role, SessionEndResult
from autoplay_obs.storage._session_end import SessionEnd
from autoplay_obs.storage._state_writer import Change, Current, StateUpdate, StateWriter
from autoplay_obs.telemetry import _hooks as telemetry
from autoplay_obs.user_adoption_state import SessionSnapshot, decode_session_snapshot

if TYPE_CHECKING:  # operator tools (issue 12)
    from autoplay_obs.storage._audit import AuditReport, Progress
    from autoplay_obs.storage._erasure import ErasureReceipt
    from autoplay_obs.storage._history import SessionRecord

__all__ = ["Change", "Current", "StateUpdate", "StorageManager"]

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

DEFAULT_MAX_SUMMARY_CHARS: Final = 8_000
_recorder: contextvars.ContextVar[list[AdapterCall] | None] = contextvars.ContextVar(
    "autoplay_obs_calls", default=None
)


class StorageManager:
    """Writes to every adapter, reads from the first that answers; itself an adapter."""

    def __init__(
        self,
        adapters: Sequence[AutoplayStorageAdapter],
        *,
        sink_timeout: float = 5.0,
        write_deadline: float = 10.0,
        cache_size: int = 1024,
        max_summary_chars: int = DEFAULT_MAX_SUMMARY_CHARS,
        outbox: str | os.PathLike[str] | Outbox | None = None,
        replay_interval: float = 5.0,
    ) -> None:
        """``outbox``: where session ends the primary did not acknowledge wait for replay
        (a SQLite file; off when not given). ``replay_interval``: how often the background
        replay looks for entries (other processes' too) while all is well."""
        if max_summary_chars < 1:
            raise ConfigurationError(f"max_summary_chars must be at least 1, got {max_summary_chars}")
        self.adapters = checked_adapters(adapters)
        self.primary = self.adapters[0]
        self.sinks = self.adapters[1:]
        atomic = self.primary if isinstance(self.primary, AtomicStore) else DictPrimary(self.primary)
        self.sink_timeout = sink_timeout
        self.max_summary_chars = max_summary_chars
        self._pending: set[asyncio.Task[None]] = set()
        self._snapshots: Lru[tuple[str, str, str], SessionSnapshot] = Lru(cache_size)
        self._loop = LoopBinding("StorageManager", strict=False)
        self._atomic = atomic
        self.bundles_freeze = getattr(atomic, "bundles_freeze", False) is True
        """The primary can send a snapshot write and a compare-and-set in one round trip."""
        self._writer = StateWriter(atomic, self._run, Lru(cache_size), write_deadline)
        self.outbox = outbox if isinstance(outbox, Outbox) or outbox is None else Outbox(outbox)
        self._replayer = (
            None
            if self.outbox is None
            else Replayer(self.outbox, self._replay, interval=replay_interval, max_backoff=30.0)
        )

    # -- recording ---------------------------------------------------------

    @staticmethod
    @contextlib.contextmanager
    def recording() -> Iterator[list[AdapterCall]]:
        """Collect the adapter calls made in this context (sink calls land later)."""
        calls: list[AdapterCall] = []
        token = _recorder.set(calls)
        try:
            yield calls
        finally:
            _recorder.reset(token)

    def check_loop(self) -> None:
        """Refuse a call from a second event loop (see ``_loop``)."""
        self._loop.check()

    async def _run(
        self,
        role: Role,
        operation: str,
        call: Callable[[], Awaitable[T]],
        outcome_of: Callable[[T], Outcome] = lambda _: Outcome.OK,
        *,
        adapter: object = None,
        timeout: float | None = None,
    ) -> T:
        """One adapter call, recorded for the lifecycle call that caused it and for telemetry."""
        adapter = self.primary if adapter is None else adapter
        name = adapter_name(adapter)
        with telemetry.adapter_call(adapter, name, role, operation) as span:  # current while it runs
            started = time.perf_counter()
            outcome, error_type = Outcome.ERROR, None
            try:
                result = await (asyncio.wait_for(call(), timeout) if timeout else call())
                outcome = outcome_of(result)
                return result
            except asyncio.TimeoutError:
                outcome, error_type = Outcome.TIMEOUT, "TimeoutError"
                raise StorageUnavailableError(f"{name} timed out") from None
            except asyncio.CancelledError:
                outcome, error_type = Outcome.CANCELLED, "CancelledError"
                raise
            except AutoplayError as exc:
                error_type = type(exc.__cause__ or exc).__name__
                raise
            except Exception as exc:  # a custom adapter's own error: mapped at this boundary
                error_type = type(exc).__name__
                raise StorageUnavailableError(f"{name}: {error_type}: {exc}") from exc
            finally:
                record = AdapterCall(
                    name, role, operation, outcome, time.perf_counter() - started, error_type
                )
                calls = _recorder.get()
                if calls is not None:
                    calls.append(record)
                span.done(record)

    # -- sinks -------------------------------------------------------------

    def _fan_out(self, operation: str, write: Callable[[Any], Awaitable[None]]) -> None:
        telemetry.sinks_started(len(self.sinks))
        for sink in self.sinks:
            task = asyncio.create_task(self._sink_write(sink, operation, write))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _sink_write(
        self, sink: object, operation: str, write: Callable[[Any], Awaitable[None]]
    ) -> None:
        with contextlib.suppress(AutoplayError):
            await self._run("sink", operation, lambda: write(sink), adapter=sink, timeout=self.sink_timeout)

    def mirror_state(self, product_id: str, user_id: str, raw: bytes) -> None:
        """Send the stored state to the sinks in the background, each its own copy."""
        if self.sinks:
            self._fan_out(
                "save_user_state",
                lambda s: s.save_user_state(product_id, user_id, without_revision(_json.loads(raw))),
            )

    def mirror_snapshot(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> None:
        """Send a newly frozen snapshot to the sinks in the background, each its own copy."""
        if self.sinks:
            self._fan_out(
                "save_session_snapshot",
                lambda s: s.save_session_snapshot(
                    product_id, user_id, session_id, without_revision(_json.loads(raw))
                ),
            )

    async def drain(self) -> None:
        """Wait for the background sink writes started so far."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop the replay, drain the sinks, then close every adapter and the outbox."""
        if self._replayer is not None:
            await self._replayer.stop()
        await self.drain()
        closers = [getattr(adapter, "aclose", None) for adapter in self.adapters]
        # Concurrently: each sink's close is bounded by its own timeout, not the sum of them.
        await asyncio.gather(*(close() for close in closers if callable(close)), return_exceptions=True)
        if self.outbox is not None:
            await self.outbox.aclose()

    # -- the outbox ----------------------------------------------------------

    def start_replaying(self) -> None:
        """Run the outbox replay in the background on this event loop (once; no-op without one)."""
        if self._replayer is not None:
            self._replayer.ensure_running()

    def outbox_queued(self) -> None:
        """A session end was queued: the replay looks sooner than its interval."""
        if self._replayer is not None:
            self._replayer.wake()

    async def flush_outbox(self) -> FlushResult:
        """Replay the outbox now, until it is empty or the primary fails."""
        if self._replayer is None:
            raise ConfigurationError("this StorageManager has no outbox (StorageManager(..., outbox=PATH))")
        self.check_loop()
        return await self._replayer.flush()

    async def _replay(self, entry: OutboxEntry) -> SessionEndResult:
        """One queued session end, merged into the primary's current state (never queued again)."""
        snapshot = decode_session_snapshot(entry.snapshot).value
        with self.recording() as calls:
            end = SessionEnd(
                self, entry.product_id, entry.user_id, snapshot, calls, raw=entry.snapshot, queue=False
            )
            return await end.run(entry.summary, None, 0.0)

    async def __aenter__(self) -> StorageManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the primary, for the lifecycle --------------------------------------

    async def read_state(self, product_id: str, user_id: str, *, fresh: bool = False) -> Current | None:
        """The state as last seen (``fresh``: as the primary has it now), decoded."""
        return await self._writer.read(product_id, user_id, fresh=fresh)

    async def update_state(
        self,
        product_id: str,
        user_id: str,
        change: Change,
        *,
        current: Current | None = None,
        freeze: tuple[str, bytes] | None = None,
    ) -> StateUpdate:
        """Apply ``change`` to the stored state by compare-and-set until it sticks.

        ``change`` gets a state of its own and returns the changed state, or
        None when there is nothing to change; it may run again on a fresher
        state. ``current`` is the state the caller last read (else the one last
        seen). ``freeze`` (session id, snapshot bytes) is written once, before
        the first compare-and-set and in the same round trip where the primary
        allows; its outcome is ``StateUpdate.snapshot_created``. A document
        that cannot be read raises ``DocumentError`` and is never written over.
        """
        self.check_loop()
        update = await self._writer.update(product_id, user_id, change, current, freeze)
        if update.written:
            self.mirror_state(product_id, user_id, update.raw)
        return update

    async def create_snapshot(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> bool:
        """Freeze the snapshot on the primary (only): True when this call created it."""
        return await self._run(
            "primary",
            "create_snapshot",
            lambda: self._atomic.create_snapshot(product_id, user_id, session_id, raw),
            lambda new: Outcome.OK if new else Outcome.DUPLICATE,
        )

    async def load_snapshot(self, product_id: str, user_id: str, session_id: str) -> SessionSnapshot | None:
        """A snapshot (one of its own for each caller), read from the primary once: it never changes.

        A document that cannot be read raises ``DocumentError``.
        """
        key = (product_id, user_id, session_id)
        known = self._snapshots.get_recent(key)
        if known is None:
            raw = await self._run(
                "primary",
                "load_snapshot",
                lambda: self._atomic.load_snapshot(product_id, user_id, session_id),
                lambda found: Outcome.OK if found is not None else Outcome.NOT_FOUND,
            )
            if raw is None:
                return None
            decoded = decode_session_snapshot(raw)
            telemetry.document_repaired("snapshot", len(decoded.repairs))
            known = decoded.value
            self._snapshots.put(key, known)
        return known.copy()

    # -- the seed's dict-level Protocol -------------------------------------

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        """Overwrite on the primary (raises StorageError), mirror to the sinks."""
        raw = _json.dumps(state)  # refuses what is not JSON before anything is written
        await self._run(
            "primary", "save_user_state", lambda: self.primary.save_user_state(product_id, user_id, state)
        )
        self._writer.forget(product_id, user_id)
        self.mirror_state(product_id, user_id, raw)

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        """Write-once on the primary; the sinks see it only if this call froze it."""
        raw = _json.dumps(snapshot)
        if await self.create_snapshot(product_id, user_id, session_id, raw):
            self.mirror_snapshot(product_id, user_id, session_id, raw)

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        return await self._first("get_user_state", lambda a: a.get_user_state(product_id, user_id))

    async def get_session_snapshot(
        self, product_id: str, user_id: str, session_id: str
    ) -> dict[str, Any] | None:
        return await self._first(
            "get_session_snapshot",
            lambda a: a.get_session_snapshot(product_id, user_id, session_id),
        )

    async def _first(
        self, operation: str, read: Callable[[Any], Awaitable[dict[str, Any] | None]]
    ) -> dict[str, Any] | None:
        """The first value any adapter returns; an error is raised, not read as "absent"."""
        failure: StorageError | None = None
        for i, adapter in enumerate(self.adapters):
            try:
                found = await self._run(
                    "primary" if i == 0 else "sink",
                    operation,
                    functools.partial(read, adapter),
                    lambda value: Outcome.OK if value is not None else Outcome.NOT_FOUND,
                    adapter=adapter,
                )
            except StorageError as exc:
                failure = failure or exc
                continue
            if found is not None:
                return found
        if failure is not None:
            raise failure
        return None

    # -- operator tools and erasure (issue 12): the work is in _erasure, _history, _audit --

    def forget_user(self, product_id: str, user_id: str) -> None:
        """Drop what this manager remembers of a user (state and snapshots), as after an erase."""
        self._writer.forget(product_id, user_id)
        for key in [k for k in self._snapshots if k[:2] == (product_id, user_id)]:
            del self._snapshots[key]

    async def delete_user(self, product_id: str, user_id: str, *, dry_run: bool = False) -> ErasureReceipt:
        """Erase the user for good: state, every snapshot, outbox entries; see ``_erasure``."""
        from autoplay_obs.storage._erasure import delete_user

        return await delete_user(self, product_id, user_id, dry_run=dry_run)

    async def list_sessions(self, product_id: str, user_id: str) -> list[SessionRecord]:
        """Every stored snapshot of the user, oldest first; see ``_history``."""
        from autoplay_obs.storage._history import list_sessions

        return await list_sessions(self, product_id, user_id)

    async def audit(
        self,
        product_id: str,
        user_id: str | None = None,
        *,
        repair: bool = False,
        progress: Progress | None = None,
    ) -> AuditReport:
        """The lost or broken writes of one user or a whole product; see ``_audit``."""
        from autoplay_obs.storage._audit import audit

        return await audit(self, product_id, user_id, repair=repair, progress=progress)
