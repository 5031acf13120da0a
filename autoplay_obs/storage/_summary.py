"""The host's summarizer, isolated: bounded in time and size, and never able to lose a session.

Decisions:
- The summarizer runs in a task of its own and is awaited with
  ``asyncio.wait``, which returns instead of raising whatever the task ends
  with. So a summarizer that raises -- even a stray ``CancelledError`` while
  the host's task is not being cancelled -- is a counted failure, and the
  session is saved without a summary; a real cancellation of the host's task
  still reaches the host (and cancels the summarizer). Works the same on 3.10,
  which has no ``Task.cancelling()``.
- A summary longer than the manager's ``max_summary_chars`` is cut there and
  the cut is reported: it is read at every later session start and end.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from autoplay_obs.telemetry import _hooks as telemetry
from autoplay_obs.user_adoption_state import SessionSnapshot

__all__ = ["Summarizer", "bounded", "summarize"]

Summarizer = Callable[[SessionSnapshot], Awaitable[str]]
"""Turns a frozen snapshot into the onboarding summary (your LLM call)."""


def bounded(summary: str | None, limit: int) -> tuple[str | None, int]:
    """The summary cut to ``limit`` characters, and how many were cut."""
    if summary is None or len(summary) <= limit:
        return summary, 0
    return summary[:limit], len(summary) - limit


@telemetry.traced_summarizer
async def summarize(
    summarizer: Callable[[SessionSnapshot], Any], snapshot: SessionSnapshot, timeout: float
) -> tuple[str | None, str | None]:
    """The summary, or None and the failure's type name; only the host's own cancellation raises."""
    try:
        produced = summarizer(snapshot)
    except Exception as exc:
        return None, type(exc).__name__
    if inspect.isawaitable(produced):
        task = asyncio.ensure_future(produced)
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:  # the host's task is being cancelled: so is the summarizer
            task.cancel()
            raise
        if not done:
            task.cancel()
            return None, "TimeoutError"
        if task.cancelled():
            return None, "CancelledError"
        failure = task.exception()
        if failure is not None:
            if not isinstance(failure, Exception):  # KeyboardInterrupt, SystemExit: not ours to keep
                raise failure
            return None, type(failure).__name__
        produced = task.result()
    if not isinstance(produced, str):
        return None, "TypeError"
    return produced, None
