"""What the storage code calls, one line each; every hook is a no-op when telemetry is off.

- ``with telemetry.adapter_call(adapter, name, role, operation) as span:``
  around each adapter call the manager makes, ``span.done(record)`` with its
  ``AdapterCall`` before the block ends;
- ``@telemetry.traced_session("start" | "end")`` on the two lifecycle calls and
  ``@telemetry.traced_summarizer`` on the summarizer;
- ``sinks_started``, ``cas_retry``, ``document_repaired``, ``document_refused``
  for what happens between them; ``register_delivery_ledger`` for the sinks.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from opentelemetry import trace

from autoplay_obs.errors import DocumentError
from autoplay_obs.telemetry import _session
from autoplay_obs.telemetry._calls import current_call, trace_id_of
from autoplay_obs.telemetry._delivery import delivery_counts, register_delivery_ledger
from autoplay_obs.telemetry._log import log
from autoplay_obs.telemetry._spans import IDLE_ADAPTER_SPAN, NULL_ADAPTER_SPAN, AdapterSpan
from autoplay_obs.telemetry._telemetry import current

__all__ = [
    "adapter_call",
    "cas_retry",
    "delivery_counts",
    "document_refused",
    "document_repaired",
    "log",
    "register_delivery_ledger",
    "sinks_started",
    "traced_session",
    "traced_summarizer",
]

P = ParamSpec("P")
R = TypeVar("R")
_SESSION_PARAMETERS = {
    "start": ("product_id", "user_id", "session_id"),
    "end": ("product_id", "user_id", "session_snapshot"),
}


def adapter_call(adapter: object, name: str, role: str, operation: str) -> AdapterSpan | Any:
    """The span around one adapter call (a null one when telemetry is off)."""
    t = current()
    if t is None:
        return NULL_ADAPTER_SPAN
    if t.idle():
        return IDLE_ADAPTER_SPAN
    return AdapterSpan(t, adapter, name, role, operation)


def traced_session(phase: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Wrap ``start_session`` (phase ``start``) or ``end_session`` (``end``) in a span and metrics."""
    return _session.traced(phase, _SESSION_PARAMETERS[phase])


def traced_summarizer(
    fn: Callable[P, Awaitable[tuple[str | None, str | None]]],
) -> Callable[P, Awaitable[tuple[str | None, str | None]]]:
    """Wrap the lifecycle's summarizer call (returns ``(summary, error_type)``)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> tuple[str | None, str | None]:
        t = current()
        if t is None:
            return await fn(*args, **kwargs)
        return await _session.run_summarizer(t, fn, *args, **kwargs)

    return wrapper


def sinks_started(count: int) -> None:
    """The manager started ``count`` background sink writes for the current lifecycle call."""
    call = current_call()
    if call is not None:
        call.pending += count


def _event(
    name: str, attributes: dict[str, Any], key: str, labels: tuple[str, ...], value: float = 1
) -> None:
    t = current()
    if t is None or t.idle():
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(name, attributes)
    trace_id = trace_id_of(span) if t.recorder.prom is not None else None
    t.recorder.record(key, value, labels, trace_id)


def cas_retry(attempt: int, expected: str | None, current_token: str | None) -> None:
    """A compare-and-set on the user state lost to a concurrent writer; it is retried."""
    attributes = {
        "autoplay.attempt": attempt,
        "autoplay.revision.expected": expected or "",
        "autoplay.revision.current": current_token or "",
    }
    _event("autoplay.state.cas_retry", attributes, "cas_conflicts", ())


def document_repaired(document: str, repairs: int) -> None:
    """A stored document was read with ``repairs`` repairs (counts, never the bodies)."""
    if repairs > 0:
        attributes = {"autoplay.document": document, "autoplay.repairs": repairs}
        _event("autoplay.document.repaired", attributes, "documents_repaired", (document,))


def document_refused(document: str, error: BaseException) -> None:
    """A stored document could not be used (counted only for ``DocumentError``); it was left alone."""
    if isinstance(error, DocumentError):
        attributes = {"autoplay.document": document, "error.type": type(error).__name__}
        _event("autoplay.document.refused", attributes, "documents_refused", (document,))
