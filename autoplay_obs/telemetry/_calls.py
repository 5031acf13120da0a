"""The lifecycle call in progress: what its adapter calls add up to.

Decisions:
- One ``SessionCall`` per ``start_session`` / ``end_session``, in a context
  variable, so the adapter spans it causes (sink writes included, which run
  in tasks that copied the context) report to it. Its fan-out verdict
  (``all_ok`` / ``degraded`` / ``primary_failed``) is counted once the last
  sink write settles, which may be after the lifecycle call returned.
- ``traced`` is False when the lifecycle span's context is invalid (no
  tracing SDK): its adapter calls then start no span at all.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from autoplay_obs.telemetry._metrics import Recorder

__all__ = ["SessionCall", "current_call", "enter_call", "leave_call", "trace_id_of"]

SINK_WRITES: Final = frozenset({"save_user_state", "save_session_snapshot"})


class SessionCall:
    """Outcome of one lifecycle call's writes."""

    __slots__ = (
        "closed",
        "emitted",
        "failed",
        "pending",
        "persisted",
        "primary_failed",
        "recorder",
        "trace_id",
        "traced",
    )

    def __init__(self, recorder: Recorder, traced: bool, trace_id: str | None) -> None:
        self.recorder = recorder
        self.traced = traced
        self.trace_id = trace_id
        self.pending = 0
        self.closed = self.emitted = self.failed = self.primary_failed = False
        self.persisted = True

    def adapter_done(self, role: str, operation: str, failed: bool) -> None:
        if failed:
            self.failed = True
            if role == "primary":
                self.primary_failed = True
        if role == "sink" and operation in SINK_WRITES and self.pending > 0:
            self.pending -= 1
            if self.closed and self.pending == 0:
                self._emit()

    def close(self, persisted: bool, degraded: bool) -> None:
        self.persisted = persisted
        self.failed = self.failed or degraded
        self.closed = True
        if self.pending == 0:
            self._emit()

    def _emit(self) -> None:
        if self.emitted:
            return
        self.emitted = True
        result = "primary_failed" if not self.persisted else "degraded" if self.failed else "all_ok"
        self.recorder.record("fanout_results", 1, (result,), self.trace_id)


_call: contextvars.ContextVar[SessionCall | None] = contextvars.ContextVar("autoplay_obs_call", default=None)
current_call = _call.get


def enter_call(call: SessionCall) -> contextvars.Token[SessionCall | None]:
    return _call.set(call)


def leave_call(token: contextvars.Token[SessionCall | None]) -> None:
    _call.reset(token)


def trace_id_of(span: Any) -> str | None:
    """The span's trace id as 32 hex digits (for exemplars), or None."""
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
