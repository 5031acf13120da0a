"""One private event loop in a daemon thread, for callers that block.

Decisions:
- One loop per ``SyncStorageManager``, started once, never ``asyncio.run``
  per call: the async manager's cache, per-user queues and connections live on
  that loop for its whole life. Callers in any thread submit coroutines with
  ``run_coroutine_threadsafe`` and wait a bounded time; past it the work is
  cancelled and ``CallTimeoutError`` raised, so a caller never hangs.
- A thread with a running event loop of its own is refused at once: blocking
  it would stall that loop, and on this runner's own thread it would deadlock.
- Fork: the loop's thread does not survive ``fork()``, and the adapters'
  connections would be shared with the parent. A runner knows the process
  that started it (``os.getpid()``) and refuses every call from another one
  before touching any lock, which a thread of the parent may have held at the
  moment of the fork.
- The thread is a daemon: a host that never closes does not hang at exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from autoplay_obs.errors import CallTimeoutError, ConfigurationError

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An event loop running forever in a daemon thread; coroutines are submitted to it."""

    def __init__(self, name: str) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._inflight: set[concurrent.futures.Future[Any]] = set()
        self._closing = False
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self._finish()

    def _finish(self) -> None:
        """Cancel what is left (nothing, after a clean close), then close the loop."""
        loop = self.loop
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    # -- guards ------------------------------------------------------------

    def check_caller(self, what: str) -> None:
        """Raise ``ConfigurationError`` for a call this runner must not serve from here."""
        if os.getpid() != self.pid:
            raise ConfigurationError(
                f"{what} was created in process {self.pid} and cannot be used in process "
                f"{os.getpid()}, forked from it: its event loop thread and connections do not "
                f"survive a fork. Create it in each worker process after the fork (for gunicorn "
                f"with --preload: on first use, or in a post_fork hook)."
            )
        if _running_loop() is not None:
            raise ConfigurationError(
                f"{what} blocks, and this thread runs an event loop, which it would stall "
                f"(or deadlock); use the async API instead: autoplay_obs.storage.StorageManager "
                f"with `await on_session_start(...)` / `await on_session_end(...)`."
            )

    @property
    def forked(self) -> bool:
        return os.getpid() != self.pid

    # -- calls -------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        """``coro``'s result, run on the loop; waits at most ``timeout`` seconds."""
        try:
            self.check_caller(what)
            with self._lock:
                if self._closing:
                    raise ConfigurationError(f"{what} is closed")
                future = asyncio.run_coroutine_threadsafe(coro, self.loop)
                self._inflight.add(future)
        except BaseException:
            coro.close()
            raise
        future.add_done_callback(self._landed)
        return self._wait(future, timeout, what)

    def _landed(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._inflight.discard(future)

    @staticmethod
    def _wait(future: concurrent.futures.Future[T], timeout: float, what: str) -> T:
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.done():  # the coroutine's own TimeoutError, or it finished just now
                return future.result()
            future.cancel()
            raise CallTimeoutError(f"{what}: no answer within {timeout} s; the call was cancelled") from None
        except concurrent.futures.CancelledError:
            raise ConfigurationError(f"{what} was closed while this call ran") from None
        except BaseException:  # KeyboardInterrupt in the caller: the work stops too
            future.cancel()
            raise

    def close(self, final: Coroutine[Any, Any, None], timeout: float, what: str) -> bool:
        """Refuse new calls, let the ones in flight finish, run ``final``, stop the loop.

        Each wait is bounded by ``timeout``; returns whether all of it finished in time.
        """
        with self._lock:
            self._closing = True
            inflight = list(self._inflight)
        _, late = concurrent.futures.wait(inflight, timeout)
        finished = not late
        try:
            future = asyncio.run_coroutine_threadsafe(final, self.loop)
            self._wait(future, timeout, what)
        except CallTimeoutError:
            finished = False
        finally:
            self.stop(timeout)
        return finished and not self.thread.is_alive()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop (cancelling what is still on it) without waiting on any call."""
        with contextlib.suppress(RuntimeError):  # already closed
            self.loop.call_soon_threadsafe(self.loop.stop)
        if timeout is not None and threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    def abandon(self, final: Coroutine[Any, Any, None]) -> None:
        """Schedule ``final`` then a stop, without blocking (for a manager collected unclosed)."""

        async def then_stop() -> None:
            try:
                await final
            finally:
                self.loop.stop()

        step = then_stop()
        try:
            if self.forked:
                raise RuntimeError("forked")
            asyncio.run_coroutine_threadsafe(step, self.loop)
        except RuntimeError:  # forked, or the loop is closed: nothing to flush from here
            step.close()
            final.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
