"""Lifecycle spans: ``start_session`` / ``end_session`` and the summarizer they run.

Decisions:
- The decorator reads the ids by parameter name, positions worked out once
  from the wrapped function's signature, never per call.
- The span starts bare and gets its attributes only when it records: with no
  SDK nothing is built and the (invalid) span is not attached.
- Only product and session ids, the session number and the outcome are
  recorded; the user id only as ``AUTOPLAY_OBS_RECORD_USER_ID`` says.
- With ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`` the spans
  also follow the GenAI memory conventions (development status): a start is
  ``search_memory`` (the user's state and onboarding snapshot are the items
  found), an end ``update_memory`` (a merge); the span is named
  ``{gen_ai.operation.name} {gen_ai.memory.store.name}``. The user id is
  never ``gen_ai.memory.namespace``; the summary is ``gen_ai.memory.content``
  only with ``AUTOPLAY_OBS_CAPTURE_CONTENT=true`` as well.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from autoplay_obs.errors import DocumentError
from autoplay_obs.telemetry._calls import SessionCall, enter_call, leave_call, trace_id_of
from autoplay_obs.telemetry._log import log, logger

if TYPE_CHECKING:
    from autoplay_obs.telemetry._telemetry import Telemetry

__all__ = ["MEMORY_STORE", "run_session", "run_summarizer", "session_parameters"]

P = ParamSpec("P")
R = TypeVar("R")
MEMORY_STORE: Final = "autoplay_obs"
_GENAI_OPERATION: Final = {"start": "search_memory", "end": "update_memory"}


def session_parameters(fn: Callable[..., Any], names: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """(name, position) of each parameter the span reads, from ``fn``'s signature."""
    params = list(inspect.signature(fn).parameters)
    return tuple((name, params.index(name)) for name in names)


def _argument(where: tuple[str, int], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    name, position = where
    return args[position] if len(args) > position else kwargs.get(name)


def _start_attributes(t: Telemetry, phase: str, ids: tuple[Any, Any, Any]) -> dict[str, Any]:
    product_id, user_id, third = ids
    session_id = third if phase == "start" else getattr(third, "session_id", None)
    attributes: dict[str, Any] = {}
    if isinstance(product_id, str):
        attributes["autoplay.product_id"] = product_id
    if isinstance(session_id, str):
        attributes["autoplay.session_id"] = session_id
    number = getattr(third, "session_number", None)
    if isinstance(number, int):
        attributes["autoplay.session_number"] = number
    hidden = t.switches.user_id_attribute(user_id)
    if hidden is not None:
        attributes["autoplay.user_id"] = hidden
    if t.switches.genai:
        attributes["gen_ai.operation.name"] = _GENAI_OPERATION[phase]
        attributes["gen_ai.memory.store.name"] = MEMORY_STORE
        attributes["gen_ai.memory.scope"] = "user"
        attributes["gen_ai.memory.type"] = "long_term"
        if isinstance(session_id, str):
            attributes["gen_ai.conversation.id"] = session_id
        if phase == "end":
            attributes["gen_ai.memory.update.strategy"] = "merge"
    return attributes


async def run_session(
    t: Telemetry,
    phase: str,
    where: tuple[tuple[str, int], ...],
    fn: Callable[..., Awaitable[R]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> R:
    """``fn(*args, **kwargs)`` inside the lifecycle span, its outcome recorded."""
    name = f"{_GENAI_OPERATION[phase]} {MEMORY_STORE}" if t.switches.genai else f"autoplay.session.{phase}"
    span = t.tracer.start_span(name)
    ctx = span.get_span_context()
    recording = span.is_recording()
    if recording:
        ids = (_argument(where[0], args, kwargs), _argument(where[1], args, kwargs))
        span.set_attributes(_start_attributes(t, phase, (*ids, _argument(where[2], args, kwargs))))
    trace_id = None
    if t.recorder.prom is not None:
        trace_id = trace_id_of(span) or trace_id_of(trace.get_current_span())
    call = SessionCall(t.recorder, ctx.is_valid, trace_id)
    token = otel_context.attach(trace.set_span_in_context(span)) if ctx.is_valid else None
    call_token = enter_call(call)
    try:
        result = await fn(*args, **kwargs)
    except BaseException as exc:
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        span.end()
        raise
    finally:
        leave_call(call_token)
        if token is not None:
            otel_context.detach(token)
    try:
        _finish(t, phase, span if recording else None, call, result)
    except Exception:  # telemetry must never replace the lifecycle result
        logger.debug("autoplay_obs telemetry hook failed", exc_info=True)
    span.end()
    return result


async def run_idle(
    phase: str, fn: Callable[..., Awaitable[R]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> R:
    """Nothing to record (``Telemetry.idle``): only a lost state change is logged."""
    result = await fn(*args, **kwargs)
    if not getattr(result, "persisted", True):
        _log_not_persisted(phase, type(getattr(result, "error", None)).__name__, None)
    return result


def _log_not_persisted(phase: str, error_type: str, span: Any) -> None:
    log.warning(
        ("not_persisted", phase, error_type),
        f"session {phase} not persisted: {error_type}",
        span,
        phase=phase,
        error_type=error_type,
    )


def _finish(t: Telemetry, phase: str, span: Any, call: SessionCall, result: Any) -> None:
    """Events, outcome and counters of a finished lifecycle call (``span`` None: not recording)."""
    record, trace_id = t.recorder.record, call.trace_id
    events: list[tuple[str, dict[str, Any]]] = []
    persisted, error = bool(result.persisted), result.error
    created = getattr(result, "snapshot_created", None)
    if created is not None:
        if not created:
            events.append(("autoplay.snapshot.exists", {}))
        record("snapshot_writes", 1, ("created" if created else "duplicate",), trace_id)
    if result.repairs:
        events.append(
            (
                "autoplay.document.repaired",
                {"autoplay.document": "state", "autoplay.repairs": len(result.repairs)},
            )
        )
        record("documents_repaired", 1, ("state",), trace_id)
    if isinstance(error, DocumentError):
        events.append(
            ("autoplay.document.refused", {"autoplay.document": "state", "error.type": type(error).__name__})
        )
        record("documents_refused", 1, ("state",), trace_id)
    truncated = getattr(result, "summary_truncated", 0)
    if truncated:
        events.append(("autoplay.summary.truncated", {"autoplay.truncated_chars": truncated}))
        record("summaries_truncated", 1, (), trace_id)
    trimmed = getattr(result, "trimmed", 0)
    if trimmed:
        events.append(("autoplay.session_index.trimmed", {"autoplay.trimmed": trimmed}))
        record("index_truncations", trimmed, (), trace_id)
    if not persisted:
        outcome = "not_persisted"
        error_type = type(error).__name__
        events.append(("autoplay.state.not_persisted", {"autoplay.phase": phase, "error.type": error_type}))
        record("not_persisted", 1, (phase,), trace_id)
        _log_not_persisted(phase, error_type, span)
    elif error is not None or call.primary_failed:
        outcome = "degraded"
    elif getattr(result, "duplicate", False):
        outcome = "duplicate"
    else:
        outcome = "ok"
    call.close(persisted, error is not None)
    if span is None:
        return
    if phase == "start":
        span.set_attribute("autoplay.session_number", result.state.sessions.count + 1)
    for name, attributes in events:
        span.add_event(name, attributes)
    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
    if not persisted:
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.set_attribute("autoplay.outcome", outcome)
    if t.switches.genai:
        _genai_result(t, phase, span, result)


def _genai_result(t: Telemetry, phase: str, span: Any, result: Any) -> None:
    if phase == "start":
        found = (0 if getattr(result, "degraded", False) else 1) + (result.onboarding_session is not None)
        span.set_attribute("gen_ai.memory.search.result.count", found)
    elif t.switches.capture_content and result.persisted:
        summary = result.state.onboarding.summary
        if isinstance(summary, str):
            span.set_attribute("gen_ai.memory.content", summary)


async def run_summarizer(
    t: Telemetry, fn: Callable[P, Awaitable[tuple[str | None, str | None]]], *args: P.args, **kwargs: P.kwargs
) -> tuple[str | None, str | None]:
    """The summarizer inside its span; duration and failures counted."""
    if t.idle():
        produced = await fn(*args, **kwargs)
        if produced[1] is not None:
            log.warning(
                ("summarizer", produced[1]), f"summarizer failed: {produced[1]}", None, error_type=produced[1]
            )
        return produced
    span = t.tracer.start_span("autoplay.summarizer")
    valid = span.get_span_context().is_valid
    token = otel_context.attach(trace.set_span_in_context(span)) if valid else None
    started = time.perf_counter()
    try:
        produced = await fn(*args, **kwargs)
    except BaseException as exc:
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        span.end()
        raise
    finally:
        if token is not None:
            otel_context.detach(token)
    duration = time.perf_counter() - started
    error_type = produced[1]
    trace_id = trace_id_of(span) if t.recorder.prom is not None else None
    span.set_attribute("autoplay.outcome", "ok" if error_type is None else _failure_outcome(error_type))
    if error_type is not None:
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, error_type))
    span.end()
    t.recorder.record("summarizer_duration", duration, (), trace_id)
    if error_type is not None:
        t.recorder.record("summarizer_failures", 1, (error_type,), trace_id)
        log.warning(
            ("summarizer", error_type), f"summarizer failed: {error_type}", span, error_type=error_type
        )
    return produced


def _failure_outcome(error_type: str) -> str:
    return "timeout" if error_type == "TimeoutError" else "error"


def traced(
    phase: str, names: tuple[str, ...]
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Internal form of ``traced_session``; the current telemetry is looked up per call."""
    from autoplay_obs.telemetry._telemetry import current

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        where = session_parameters(fn, names)

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            t = current()
            if t is None:
                return await fn(*args, **kwargs)
            if t.idle():
                return await run_idle(phase, fn, args, kwargs)
            return await run_session(t, phase, where, fn, args, kwargs)

        return wrapper

    return decorate
