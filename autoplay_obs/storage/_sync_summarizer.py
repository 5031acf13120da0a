"""Summarizers for the blocking API: a host's plain function runs on a thread of its own.

Decisions:
- On the manager's loop a blocking summarizer (a sync LLM client) would stall
  every other caller's storage work for as long as the LLM takes, and could
  not be timed out. So a plain function runs on a daemon thread (abandoned,
  not joined, when ``summarizer_timeout`` passes, so a hung LLM call cannot
  hold up interpreter exit), in a copy of the loop's context so the host's own
  LLM spans nest under ``autoplay.summarizer``. A coroutine function runs on
  the loop as it would in the async API.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any, cast

from autoplay_obs.storage._lifecycle import Summarizer
from autoplay_obs.user_adoption_state import SessionSnapshot

__all__ = ["SyncSummarizer", "off_loop"]

SyncSummarizer = Callable[[SessionSnapshot], str | Awaitable[str]]
"""A summarizer for the blocking API: a plain function (run on a thread) or a coroutine function."""


def off_loop(summarizer: SyncSummarizer | None) -> Summarizer | None:
    """A plain-function summarizer as a coroutine function that runs it on a daemon thread."""
    if summarizer is None or inspect.iscoroutinefunction(summarizer):
        return cast("Summarizer | None", summarizer)
    call = summarizer

    async def on_a_thread(snapshot: SessionSnapshot) -> str:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        context = contextvars.copy_context()  # the summarizer span stays its parent

        def work() -> None:
            try:
                outcome: tuple[bool, Any] = (True, context.run(call, snapshot))
            except BaseException as exc:
                outcome = (False, exc)
            try:
                loop.call_soon_threadsafe(_settle, done, outcome)
            except RuntimeError:  # the loop is gone: nobody waits for this any more
                return

        threading.Thread(target=work, name="autoplay-obs-summarizer", daemon=True).start()
        produced = await done  # a callable object's coroutine is awaited here, on the loop
        return cast(str, await produced if inspect.isawaitable(produced) else produced)

    return on_a_thread


def _settle(done: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if done.done():  # timed out and cancelled meanwhile
        return
    ok, value = outcome
    if ok:
        done.set_result(value)
    else:
        done.set_exception(value)
