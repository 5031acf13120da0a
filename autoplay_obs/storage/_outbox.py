"""A durable local outbox for session ends the primary did not acknowledge.

Decisions:

- The standard library's ``sqlite3``, one file in WAL mode: nothing to
  install, crash-safe transactions, and several processes of one host can
  share the file (SQLite's locks; not on a network file system). ``put``
  returns only after its transaction committed.
- What "committed" survives is the ``synchronous`` setting, in WAL mode:
  ``FULL`` (default) fsyncs the WAL before every commit returns, so an
  acknowledged put survives a process crash *and* an OS crash or power loss
  (as far as the disk honours fsync). ``NORMAL`` fsyncs only at checkpoints:
  an acknowledged put survives the process being killed (the WAL is in the
  OS page cache), but the last puts before a power loss or kernel panic may
  be rolled back -- the file stays consistent either way. ``EXTRA`` also
  syncs the directory; rarely worth it.
- Each outbox owns one worker thread (its own executor rather than
  ``asyncio.to_thread``'s default pool, which the host may saturate) holding
  the one connection, so calls are serialised without a lock and the event
  loop never waits on the disk. Every call is bounded by ``timeout_s``
  twice: the caller stops waiting then, and in the thread the busy timeout,
  a progress handler and a check before COMMIT roll the call back at the
  same deadline. Only a put whose deadline passed during its own commit (or
  whose caller was cancelled) can land unreported: replay is idempotent.
- A claim is a lease (claimer id, deadline), so processes sharing the file
  never replay one entry at once, and a dead claimer's entries come back when
  its lease lapses. ``release``/``park`` leave alone an entry another claimer
  holds; ``ack`` always deletes (a replayed entry is done, whoever acks it).
- Every sqlite3 or OS error is mapped here, once, to ``OutboxError``; a file
  that is not a readable outbox is reported, never deleted or rewritten.
- Bounds are each process's own, enforced at its puts; the last writer to
  open the file records its bounds there for a status read elsewhere.
- After ``os.fork`` the child opens its own connection and thread (SQLite
  connections must not cross a fork); the inherited ones are left unclosed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Final, TypeVar

from autoplay_obs.errors import (
    ConfigurationError,
    InvalidValueError,
    OutboxCorruptError,
    OutboxError,
    OutboxTimeoutError,
    OutboxWriteError,
)
from autoplay_obs.storage import _outbox_sql as sql
from autoplay_obs.storage._keys import validate_id
from autoplay_obs.storage._outbox_schema import OutboxConnection, connect
from autoplay_obs.storage._outbox_types import (
    DropReason,
    OutboxEntry,
    OutboxItem,
    OutboxStatus,
    PutResult,
    current_trace_headers,
)

__all__ = ["Outbox"]

T = TypeVar("T")
SYNCHRONOUS_MODES: Final = ("FULL", "NORMAL", "EXTRA")
_PROGRESS_EVERY: Final = 1000  # SQLite VM steps between deadline checks


class Outbox:
    """A bounded, durable queue of session ends, in one SQLite file shared by a host's processes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        max_age_s: float = 7 * 24 * 3600.0,
        timeout_s: float = 2.0,
        synchronous: str = "FULL",
        create: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """No I/O here: the file is opened by ``await open()`` or the first call.

        ``create=False`` refuses a missing file (for read-only tools such as the status
        command). ``clock`` is the wall clock shared by every process (ages, leases).
        """
        if max_entries < 1 or max_bytes < 1 or not max_age_s > 0 or not timeout_s > 0:
            raise ConfigurationError("outbox bounds and timeout must be positive")
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ConfigurationError(
                f"outbox synchronous must be one of {SYNCHRONOUS_MODES}, got {synchronous!r}"
            )
        self.path = os.fspath(path)
        self.synchronous = mode
        self.timeout_s = float(timeout_s)
        self.owner = _claimer_id()
        self._limits = sql.Limits(max_entries, max_bytes, float(max_age_s))
        self._create = create
        self._clock = clock
        self._dropped: Counter[DropReason] = Counter()
        self._conn: OutboxConnection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pid = -1
        self._abandoned: list[object] = []  # inherited across a fork: never closed in the child
        self._closed = False

    def __repr__(self) -> str:
        return f"Outbox({self.path!r}, synchronous={self.synchronous!r})"

    @property
    def dropped(self) -> Mapping[DropReason, int]:
        """Entries this object dropped since it was made, by reason (the file's totals: ``status``)."""
        return dict(self._dropped)

    # ------------------------------------------------------------------ the calls

    async def open(self) -> None:
        """Open the file now, so a bad path or a corrupt file shows at start-up (``OutboxError``)."""
        await self._run("open", lambda conn: None)

    async def put(self, item: OutboxItem) -> PutResult:
        """Queue one session end; returns once it is committed (see the module on ``synchronous``)."""
        for value, what in (
            (item.product_id, "product_id"),
            (item.user_id, "user_id"),
            (item.session_id, "session_id"),
        ):
            validate_id(value, what)
        if not isinstance(item.snapshot, bytes):
            raise InvalidValueError(f"snapshot must be bytes, got {type(item.snapshot).__name__}")
        trace = current_trace_headers()  # here, in the caller's context, not in the worker thread
        result = await self._run("put", sql.put, item, trace, self._clock(), self._limits)
        self._dropped.update(result.dropped)
        return result

    async def claim(self, limit: int = 100, lease_s: float = 30.0) -> list[OutboxEntry]:
        """Lease up to ``limit`` entries to replay: each user's oldest, oldest first, one per user.

        A user's next entry is only handed out once this one is acked or parked, so
        sessions replay in order. Entries past ``max_age_s`` are dropped first.
        """
        if limit < 1 or not lease_s > 0:
            raise ValueError("claim needs limit >= 1 and lease_s > 0")
        entries, expired = await self._run(
            "claim", sql.claim, self.owner, limit, lease_s, self._clock(), self._limits
        )
        if expired:
            self._dropped["max_age"] += expired
        return entries

    async def ack(self, entry_ids: Iterable[int]) -> int:
        """Delete entries the primary acknowledged; returns how many were still there."""
        ids = list(entry_ids)
        return await self._run("ack", sql.ack, ids) if ids else 0

    async def release(self, entry_id: int, error: str, *, retry_after_s: float = 0.0) -> bool:
        """Give a claimed entry back after a failed replay (attempts + 1, claimable again
        after ``retry_after_s``); False when it is gone or another claimer holds it."""
        return await self._run(
            "release", sql.release, entry_id, self.owner, error, self._clock(), retry_after_s
        )

    async def park(self, entry_id: int, reason: str) -> bool:
        """Set aside an entry that can never replay (its document is refused); kept for an operator."""
        return await self._run("park", sql.park, entry_id, self.owner, reason, self._clock())

    async def purge_user(self, product_id: str, user_id: str) -> int:
        """Delete every entry of one user (erasure); returns how many."""
        return await self._run(
            "purge", sql.purge_user, validate_id(product_id, "product_id"), validate_id(user_id, "user_id")
        )

    async def pending_for(self, product_id: str, user_id: str) -> list[OutboxEntry]:
        """One user's pending entries (not parked), oldest first."""
        return await self._run(
            "read", sql.pending_for, validate_id(product_id, "product_id"), validate_id(user_id, "user_id")
        )

    async def expire(self) -> int:
        """Drop entries older than ``max_age_s`` now; returns how many."""
        expired = await self._run("expire", sql.expire, self._clock(), self._limits)
        if expired:
            self._dropped["max_age"] += expired
        return expired

    async def status(self) -> OutboxStatus:
        """Depth, bytes, oldest age and the file's lifetime counters (read only)."""
        return await self._run("status", sql.status, self._clock(), self.path, self._limits, self.synchronous)

    async def aclose(self) -> None:
        """Close without blocking the event loop (waits for a call in flight)."""
        executor = self._shut()
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_connection)
            executor.shutdown(wait=False)

    def close(self) -> None:
        """Close, blocking until a call in flight is done. Later calls raise ``OutboxError``."""
        executor = self._shut()
        if executor is not None:
            executor.submit(self._close_connection)
            executor.shutdown(wait=True)

    async def __aenter__(self) -> Outbox:
        await self.open()
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ plumbing

    def _shut(self) -> ThreadPoolExecutor | None:
        self._closed = True
        executor, self._executor = self._executor, None
        return executor if self._pid == os.getpid() else None

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _worker(self) -> ThreadPoolExecutor:
        if self._closed:
            raise OutboxError(f"outbox {self.path} is closed")
        if self._pid != os.getpid():  # first call, or the first in a forked child
            if self._conn is not None:
                self._abandoned.append(self._conn)
            self._conn = None
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="autoplay-outbox")
            if self._pid != -1:
                self.owner = _claimer_id()  # a forked child must not pass for its parent's leases
            self._pid = os.getpid()
        assert self._executor is not None
        return self._executor

    async def _run(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        deadline = time.monotonic() + self.timeout_s
        future = asyncio.get_running_loop().run_in_executor(
            self._worker(), self._call, what, deadline, fn, args
        )
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        except asyncio.TimeoutError:
            raise OutboxTimeoutError(
                f"outbox {what} at {self.path} took longer than {self.timeout_s}s"
                + (" (it may still have landed; replay is idempotent)" if what == "put" else "")
            ) from None

    def _call(self, what: str, deadline: float, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """In the worker thread: open if needed, bound the statement by the deadline, map errors."""
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OutboxTimeoutError(
                    f"outbox {what} at {self.path} waited past its {self.timeout_s}s timeout"
                )
            conn = self._connection()
            conn.deadline = deadline
            conn.execute(f"PRAGMA busy_timeout = {max(1, int(remaining * 1000))}")
            return fn(conn, *args)
        except OutboxError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise _mapped(exc, what, self.path) from exc

    def _connection(self) -> OutboxConnection:
        if self._conn is None:
            conn = connect(
                self.path, timeout_s=self.timeout_s, synchronous=self.synchronous, create=self._create
            )
            conn.set_progress_handler(lambda: int(time.monotonic() > conn.deadline), _PROGRESS_EVERY)
            try:
                if self._create:  # a writer: a status read elsewhere reports the bounds it enforces
                    sql.record_settings(conn, self._limits, self.synchronous)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn


def _claimer_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _mapped(exc: sqlite3.Error | OSError, what: str, path: str) -> OutboxError:
    """The one place a sqlite3 or OS error becomes an ``OutboxError``."""
    if isinstance(exc, OSError):
        hint = " (is the directory writable?)" if isinstance(exc, PermissionError) else ""
        return OutboxWriteError(f"outbox {what} at {path} failed: {exc.strerror or exc}{hint}")
    name = str(getattr(exc, "sqlite_errorname", ""))  # Python 3.11+; the message suffices before
    text = f"{exc} [{name}]" if name else str(exc)
    if (
        name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT"))
        or "not a database" in text
        or "malformed" in text
    ):
        return OutboxCorruptError(
            f"{path} is not a readable outbox ({text}); it was left untouched: move it aside to start afresh"
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_INTERRUPT")) or str(exc) in (
        "database is locked",
        "interrupted",
    ):
        return OutboxTimeoutError(f"outbox {what} at {path} gave up after its timeout: {text}")
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return OutboxWriteError(
            f"cannot open outbox {path}: {text} (does the directory exist, is it writable?)"
        )
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return OutboxWriteError(f"outbox {path} is read-only here: {text}")
    if name.startswith(("SQLITE_FULL", "SQLITE_IOERR")) or "disk" in text:
        return OutboxWriteError(f"outbox {what} at {path} could not write: {text} (is the disk full?)")
    return OutboxWriteError(f"outbox {what} at {path} failed: {text}")
