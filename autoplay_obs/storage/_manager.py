"""Fan-out across adapters: the first is the readable primary, the rest are sinks.

Decisions:
- The primary is awaited; its failures become typed errors the lifecycle turns
  into degraded results. Sinks run as background tasks, each bounded by
  ``sink_timeout``, so a slow or dead sink changes neither the latency nor the
  outcome of a call. ``drain()`` / ``aclose()`` wait for them.
- Every adapter call becomes an ``AdapterCall`` (outcome, duration, error type)
  appended to the recorder of the lifecycle call that caused it, so nothing a
  sink does is swallowed.
- User state changes are compare-and-set on the primary. Writers for the same
  user in this process queue on a per-user lock, so they do not fight; writers
  in other processes lose a compare-and-set, get the current document back in
  the same reply and re-apply their change.
- The manager remembers the last state document it saw per user (a bounded
  LRU) and uses it as the compare-and-set expectation instead of reading
  first. A stale entry just loses the compare-and-set and is replaced by the
  document the primary returns, so the cache saves a round trip and a
  transfer when it is right and costs nothing in correctness when it is
  wrong. Snapshots are write-once, so the ones read are cached decoded, and
  each caller gets a copy (cheaper than decoding again).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeVar, cast

import msgspec

from autoplay_obs.errors import (
    AutoplayError,
    ConfigurationError,
    ConflictError,
    StorageError,
    StorageUnavailableError,
)
from autoplay_obs.storage._protocol import (
    AtomicStore,
    AutoplayStorageAdapter,
    Stored,
    new_revision,
    revision_head,
    splice_tail,
    token_of,
    without_revision,
)
from autoplay_obs.storage._results import AdapterCall, Outcome, Role
from autoplay_obs.storage.adapters._json import dumps
from autoplay_obs.telemetry import _hooks as telemetry
from autoplay_obs.user_adoption_state import (
    Decoded,
    SessionSnapshot,
    UserAdoptionState,
    decode_session_snapshot,
    decode_user_state,
    encode,
)
from autoplay_obs.user_adoption_state._copy import deep_copy
from autoplay_obs.user_adoption_state._models import encode_tail

__all__ = ["Freeze", "StateUpdate", "StorageManager"]

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

_ADAPTER_METHODS: Final = (
    "save_user_state",
    "get_user_state",
    "save_session_snapshot",
    "get_session_snapshot",
)
_recorder: contextvars.ContextVar[list[AdapterCall] | None] = contextvars.ContextVar(
    "autoplay_obs_calls", default=None
)
_json: Final = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class StateUpdate:
    """The state as written (or as found, when the change was a no-op)."""

    state: UserAdoptionState
    written: bool
    conflicts: int
    repairs: tuple[str, ...]


@dataclass(slots=True)
class Freeze:
    """A snapshot to write once ahead of a state change (``update_state(freeze=...)``)."""

    session_id: str
    raw: bytes
    created: bool | None = None
    """True: this call froze it; False: it was already there; None: not answered (yet)."""
    error: AutoplayError | None = None
    sent: bool = False


@dataclass(slots=True)
class _Known:
    """The state document last seen for a user, and the manager's own decoding of it."""

    stored: Stored
    state: UserAdoptionState | None = None


class _UserSlot:
    """One user's writers in this process, in line; gone when nobody holds or awaits it."""

    __slots__ = ("key", "lock", "slots", "users")

    def __init__(self, slots: dict[tuple[str, str], _UserSlot], key: tuple[str, str]) -> None:
        self.slots, self.key = slots, key
        self.lock = asyncio.Lock()
        self.users = 0

    async def __aenter__(self) -> None:
        self.users += 1
        try:
            await self.lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self.lock.release()
        self._leave()

    def _leave(self) -> None:
        self.users -= 1
        if self.users == 0:
            del self.slots[self.key]


class _Lru(OrderedDict[K, V]):
    """A bounded mapping that forgets the least recently used entry."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_recent(self, key: K) -> V | None:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key: K, value: V | None) -> None:
        if value is None or self.size <= 0:
            self.pop(key, None)
            return
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


def _copy_into(kept: list[UserAdoptionState | None], state: UserAdoptionState) -> None:
    """The manager's own copy of the state it is writing, made while the server answers."""
    if kept:  # a retried round trip runs it again
        return
    try:
        kept.append(deep_copy(state))
    except Exception:  # a value a host put there that cannot be copied: the next change decodes
        kept.append(None)


def _foreign(adapter: object, exc: Exception) -> StorageUnavailableError:
    """An adapter's own exception, as the library's error."""
    return StorageUnavailableError(f"{adapter_name(adapter)}: {type(exc).__name__}: {exc}")


def _error_type(exc: AutoplayError) -> str:
    return type(exc.__cause__ or exc).__name__


def _record(
    adapter: object, role: Role, operation: str, outcome: Outcome, started: float, error_type: str | None
) -> None:
    """One adapter call, for the lifecycle call that caused it and for telemetry."""
    record = AdapterCall(
        adapter_name(adapter), role, operation, outcome, time.perf_counter() - started, error_type
    )
    calls = _recorder.get()
    if calls is not None:
        calls.append(record)
    telemetry.adapter_call(adapter, record)


def adapter_name(adapter: object) -> str:
    name = getattr(adapter, "name", None)
    return name if isinstance(name, str) else type(adapter).__name__


class StorageManager:
    """Writes to every adapter, reads from the first that answers; itself an adapter."""

    def __init__(
        self,
        adapters: Sequence[AutoplayStorageAdapter],
        *,
        sink_timeout: float = 5.0,
        write_deadline: float = 10.0,
        cache_size: int = 1024,
    ) -> None:
        adapters = list(adapters)
        if not adapters:
            raise ConfigurationError(
                "StorageManager needs at least one adapter; put the readable primary first, "
                "e.g. StorageManager([RedisStorageAdapter(redis_url=...)])"
            )
        for adapter in adapters:
            if isinstance(adapter, type):
                raise ConfigurationError(f"pass an adapter instance, not the class {adapter.__name__}")
            missing = [m for m in _ADAPTER_METHODS if not callable(getattr(adapter, m, None))]
            if missing:
                raise ConfigurationError(f"{adapter_name(adapter)} is not an adapter: no {missing}")
        self.adapters: list[AutoplayStorageAdapter] = adapters
        self.primary = adapters[0]
        self.sinks = adapters[1:]
        self._atomic: AtomicStore = (
            self.primary if isinstance(self.primary, AtomicStore) else _DictPrimary(self.primary)
        )
        # Optional: a swap that carries a snapshot write and runs our work while the
        # server answers (the Redis adapter has it).
        self._swap_with: Callable[..., Awaitable[Any]] | None = getattr(self._atomic, "swap_state_with", None)
        self._primary_name = adapter_name(self.primary)
        self.sink_timeout = sink_timeout
        self.write_deadline = write_deadline
        self._pending: set[asyncio.Task[None]] = set()
        self._slots: dict[tuple[str, str], _UserSlot] = {}
        self._states: _Lru[tuple[str, str], _Known] = _Lru(cache_size)
        self._snapshots: _Lru[tuple[str, str, str], SessionSnapshot] = _Lru(cache_size)

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

    async def _run(
        self,
        adapter: object,
        role: Role,
        operation: str,
        call: Callable[[], Awaitable[T]],
        outcome_of: Callable[[T], Outcome] = lambda _: Outcome.OK,
        timeout: float | None = None,
    ) -> T:
        started = time.perf_counter()
        outcome, error_type = Outcome.ERROR, None
        try:
            result = await (asyncio.wait_for(call(), timeout) if timeout else call())
            outcome = outcome_of(result)
            return result
        except asyncio.TimeoutError:
            outcome, error_type = Outcome.TIMEOUT, "TimeoutError"
            raise StorageUnavailableError(f"{adapter_name(adapter)} timed out") from None
        except AutoplayError as exc:
            error_type = _error_type(exc)
            raise
        except Exception as exc:  # a custom adapter's own error: mapped at this boundary
            error_type = type(exc).__name__
            raise _foreign(adapter, exc) from exc
        finally:
            _record(adapter, role, operation, outcome, started, error_type)

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
            await self._run(sink, "sink", operation, lambda: write(sink), timeout=self.sink_timeout)

    def mirror_state(self, product_id: str, user_id: str, raw: bytes) -> None:
        """Send the stored state to the sinks in the background, each its own copy."""
        if self.sinks:
            self._fan_out(
                "save_user_state",
                lambda s: s.save_user_state(product_id, user_id, without_revision(msgspec.json.decode(raw))),
            )

    def mirror_snapshot(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> None:
        """Send a newly frozen snapshot to the sinks in the background, each its own copy."""
        if self.sinks:
            self._fan_out(
                "save_session_snapshot",
                lambda s: s.save_session_snapshot(product_id, user_id, session_id, msgspec.json.decode(raw)),
            )

    async def drain(self) -> None:
        """Wait for the background sink writes started so far."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def aclose(self) -> None:
        """Drain the sinks, then close every adapter that can be closed."""
        await self.drain()
        closers = [getattr(adapter, "aclose", None) for adapter in self.adapters]
        # Concurrently: each sink's close is bounded by its own timeout, not the sum of them.
        await asyncio.gather(*(close() for close in closers if callable(close)), return_exceptions=True)

    async def __aenter__(self) -> StorageManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- primary operations used by the lifecycle --------------------------

    async def load_state(self, product_id: str, user_id: str) -> Stored | None:
        """Read the state from the primary (and remember it)."""
        stored = await self._run(
            self.primary,
            "primary",
            "load_state",
            lambda: self._atomic.load_state(product_id, user_id),
            lambda found: Outcome.OK if found is not None else Outcome.NOT_FOUND,
        )
        self._states.put((product_id, user_id), None if stored is None else _Known(stored))
        return stored

    async def read_state(self, product_id: str, user_id: str) -> Stored | None:
        """The remembered state if any (validated later by compare-and-set), else a read."""
        known = self._states.get_recent((product_id, user_id))
        return known.stored if known is not None else await self.load_state(product_id, user_id)

    def _decode(
        self, key: tuple[str, str], stored: Stored, user_id: str
    ) -> tuple[UserAdoptionState, tuple[str, ...], bool]:
        """``stored`` decoded, and whether it is this manager's own write.

        The manager's own copy is handed over when it has one (so it is never
        shared); anything else is decoded afresh.
        """
        known = self._states.get(key)
        if known is not None and known.stored is stored and known.state is not None:
            state, known.state = known.state, None
            return state, (), True
        decoded = decode_user_state(stored.raw, user_id=user_id)
        return decoded.value, decoded.repairs, False

    @staticmethod
    def _splice(state: UserAdoptionState, previous: Stored) -> bytes | None:
        """After a change confined to the tail of our own write, its bytes with only the tail
        encoded: a session start changes a few hundred bytes of a document of any size."""
        tail = encode_tail(state)
        if tail is None or not isinstance(state.revision, str):
            return None
        return splice_tail(previous.raw, revision_head(state.revision), *tail)

    def remembered_snapshot(self, product_id: str, user_id: str, session_id: str) -> SessionSnapshot | None:
        """A copy of a snapshot already read, without I/O (snapshots never change)."""
        known = self._snapshots.get_recent((product_id, user_id, session_id))
        return None if known is None else deep_copy(known)

    async def load_snapshot(
        self, product_id: str, user_id: str, session_id: str
    ) -> Decoded[SessionSnapshot] | None:
        """A snapshot (a copy of its own for each caller), read from the primary once.

        A document that cannot be read raises ``DocumentError``; the repairs
        one needed are reported by the read that found them.
        """
        known = self.remembered_snapshot(product_id, user_id, session_id)
        if known is not None:
            return Decoded(known)
        raw = await self._run(
            self.primary,
            "primary",
            "load_snapshot",
            lambda: self._atomic.load_snapshot(product_id, user_id, session_id),
            lambda found: Outcome.OK if found is not None else Outcome.NOT_FOUND,
        )
        if raw is None:
            return None
        decoded = decode_session_snapshot(raw)
        self._snapshots.put((product_id, user_id, session_id), deep_copy(decoded.value))
        return decoded

    async def create_snapshot(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> bool:
        """Freeze the snapshot on the primary (only): True when this call created it."""
        created = await self._run(
            self.primary,
            "primary",
            "create_snapshot",
            lambda: self._atomic.create_snapshot(product_id, user_id, session_id, raw),
            lambda new: Outcome.OK if new else Outcome.DUPLICATE,
        )
        return created

    async def freeze(self, product_id: str, user_id: str, freeze: Freeze) -> None:
        """Write ``freeze``'s snapshot once, recording the outcome on it (never raises)."""
        freeze.sent = True
        try:
            freeze.created = await self.create_snapshot(product_id, user_id, freeze.session_id, freeze.raw)
        except AutoplayError as exc:
            freeze.error = exc

    async def _swap(
        self,
        product_id: str,
        user_id: str,
        raw: bytes,
        expected: str | None,
        freeze: Freeze | None,
        while_waiting: Callable[[], object],
    ) -> tuple[bool, Stored | None]:
        """A compare-and-set, with ``freeze`` in the same round trip when given (two adapter
        calls on record) and ``while_waiting`` run during it, or after it on a plain primary."""
        if self._swap_with is None:
            assert freeze is None
            swapped: tuple[bool, Stored | None] = await self._run(
                self.primary,
                "primary",
                "swap_state",
                functools.partial(self._atomic.swap_state, product_id, user_id, raw, expected),
                lambda result: Outcome.OK if result[0] else Outcome.CONFLICT,
            )
            while_waiting()
            return swapped
        operations = ("swap_state",) if freeze is None else ("create_snapshot", "swap_state")
        snapshot = None if freeze is None else (freeze.session_id, freeze.raw)
        if freeze is not None:
            freeze.sent = True
        started = time.perf_counter()
        try:
            created, result = await self._swap_with(
                product_id, user_id, raw, expected, snapshot=snapshot, while_waiting=while_waiting
            )
        except Exception as exc:  # the connection failed: every call in the round trip did
            error = exc if isinstance(exc, AutoplayError) else _foreign(self.primary, exc)
            if freeze is not None:
                freeze.error = error
            for operation in operations:
                _record(self.primary, "primary", operation, Outcome.ERROR, started, _error_type(error))
            if error is exc:
                raise
            raise error from exc
        if freeze is not None:
            if isinstance(created, AutoplayError):
                freeze.error = created
                _record(
                    self.primary, "primary", "create_snapshot", Outcome.ERROR, started, _error_type(created)
                )
            else:
                freeze.created = created
                outcome = Outcome.OK if created else Outcome.DUPLICATE
                _record(self.primary, "primary", "create_snapshot", outcome, started, None)
        if isinstance(result, AutoplayError):
            _record(self.primary, "primary", "swap_state", Outcome.ERROR, started, _error_type(result))
            raise result
        outcome = Outcome.OK if result[0] else Outcome.CONFLICT
        _record(self.primary, "primary", "swap_state", outcome, started, None)
        return cast("tuple[bool, Stored | None]", result)

    def _user_slot(self, key: tuple[str, str]) -> _UserSlot:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _UserSlot(self._slots, key)
        return slot

    async def open_session(
        self,
        product_id: str,
        user_id: str,
        session_id: str,
        *,
        create: Callable[[], UserAdoptionState],
        stored: Stored | None,
    ) -> StateUpdate:
        """Mark ``session_id`` as the user's current session, by compare-and-set.

        Only the document's tail changes (the session fields and the update
        time), so after a write of its own the manager encodes just that.
        """

        def mark_open(state: UserAdoptionState) -> bool:
            state.set_current_session(session_id)
            return True

        return await self._update(product_id, user_id, mark_open, create, stored, None, None, tail_only=True)

    async def update_state(
        self,
        product_id: str,
        user_id: str,
        change: Callable[[UserAdoptionState], bool],
        *,
        create: Callable[[], UserAdoptionState],
        stored: Stored | None,
        state: UserAdoptionState | None = None,
        freeze: Freeze | None = None,
    ) -> StateUpdate:
        """Apply ``change`` to the stored state by compare-and-set until it sticks.

        ``change`` must be a pure function of the state (it may run again on a
        fresher copy) and returns whether it changed anything. ``stored`` is the
        document last read (``state`` its decoding, when the caller has one);
        ``create`` makes the state when there is none. A document that cannot
        be read raises ``DocumentError`` and is never written over. The state
        returned is the caller's: the manager keeps a copy of its own, which
        the next change in this process starts from -- so ``change`` must keep
        the document's rules (JSON values in ``metadata``, values in range).

        ``freeze`` is a snapshot to write once, before the state changes: with
        the first compare-and-set, in one round trip, on a primary that offers
        ``swap_state_with``. Its outcome is filled in for ``change`` to read;
        a change that was a no-op before the outcome was known is asked again.
        """
        return await self._update(product_id, user_id, change, create, stored, state, freeze, tail_only=False)

    async def _update(
        self,
        product_id: str,
        user_id: str,
        change: Callable[[UserAdoptionState], bool],
        create: Callable[[], UserAdoptionState],
        stored: Stored | None,
        state: UserAdoptionState | None,
        freeze: Freeze | None,
        *,
        tail_only: bool,
    ) -> StateUpdate:
        conflicts = 0
        repairs: tuple[str, ...] = ()
        deadline = time.monotonic() + self.write_deadline
        key = (product_id, user_id)
        async with self._user_slot(key):
            latest = self._states.get_recent(key)
            if latest is not None and latest.stored is not stored:  # written while we queued
                stored, state = latest.stored, None
            own = False  # the state is this manager's own last write, so its bytes are ours
            while True:
                if stored is None:
                    state = create()
                elif state is None:
                    state, repairs, own = self._decode(key, stored, user_id)
                changed = change(state)
                bundled = freeze is not None and not freeze.sent and changed and self._swap_with is not None
                if freeze is not None and not freeze.sent and not bundled:
                    await self.freeze(product_id, user_id, freeze)
                    changed = changed or change(state)
                if not changed:
                    return StateUpdate(state, False, conflicts, repairs)
                state.revision = new_revision()
                spliced = self._splice(state, stored) if tail_only and own and stored else None
                raw = spliced or encode(state)  # a splice writes what encode() writes
                expected = None if stored is None else stored.token
                kept: list[UserAdoptionState | None] = []  # the copy for the next change
                ok, current = await self._swap(
                    product_id,
                    user_id,
                    raw,
                    expected,
                    freeze if bundled else None,
                    functools.partial(_copy_into, kept, state),
                )
                written = Stored(raw, token_of(raw))
                if not ok and current is not None and current.token == written.token:
                    ok = True  # our own write, landed before a lost reply and a client retry
                if ok:  # the next change starts from a copy instead of decoding again
                    self._states.put(key, _Known(written, kept[0] if kept else None))
                    self.mirror_state(product_id, user_id, raw)
                    return StateUpdate(state, True, conflicts, repairs)
                conflicts += 1
                telemetry.cas_retry(conflicts, expected, None if current is None else current.token)
                stored, state, own = current, None, False
                self._states.put(key, None if current is None else _Known(current))
                if time.monotonic() > deadline:
                    raise ConflictError(f"state of one user changed {conflicts} times under this writer")
                await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**conflicts)))

    # -- the seed's dict-level Protocol -------------------------------------

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        """Overwrite on the primary (raises StorageError), mirror to the sinks."""
        await self._run(
            self.primary,
            "primary",
            "save_user_state",
            lambda: self.primary.save_user_state(product_id, user_id, state),
        )
        self._states.put((product_id, user_id), None)
        self.mirror_state(product_id, user_id, dumps(state))

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        """Write-once on the primary; the sinks see it only if this call froze it."""
        raw = dumps(snapshot)
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
                    adapter,
                    "primary" if i == 0 else "sink",
                    operation,
                    functools.partial(read, adapter),
                    lambda value: Outcome.OK if value is not None else Outcome.NOT_FOUND,
                )
            except StorageError as exc:
                failure = failure or exc
                continue
            if found is not None:
                return found
        if failure is not None:
            raise failure
        return None


class _DictPrimary:
    """``AtomicStore`` over a custom adapter's dict methods: best effort, not atomic."""

    def __init__(self, adapter: AutoplayStorageAdapter) -> None:
        self._adapter = adapter

    async def load_state(self, product_id: str, user_id: str) -> Stored | None:
        found = await self._adapter.get_user_state(product_id, user_id)
        if found is None:
            return None
        raw = _json.encode(found)
        return Stored(raw, token_of(raw))

    async def swap_state(
        self, product_id: str, user_id: str, raw: bytes, expected: str | None
    ) -> tuple[bool, Stored | None]:
        current = await self.load_state(product_id, user_id)
        if (None if current is None else current.token) != expected:
            return False, current
        await self._adapter.save_user_state(product_id, user_id, msgspec.json.decode(raw))
        return True, None

    async def create_snapshot(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> bool:
        if await self._adapter.get_session_snapshot(product_id, user_id, session_id) is not None:
            return False
        await self._adapter.save_session_snapshot(product_id, user_id, session_id, msgspec.json.decode(raw))
        return True

    async def load_snapshot(self, product_id: str, user_id: str, session_id: str) -> bytes | None:
        found = await self._adapter.get_session_snapshot(product_id, user_id, session_id)
        return None if found is None else _json.encode(found)
