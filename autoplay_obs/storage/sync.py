"""The blocking API, for hosts without an event loop (Flask, Django views, Celery workers).

Same names and arguments as ``autoplay_obs.storage``, with ``storage=`` a
``SyncStorageManager``::

    storage = SyncStorageManager([RedisStorageAdapter(redis_url=...)])
    state, onboarding = on_session_start("prod_1", "u_1", "sess_1", storage=storage)

Decisions:
- A ``SyncStorageManager`` owns one event loop in a daemon thread and one
  async ``StorageManager`` built on it; every call from every thread runs
  there (never ``asyncio.run`` per call, whose throwaway loops strand the
  connections and caches of a long-lived manager). Adapters are built by the
  caller in its own thread: the built-in ones connect on first use, which is
  on that loop.
- Every wait is bounded (``call_timeout``; a session end with a summarizer
  also gets ``summarizer_timeout``): past it the call is cancelled and
  ``CallTimeoutError`` raised. A call from a thread running an event loop, from
  a forked child, or after ``close()`` raises ``ConfigurationError`` at once.
- The caller's trace context is attached on the loop, so the caller's current
  span is the parent of ``autoplay.session.start`` / ``.end``.
- A summarizer that is a plain function runs on a daemon thread of its own
  (it would otherwise stall every caller's work on the loop, and could not be
  timed out); a coroutine function runs on the loop.
- ``close()`` flushes the sinks within their close timeouts and stops the
  thread; without it, interpreter exit does the same (an ``atexit`` hook that
  holds the manager only weakly). A manager collected unclosed is flushed and
  stopped in the background.
- New async manager methods are exposed with one line each (``_blocking``).
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from autoplay_obs.errors import ConfigurationError
from autoplay_obs.storage import _lifecycle
from autoplay_obs.storage._manager import StorageManager
from autoplay_obs.storage._protocol import AutoplayStorageAdapter
from autoplay_obs.storage._results import SessionEndResult, SessionStartResult
from autoplay_obs.storage._sync_loop import LoopThread
from autoplay_obs.storage._sync_summarizer import SyncSummarizer, off_loop
from autoplay_obs.telemetry._context import carried
from autoplay_obs.user_adoption_state import SessionSnapshot, UserAdoptionState

__all__ = [
    "SyncStorageManager",
    "SyncSummarizer",
    "end_session",
    "on_session_end",
    "on_session_start",
    "start_session",
]

P = ParamSpec("P")
R = TypeVar("R")
logger = logging.getLogger("autoplay_obs")


def _blocking(
    method: Callable[Concatenate[StorageManager, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[SyncStorageManager, P], R]:
    """The async manager's ``method`` as a blocking method of ``SyncStorageManager``."""

    def call(self: SyncStorageManager, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._run(method, self._manager, *args, **kwargs)

    functools.update_wrapper(call, method)
    call.__doc__ = f"Blocking ``StorageManager.{method.__name__}``: {method.__doc__ or ''}".strip()
    return call


class SyncStorageManager:
    """A ``StorageManager`` for blocking callers; safe to share between threads.

    Takes ``StorageManager``'s arguments (passed through) plus
    ``call_timeout``: the longest a call waits before ``CallTimeoutError``.
    """

    def __init__(
        self,
        adapters: Sequence[AutoplayStorageAdapter],
        *,
        call_timeout: float = 30.0,
        **manager_kwargs: Any,
    ) -> None:
        if not call_timeout > 0:
            raise ConfigurationError(f"call_timeout must be a positive number of seconds, got {call_timeout}")
        self.call_timeout = float(call_timeout)
        self._closing = threading.Lock()
        self._closed = False
        self._shut = threading.Event()
        self._loop = LoopThread("autoplay-obs-sync")
        adapters = list(adapters)

        async def build() -> StorageManager:
            return StorageManager(adapters, **manager_kwargs)

        try:
            self._manager: StorageManager = self._loop.run(build(), self.call_timeout, "SyncStorageManager")
        except BaseException:
            self._loop.stop(self.call_timeout)
            raise
        # Interpreter exit closes a manager still open; the hook holds it weakly.
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)
        self._collected = weakref.finalize(self, _collected, self._loop, self._manager, self._at_exit)
        self._collected.atexit = False

    def _run(
        self,
        fn: Callable[P, Awaitable[R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        return self._wait_for(carried(fn, *args, **kwargs), self.call_timeout)

    def _wait_for(self, coro: Coroutine[Any, Any, R], timeout: float) -> R:
        return self._loop.run(coro, timeout, "SyncStorageManager")

    # -- the async manager's own calls, blocking -----------------------------

    get_user_state = _blocking(StorageManager.get_user_state)
    save_user_state = _blocking(StorageManager.save_user_state)
    get_session_snapshot = _blocking(StorageManager.get_session_snapshot)
    save_session_snapshot = _blocking(StorageManager.save_session_snapshot)
    drain = _blocking(StorageManager.drain)

    # -- closing -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """``close()`` has begun: every call raises ``ConfigurationError``."""
        return self._closed

    def close(self) -> None:
        """Let calls in flight finish, flush and close every adapter, stop the loop thread.

        Idempotent; each step is bounded by ``call_timeout`` (the sinks' own
        ``close_timeout`` bounds their flush). In a forked child it only marks
        this copy closed: the sinks belong to the parent.
        """
        if not self._loop.forked:
            self._loop.check_caller("SyncStorageManager.close()")
        self._shutdown()

    def _shutdown(self) -> None:
        if self._loop.forked:  # before any lock, which a parent's thread may have held at the fork
            self._closed = True
            return
        with self._closing:
            first, self._closed = not self._closed, True
        if not first:  # another thread is closing it: wait for that to finish
            self._shut.wait(self.call_timeout * 3)
            return
        atexit.unregister(self._at_exit)
        self._collected.detach()
        try:
            if not self._loop.close(self._manager.aclose(), self.call_timeout, "SyncStorageManager"):
                logger.warning(
                    "autoplay_obs: SyncStorageManager did not close within %s s; sink writes may be lost",
                    self.call_timeout,
                )
        finally:
            self._shut.set()

    def __enter__(self) -> SyncStorageManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _close_at_exit(ref: weakref.ReferenceType[SyncStorageManager]) -> None:
    manager = ref()
    if manager is not None:
        manager._shutdown()


def _collected(loop: LoopThread, manager: StorageManager, at_exit: Callable[[], None]) -> None:
    atexit.unregister(at_exit)
    loop.abandon(manager.aclose())


def _storage(storage: object) -> SyncStorageManager:
    if not isinstance(storage, SyncStorageManager):
        raise ConfigurationError(
            f"storage= must be a SyncStorageManager, got {type(storage).__name__}; with a "
            f"StorageManager, await the functions of autoplay_obs.storage instead"
        )
    return storage


def start_session(
    product_id: str, user_id: str, session_id: str, storage: SyncStorageManager
) -> SessionStartResult:
    """Blocking ``autoplay_obs.storage.start_session``."""
    sync = _storage(storage)
    return sync._run(_lifecycle.start_session, product_id, user_id, session_id, sync._manager)


def on_session_start(
    product_id: str, user_id: str, session_id: str, storage: SyncStorageManager
) -> tuple[UserAdoptionState, SessionSnapshot | None]:
    """Blocking ``autoplay_obs.storage.on_session_start``: ``(state, onboarding_session)``."""
    result = start_session(product_id, user_id, session_id, storage)
    return result.state, result.onboarding_session


def end_session(
    product_id: str,
    user_id: str,
    session_snapshot: SessionSnapshot,
    storage: SyncStorageManager,
    *,
    summarizer: SyncSummarizer | None = None,
    summary: str | None = None,
    summarizer_timeout: float = 30.0,
) -> SessionEndResult:
    """Blocking ``autoplay_obs.storage.end_session``; waits ``call_timeout`` (+ ``summarizer_timeout``)."""
    sync = _storage(storage)
    timeout = sync.call_timeout + (summarizer_timeout if summarizer is not None and summary is None else 0)
    step = carried(
        _lifecycle.end_session,
        product_id,
        user_id,
        session_snapshot,
        sync._manager,
        summarizer=off_loop(summarizer),
        summary=summary,
        summarizer_timeout=summarizer_timeout,
    )
    return sync._wait_for(step, timeout)


def on_session_end(
    product_id: str,
    user_id: str,
    session_snapshot: SessionSnapshot,
    storage: SyncStorageManager,
    *,
    summarizer: SyncSummarizer | None = None,
    summary: str | None = None,
    summarizer_timeout: float = 30.0,
) -> UserAdoptionState:
    """Blocking ``autoplay_obs.storage.on_session_end``: the updated state."""
    return end_session(
        product_id,
        user_id,
        session_snapshot,
        storage,
        summarizer=summarizer,
        summary=summary,
        summarizer_timeout=summarizer_timeout,
    ).state
