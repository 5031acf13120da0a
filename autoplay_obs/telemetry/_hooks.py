"""The hooks the storage manager and the lifecycle call, one line each.

Decisions:
- Spans and instruments come from ``opentelemetry-api`` only. What is live is
  worked out once per provider and cached: while the global tracer provider is
  the API's proxy/no-op default, no span is created at all (even a no-op
  ``start_as_current_span`` costs ~15 us of context attach/detach); while the
  meter provider is a no-op and Prometheus is off, nothing is recorded. The
  cache is rebuilt when ``get_tracer_provider()`` / ``get_meter_provider()``
  return another object, when tests inject providers, or when Prometheus is
  switched on.
- ``AUTOPLAY_OBS_TELEMETRY=off`` (or ``set_enabled(False)``) turns every hook
  into a return; there is no branching at call sites (lifecycle functions are
  wrapped by a decorator; the manager reports each finished ``AdapterCall``).
- Adapter spans are made after the call from its ``AdapterCall`` record, with
  explicit start and end times: a child of the lifecycle span, no context
  switch on the hot path. Sink calls run in background tasks that copied the
  lifecycle context, so they are children of the lifecycle span even when
  they finish after it.
- Privacy: no document bodies and no exception messages (they can hold keys
  and ids) in spans or logs, only error types. The user id is omitted unless
  ``AUTOPLAY_OBS_RECORD_USER_ID`` is ``hashed`` (HMAC-SHA256 with
  ``AUTOPLAY_OBS_USER_ID_KEY``, or a random per-process key) or ``raw``.
- Logs go to the ``autoplay_obs`` logger with ``trace_id`` / ``span_id`` (and
  the labels) as record fields, at WARNING, at most once per kind of failure
  every ``LOG_INTERVAL_S`` seconds, with the number suppressed meanwhile: a
  dead Redis on the hot path gives one line per interval, not one per call.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Final, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

try:  # where the API keeps the global meter provider; read for a cheap "did it change?"
    from opentelemetry.metrics import _internal as _metrics_api
except ImportError:  # pragma: no cover - a future API: fall back to the public getters
    _metrics_api = None  # type: ignore[assignment]

from autoplay_obs import __version__
from autoplay_obs.errors import ConfigurationError, DocumentError
from autoplay_obs.telemetry._instruments import INSTRUMENTS

__all__ = [
    "ENV_RECORD_USER_ID",
    "ENV_SWITCH",
    "ENV_USER_ID_KEY",
    "LOG_INTERVAL_S",
    "adapter_call",
    "cas_retry",
    "document_refused",
    "document_repaired",
    "is_enabled",
    "set_enabled",
    "set_user_id_recording",
    "sinks_started",
    "traced_session",
    "traced_summarizer",
    "use_providers",
]

ENV_SWITCH: Final = "AUTOPLAY_OBS_TELEMETRY"
ENV_RECORD_USER_ID: Final = "AUTOPLAY_OBS_RECORD_USER_ID"
ENV_USER_ID_KEY: Final = "AUTOPLAY_OBS_USER_ID_KEY"
LOG_INTERVAL_S: Final = 10.0
SCOPE: Final = "autoplay_obs"
_OFF_VALUES: Final = frozenset({"off", "0", "false", "no", "disabled"})
_USER_ID_MODES: Final = ("omit", "hashed", "raw")
_FAILED: Final = frozenset({"error", "timeout", "cancelled"})
_SINK_WRITES: Final = frozenset({"save_user_state", "save_session_snapshot"})
# The Redis command each manager operation sends (RedisStorageAdapter), for db.operation.name.
_REDIS_COMMANDS: Final = {
    "load_state": "GET",
    "load_snapshot": "GET",
    "get_user_state": "GET",
    "get_session_snapshot": "GET",
    "create_snapshot": "SET",
    "save_user_state": "SET",
    "save_session_snapshot": "SET",
    "swap_state": "EVALSHA",
    "freeze_and_swap": "PIPELINE",
}

logger = logging.getLogger("autoplay_obs")
_UNKNOWN: Final = object()
R = TypeVar("R")
P = ParamSpec("P")


# ---------------------------------------------------------------------------- null objects


class _NullSpan:
    """Stands in for a span when tracing is off, so hook code never branches on it."""

    __slots__ = ()

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        pass

    def set_status(self, status: Any, description: str | None = None) -> None:
        pass

    def end(self, end_time: int | None = None) -> None:
        pass

    def get_span_context(self) -> trace.SpanContext:
        return trace.INVALID_SPAN_CONTEXT


NULL_SPAN: Final = _NullSpan()


# ---------------------------------------------------------------------------- live state


class _Recorder:
    """Records one instrument-table entry into the OTel meter and/or Prometheus."""

    __slots__ = ("otel", "prom")

    def __init__(self, meter: metrics.Meter | None, prom: Mapping[str, Any] | None) -> None:
        self.otel: dict[str, tuple[Callable[..., None], tuple[str, ...]]] | None = None
        if meter is not None:
            self.otel = {}
            for key, inst in INSTRUMENTS.items():
                if inst.kind == "observed_counter":
                    meter.create_observable_counter(
                        inst.name,
                        callbacks=[_observe_deliveries],
                        unit=inst.unit,
                        description=inst.description,
                    )
                elif inst.kind == "histogram":
                    hist = meter.create_histogram(
                        inst.name,
                        unit=inst.unit,
                        description=inst.description,
                        explicit_bucket_boundaries_advisory=list(inst.buckets or ()),
                    )
                    self.otel[key] = (hist.record, inst.labels)
                else:
                    counter = meter.create_counter(inst.name, unit=inst.unit, description=inst.description)
                    self.otel[key] = (counter.add, inst.labels)
        self.prom = prom

    def record(
        self, key: str, value: float, labels: tuple[str, ...] = (), trace_id: str | None = None
    ) -> None:
        if self.otel is not None:
            record, names = self.otel[key]
            record(value, dict(zip(names, labels, strict=True)) if names else None)
        if self.prom is not None:
            metric = self.prom[key]
            child = metric.labels(*labels) if labels else metric
            exemplar = {"trace_id": trace_id} if trace_id else None
            if INSTRUMENTS[key].kind == "histogram":
                child.observe(value, exemplar)
            else:
                child.inc(value, exemplar)


class _Live:
    """What is switched on for the current providers; rebuilt when one changes."""

    __slots__ = (
        "idle",
        "meter_provider",
        "meter_slot",
        "prom",
        "recorder",
        "tracer",
        "tracer_provider",
        "tracer_slot",
    )

    def __init__(self, tracer_provider: Any, meter_provider: Any, prom: Mapping[str, Any] | None) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.prom = prom
        self.tracer: trace.Tracer | None = (
            None
            if _is_noop_tracer_provider(tracer_provider)
            else tracer_provider.get_tracer(SCOPE, __version__)
        )
        meter = (
            None if _is_noop_meter_provider(meter_provider) else meter_provider.get_meter(SCOPE, __version__)
        )
        self.recorder = _Recorder(meter, prom) if meter is not None or prom is not None else None
        self.idle = self.tracer is None and self.recorder is None
        self.tracer_slot: Any = _UNKNOWN
        self.meter_slot: Any = _UNKNOWN


def _is_noop_tracer_provider(provider: Any) -> bool:
    return isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def _is_noop_meter_provider(provider: Any) -> bool:
    try:
        from opentelemetry.metrics._internal import _ProxyMeterProvider
    except ImportError:  # pragma: no cover - a future API that moved it
        return isinstance(provider, metrics.NoOpMeterProvider)
    return isinstance(provider, (_ProxyMeterProvider, metrics.NoOpMeterProvider))


class _State:
    __slots__ = (
        "enabled",
        "live",
        "lock",
        "meter_override",
        "prom",
        "tracer_override",
        "user_id_key",
        "user_id_mode",
    )

    def __init__(self) -> None:
        self.enabled = os.environ.get(ENV_SWITCH, "on").strip().lower() not in _OFF_VALUES
        self.tracer_override: Any = None
        self.meter_override: Any = None
        self.prom: Mapping[str, Any] | None = None
        self.live: _Live | None = None
        self.lock = threading.Lock()
        self.user_id_mode = "omit"
        self.user_id_key = b""
        mode = os.environ.get(ENV_RECORD_USER_ID, "omit").strip().lower() or "omit"
        key = os.environ.get(ENV_USER_ID_KEY)
        set_user_id_recording(mode if mode in _USER_ID_MODES else "omit", key, state=self)


_S: _State


def _live() -> _Live | None:
    """The cached live state, or None when telemetry is switched off.

    The fast path compares the API's global provider slots by identity (two
    attribute reads); ``get_tracer_provider()`` / ``get_meter_provider()``
    themselves consult ``os.environ`` on every call while no SDK is set, which
    costs more than the rest of a hook.
    """
    s = _S
    if not s.enabled:
        return None
    live = s.live
    if (
        live is not None
        and live.prom is s.prom
        and getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is live.tracer_slot
        and getattr(_metrics_api, "_METER_PROVIDER", _UNKNOWN) is live.meter_slot
        and live.tracer_slot is not _UNKNOWN
    ):
        return live
    return _rebuild()


def _rebuild() -> _Live:
    s = _S
    tp = s.tracer_override or trace.get_tracer_provider()
    mp = s.meter_override or metrics.get_meter_provider()
    with s.lock:
        live = s.live
        if (
            live is None
            or live.tracer_provider is not tp
            or live.meter_provider is not mp
            or live.prom is not s.prom
        ):
            live = _Live(tp, mp, s.prom)
        # Read after the public getters, which may have loaded a provider named by OTEL_PYTHON_*_PROVIDER.
        live.tracer_slot = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
        live.meter_slot = getattr(_metrics_api, "_METER_PROVIDER", _UNKNOWN)
        s.live = live
    return live


def set_enabled(enabled: bool) -> None:
    """Switch every hook on or off (``AUTOPLAY_OBS_TELEMETRY=off`` sets the default)."""
    _S.enabled = bool(enabled)


def is_enabled() -> bool:
    return _S.enabled


def use_providers(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Use these providers instead of the global ones (tests, benchmarks); no arguments resets."""
    _S.tracer_override = tracer_provider
    _S.meter_override = meter_provider
    _S.live = None


def set_user_id_recording(mode: str, key: str | bytes | None = None, *, state: _State | None = None) -> None:
    """Record ``autoplay.user_id`` on lifecycle spans: ``omit`` (default), ``hashed`` or ``raw``.

    ``hashed`` is an HMAC-SHA256 keyed by ``key`` (or ``AUTOPLAY_OBS_USER_ID_KEY``, or a
    random per-process key, which makes hashes comparable within one process only).
    ``raw`` puts personal data in your traces.
    """
    if mode not in _USER_ID_MODES:
        raise ConfigurationError(f"user id recording must be one of {_USER_ID_MODES}, got {mode!r}")
    state = state or _S
    if key is None:
        key = os.environ.get(ENV_USER_ID_KEY) or secrets.token_bytes(32)
    state.user_id_key = key.encode() if isinstance(key, str) else key
    state.user_id_mode = mode


def _user_id_attribute(user_id: Any) -> str | None:
    mode = _S.user_id_mode
    if mode == "omit" or not isinstance(user_id, str):
        return None
    if mode == "raw":
        return user_id
    return hmac.new(_S.user_id_key, user_id.encode(), hashlib.sha256).hexdigest()


def _set_prometheus(instruments: Mapping[str, Any] | None) -> None:
    _S.prom = instruments


_S = _State()


# ---------------------------------------------------------------------------- logs


class _RateLimitedLog:
    """At most one WARNING per key per interval; the next one says how many were held back."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._last: dict[tuple[str, ...], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def warning(self, key: tuple[str, ...], message: str, span: Any = None, **fields: Any) -> None:
        if not logger.isEnabledFor(logging.WARNING):
            return
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last.get(key, (float("-inf"), 0))
            if now - last < self.interval_s:
                self._last[key] = (last, suppressed + 1)
                return
            self._last[key] = (now, 0)
        ctx = (span if span is not None else trace.get_current_span()).get_span_context()
        fields["trace_id"] = format(ctx.trace_id, "032x") if ctx.is_valid else None
        fields["span_id"] = format(ctx.span_id, "016x") if ctx.is_valid else None
        fields["suppressed"] = suppressed
        tail = f" ({suppressed} similar suppressed)" if suppressed else ""
        logger.warning("%s%s", message, tail, extra=fields)

    def reset(self) -> None:
        with self._lock:
            self._last.clear()


log = _RateLimitedLog()


# ---------------------------------------------------------------------------- per lifecycle call


class _SessionCall:
    """Outcome of one lifecycle call's writes; the fan-out result is counted when the sinks are done."""

    __slots__ = (
        "closed",
        "emitted",
        "failed",
        "pending",
        "persisted",
        "primary_failed",
        "recorder",
        "trace_id",
    )

    def __init__(self, recorder: _Recorder | None) -> None:
        self.recorder = recorder
        self.pending = 0
        self.closed = self.emitted = self.failed = self.primary_failed = False
        self.persisted = True
        self.trace_id: str | None = None

    def adapter_done(self, role: str, operation: str, failed: bool) -> None:
        if failed:
            self.failed = True
            if role == "primary":
                self.primary_failed = True
        if role == "sink" and operation in _SINK_WRITES and self.pending > 0:
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
        if self.emitted or self.recorder is None:
            return
        self.emitted = True
        result = "primary_failed" if not self.persisted else "degraded" if self.failed else "all_ok"
        self.recorder.record("fanout_results", 1, (result,), self.trace_id)


_call: contextvars.ContextVar[_SessionCall | None] = contextvars.ContextVar("autoplay_obs_call", default=None)
_describe_cache: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _trace_id(span: Any) -> str | None:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def _describe(adapter: Any) -> dict[str, Any]:
    try:
        return _describe_cache[adapter]
    except (KeyError, TypeError):
        pass
    attributes: dict[str, Any] = {}
    describe = getattr(adapter, "describe", None)
    if callable(describe):
        try:
            described = describe()
            attributes = {k: v for k, v in dict(described).items() if isinstance(v, (str, int, float, bool))}
        except Exception:  # an adapter's self-description must never break a call
            attributes = {}
    with contextlib.suppress(TypeError):  # not weak-referenceable: described every time
        _describe_cache[adapter] = attributes
    return attributes


# ---------------------------------------------------------------------------- manager hooks


def adapter_call(adapter: Any, record: Any) -> None:
    """One finished adapter call (an ``AdapterCall``): span, metrics, rate-limited log.

    Called from the manager's ``finally`` block, so it never raises.
    """
    live = _live()
    if live is None or (live.idle and record.error_type is None):  # nothing to record or log
        return
    try:
        _adapter_call(live, adapter, record)
    except Exception:  # telemetry must never replace the storage outcome
        logger.debug("autoplay_obs telemetry hook failed", exc_info=True)


def _adapter_call(live: _Live, adapter: Any, record: Any) -> None:
    outcome = getattr(record.outcome, "value", record.outcome)
    failed = outcome in _FAILED
    error_type = (record.error_type or "_OTHER") if failed else record.error_type
    name, role, operation = record.adapter, record.role, record.operation
    span: Any = None
    if not live.idle:
        trace_id = None
        if live.tracer is not None:
            end = time.time_ns()
            attributes = {
                "autoplay.adapter.name": name,
                "autoplay.adapter.role": role,
                "autoplay.operation": operation,
                "autoplay.outcome": outcome,
                **_describe(adapter),
            }
            if attributes.get("db.system.name") == "redis" and operation in _REDIS_COMMANDS:
                attributes["db.operation.name"] = _REDIS_COMMANDS[operation]
            if error_type:
                attributes["error.type"] = error_type
            span = live.tracer.start_span(
                f"{operation} {name}",
                kind=SpanKind.CLIENT,
                attributes=attributes,
                start_time=end - int(record.duration_s * 1e9),
            )
            if failed:
                span.set_status(Status(StatusCode.ERROR, error_type))
            span.end(end_time=end)
            if live.prom is not None:
                trace_id = _trace_id(span)
        elif live.prom is not None:
            trace_id = _trace_id(trace.get_current_span())
        recorder = live.recorder
        if recorder is not None:
            recorder.record("adapter_duration", record.duration_s, (name, role, operation, outcome), trace_id)
            if failed:
                recorder.record("adapter_failures", 1, (name, role, operation, str(error_type)), trace_id)
        call = _call.get()
        if call is not None:
            call.adapter_done(role, operation, failed)
    if failed:
        log.warning(
            ("adapter", name, role, operation, str(error_type)),
            f"{role} {name} {operation} {outcome}: {error_type}",
            span,
            adapter=name,
            role=role,
            operation=operation,
            outcome=outcome,
            error_type=error_type,
        )


def sinks_started(count: int) -> None:
    """The manager started ``count`` background sink writes for the current lifecycle call."""
    call = _call.get()
    if call is not None:
        call.pending += count


def cas_retry(attempt: int, expected: str | None, current: str | None) -> None:
    """A compare-and-set on the user state lost to a concurrent writer; it is retried."""
    live = _live()
    if live is None or live.idle:
        return
    span = trace.get_current_span()
    span.add_event(
        "autoplay.state.cas_retry",
        {
            "autoplay.attempt": attempt,
            "autoplay.revision.expected": expected or "",
            "autoplay.revision.current": current or "",
        },
    )
    if live.recorder is not None:
        live.recorder.record("cas_conflicts", 1, (), _trace_id(span) if live.prom is not None else None)


def document_repaired(document: str, repairs: int) -> None:
    """A stored document was read with ``repairs`` repairs (counts, never the bodies)."""
    live = _live()
    if repairs <= 0 or live is None or live.idle:
        return
    span = trace.get_current_span()
    span.add_event("autoplay.document.repaired", {"autoplay.document": document, "autoplay.repairs": repairs})
    if live.recorder is not None:
        live.recorder.record("documents_repaired", 1, (document,), _trace_id(span) if live.prom else None)


def document_refused(document: str, error: BaseException) -> None:
    """A stored document could not be used (counted only for ``DocumentError``); it was left alone."""
    live = _live()
    if not isinstance(error, DocumentError) or live is None or live.idle:
        return
    span = trace.get_current_span()
    span.add_event(
        "autoplay.document.refused", {"autoplay.document": document, "error.type": type(error).__name__}
    )
    if live.recorder is not None:
        live.recorder.record("documents_refused", 1, (document,), _trace_id(span) if live.prom else None)


# ---------------------------------------------------------------------------- lifecycle decorators


def _session_arguments(
    phase: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, Any, Any, Any]:
    product_id = args[0] if args else kwargs.get("product_id")
    user_id = args[1] if len(args) > 1 else kwargs.get("user_id")
    if phase == "start":
        session_id = args[2] if len(args) > 2 else kwargs.get("session_id")
        return product_id, user_id, session_id, None
    snapshot = args[2] if len(args) > 2 else kwargs.get("session_snapshot")
    return (
        product_id,
        user_id,
        getattr(snapshot, "session_id", None),
        getattr(snapshot, "session_number", None),
    )


@contextlib.contextmanager
def _current_span(live: _Live, name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """A span (a null one without a tracer) current for the body; ended here only if it raises.

    On success the caller ends it, after recording the outcome on it.
    """
    if live.tracer is None:
        yield NULL_SPAN
        return
    span = live.tracer.start_span(name, attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    except BaseException as exc:
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        span.end()
        raise
    finally:
        otel_context.detach(token)


def traced_session(phase: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Wrap ``start_session`` (phase ``start``) or ``end_session`` (``end``) in a span and metrics."""
    span_name = f"autoplay.session.{phase}"

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            live = _live()
            if live is None:
                return await fn(*args, **kwargs)
            if live.idle:
                result = await fn(*args, **kwargs)
                if not getattr(result, "persisted", True):
                    _log_not_persisted(phase, result, None)
                return result
            product_id, user_id, session_id, session_number = _session_arguments(phase, args, kwargs)
            attributes: dict[str, Any] = {}
            if live.tracer is not None:
                if isinstance(product_id, str):
                    attributes["autoplay.product_id"] = product_id
                if isinstance(session_id, str):
                    attributes["autoplay.session_id"] = session_id
                if isinstance(session_number, int):
                    attributes["autoplay.session_number"] = session_number
                hidden = _user_id_attribute(user_id)
                if hidden is not None:
                    attributes["autoplay.user_id"] = hidden
            call = _SessionCall(live.recorder)
            with _current_span(live, span_name, attributes) as span:
                if live.prom is not None:
                    call.trace_id = _trace_id(span) or _trace_id(trace.get_current_span())
                call_token = _call.set(call)
                try:
                    result = await fn(*args, **kwargs)
                finally:
                    _call.reset(call_token)
            try:
                _finish_session(phase, span, call, result, live.recorder)
            except Exception:  # telemetry must never replace the lifecycle result
                logger.debug("autoplay_obs telemetry hook failed", exc_info=True)
            return result

        return wrapper

    return decorate


def _finish_session(
    phase: str, span: Any, call: _SessionCall, result: Any, recorder: _Recorder | None
) -> None:
    trace_id = call.trace_id
    persisted = bool(result.persisted)
    error = result.error
    degraded = error is not None
    if phase == "start":
        state = getattr(result, "state", None)
        sessions = getattr(state, "sessions", None)
        if sessions is not None:
            span.set_attribute("autoplay.session_number", sessions.count + 1)
    created = getattr(result, "snapshot_created", None)
    if created is not None:
        if not created:
            span.add_event("autoplay.snapshot.exists")
        if recorder is not None:
            recorder.record("snapshot_writes", 1, ("created" if created else "duplicate",), trace_id)
    state_repairs = len(result.repairs)
    if state_repairs:
        span.add_event(
            "autoplay.document.repaired", {"autoplay.document": "state", "autoplay.repairs": state_repairs}
        )
        if recorder is not None:
            recorder.record("documents_repaired", 1, ("state",), trace_id)
    if isinstance(error, DocumentError):
        span.add_event(
            "autoplay.document.refused", {"autoplay.document": "state", "error.type": type(error).__name__}
        )
        if recorder is not None:
            recorder.record("documents_refused", 1, ("state",), trace_id)
    truncated = getattr(result, "summary_truncated", 0)
    if truncated:
        span.add_event("autoplay.summary.truncated", {"autoplay.truncated_chars": truncated})
        if recorder is not None:
            recorder.record("summaries_truncated", 1, (), trace_id)
    trimmed = getattr(result, "trimmed", 0)
    if trimmed:
        span.add_event("autoplay.session_index.trimmed", {"autoplay.trimmed": trimmed})
        if recorder is not None:
            recorder.record("index_truncations", trimmed, (), trace_id)
    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
    if not persisted:
        outcome = "not_persisted"
        span.add_event(
            "autoplay.state.not_persisted", {"autoplay.phase": phase, "error.type": type(error).__name__}
        )
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        if recorder is not None:
            recorder.record("not_persisted", 1, (phase,), trace_id)
        _log_not_persisted(phase, result, span)
    elif degraded or call.primary_failed:
        outcome = "degraded"
    elif getattr(result, "duplicate", False):
        outcome = "duplicate"
    else:
        outcome = "ok"
    span.set_attribute("autoplay.outcome", outcome)
    span.end()
    call.close(persisted, degraded)


def _log_not_persisted(phase: str, result: Any, span: Any) -> None:
    error_type = type(result.error).__name__
    log.warning(
        ("not_persisted", phase, error_type),
        f"session {phase} not persisted: {error_type}",
        span,
        phase=phase,
        error_type=error_type,
    )


def traced_summarizer(
    fn: Callable[P, Awaitable[tuple[str | None, str | None]]],
) -> Callable[P, Awaitable[tuple[str | None, str | None]]]:
    """Wrap the lifecycle's ``_summarize`` (returns ``(summary, error_type)``): span, duration, failures."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> tuple[str | None, str | None]:
        live = _live()
        if live is None:
            return await fn(*args, **kwargs)
        if live.idle:
            produced = await fn(*args, **kwargs)
            if produced[1] is not None:
                _log_summarizer(produced[1], None)
            return produced
        started = time.perf_counter()
        with _current_span(live, "autoplay.summarizer") as span:
            produced = await fn(*args, **kwargs)
        duration = time.perf_counter() - started
        error_type = produced[1]
        trace_id = _trace_id(span) if live.prom is not None else None
        span.set_attribute("autoplay.outcome", "ok" if error_type is None else _failure_outcome(error_type))
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            span.set_status(Status(StatusCode.ERROR, error_type))
        span.end()
        if live.recorder is not None:
            live.recorder.record("summarizer_duration", duration, (), trace_id)
            if error_type is not None:
                live.recorder.record("summarizer_failures", 1, (error_type,), trace_id)
        if error_type is not None:
            _log_summarizer(error_type, span)
        return produced

    return wrapper


def _failure_outcome(error_type: str) -> str:
    return "timeout" if error_type == "TimeoutError" else "error"


def _log_summarizer(error_type: str, span: Any) -> None:
    log.warning(("summarizer", error_type), f"summarizer failed: {error_type}", span, error_type=error_type)


# ---------------------------------------------------------------------------- sink delivery

_ledgers: weakref.WeakSet[Any] = weakref.WeakSet()
_retired: Counter[tuple[str, str, str]] = Counter()
"""Totals of ledgers already garbage-collected: kept, so the counter never goes backwards."""
_retired_lock = threading.Lock()


def register_delivery_ledger(ledger: Any) -> None:
    """A sink's delivery ledger (``.sink``, ``.snapshot()``, ``.counts``), read at every collection."""
    _ledgers.add(ledger)
    weakref.finalize(ledger, _retire, ledger.sink, ledger.counts)
    _live()  # make sure the observing instrument exists on the current meter


def _retire(sink: str, counts: Mapping[tuple[str, str], int]) -> None:
    with _retired_lock:
        for (outcome, reason), count in counts.items():
            _retired[(sink, outcome, reason)] += count


def delivery_counts() -> dict[tuple[str, str, str], int]:
    """Running totals per (sink, outcome, reason) over every live ledger; in-flight is derived."""
    with _retired_lock:
        totals: Counter[tuple[str, str, str]] = Counter(_retired)
    for ledger in list(_ledgers):
        for (outcome, reason), count in ledger.snapshot().items():
            if outcome != "in_flight":
                totals[(ledger.sink, outcome, reason)] += count
    return dict(totals)


def _observe_deliveries(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    for (sink, outcome, reason), count in delivery_counts().items():
        yield metrics.Observation(count, {"sink": sink, "outcome": outcome, "reason": reason})
