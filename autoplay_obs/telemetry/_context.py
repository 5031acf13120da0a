"""The caller's trace context, carried across a thread hop.

Decisions:
- Captured in the calling thread, attached inside the coroutine on the other
  thread's loop, so a span current in the caller is the parent of the
  library's spans. asyncio happens to copy the submitting thread's
  contextvars into a task handed to another thread's loop, but that is how
  CPython builds the callback, not a promise; attaching is.
- ``opentelemetry.context`` only (the API): with no SDK configured, the
  context is empty and attaching it costs a contextvar set.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from opentelemetry import context as otel_context

__all__ = ["carried"]

P = ParamSpec("P")
R = TypeVar("R")


def carried(fn: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
    """``fn(*args, **kwargs)`` as a coroutine that runs in the context current *now*.

    Call it in the calling thread; ``fn`` itself is only called once the
    coroutine runs, so a coroutine that is never scheduled can be closed
    without a "never awaited" warning.
    """
    captured = otel_context.get_current()

    async def run() -> R:
        token = otel_context.attach(captured)
        try:
            return await fn(*args, **kwargs)
        finally:
            otel_context.detach(token)

    return run()
