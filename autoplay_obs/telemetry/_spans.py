"""The span around one adapter call: opened before it, current while it runs, closed after.

Decisions:
- The span is current while the adapter works, so whatever the adapter (or
  the host's redis-py instrumentation) records is its child.
- What a call is comes from the adapter: ``describe()`` (the server) and
  ``describe_operation(operation)`` (the command it sends, a batch's size);
  nothing here knows Redis. Both are read once per adapter, operation and
  role, and cached with the span name.
- Span names follow the database conventions when the adapter describes a
  database operation: ``db.query.summary`` when given, else
  ``{db.operation.name} {target}`` (target: collection, namespace, or
  ``address:port``). Other adapters (sinks, custom ones) keep
  ``{operation} {adapter}``.
- ``error.type`` on the span is the adapter's own error code when it has one
  (``describe_error``: Redis's ``WRONGTYPE``), else the exception's class;
  metric labels keep the class, a bounded set. A lost compare-and-set is an
  event (``autoplay.state.cas_conflict``), not an error.
- Inside a lifecycle call whose span context is invalid (no tracing SDK at
  all), no adapter span is started: it could only be invalid too.
"""

from __future__ import annotations

import contextlib
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from autoplay_obs.telemetry._calls import current_call, trace_id_of
from autoplay_obs.telemetry._instruments import DB_LABELS
from autoplay_obs.telemetry._log import log, logger

if TYPE_CHECKING:
    from autoplay_obs.telemetry._telemetry import Telemetry

__all__ = ["IDLE_ADAPTER_SPAN", "NULL_ADAPTER_SPAN", "AdapterSpan", "Described", "describe"]

FAILED: Final = frozenset({"error", "timeout", "cancelled"})
_SCALARS: Final = (str, int, float, bool)


class Described(NamedTuple):
    """A span name and start attributes, and the metric attributes when it is a database call."""

    name: str
    attributes: dict[str, Any]
    db: dict[str, Any] | None


def _asked(adapter: object, method: str, *args: Any) -> dict[str, Any]:
    """An adapter's self-description (scalars only); one that fails is ignored."""
    describe = getattr(adapter, method, None)
    if not callable(describe):
        return {}
    try:
        return {k: v for k, v in dict(describe(*args)).items() if isinstance(v, _SCALARS)}
    except Exception:  # an adapter's self-description must never break a call
        return {}


def _span_name(attributes: dict[str, Any], operation: str, adapter: str) -> str:
    summary = attributes.get("db.query.summary")
    if summary:
        return str(summary)
    command = attributes.get("db.operation.name")
    if not command:
        return f"{operation} {adapter}"
    target = attributes.get("db.collection.name") or attributes.get("db.namespace")
    if not target and "server.address" in attributes:
        port = attributes.get("server.port")
        target = f"{attributes['server.address']}:{port}" if port else attributes["server.address"]
    return f"{command} {target}" if target else str(command)


_cache: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], Described]] = weakref.WeakKeyDictionary()


def describe(adapter: object, name: str, role: str, operation: str) -> Described:
    """The span name and attributes of ``operation`` on ``adapter``, cached per adapter."""
    try:
        known = _cache[adapter]
    except KeyError:
        known = _cache[adapter] = {}
    except TypeError:  # not weak-referenceable: described every time
        known = {}
    found = known.get((role, operation))
    if found is not None:
        return found
    attributes: dict[str, Any] = {
        "autoplay.adapter.name": name,
        "autoplay.adapter.role": role,
        "autoplay.operation": operation,
        **_asked(adapter, "describe"),
        **_asked(adapter, "describe_operation", operation),
    }
    db: dict[str, Any] | None = None
    if role == "primary" and "db.system.name" in attributes:
        db = {k: attributes[k] for k in DB_LABELS if k in attributes}
    found = known[(role, operation)] = Described(_span_name(attributes, operation, name), attributes, db)
    return found


def _db_error(adapter: object, exc: BaseException | None) -> str | None:
    """The adapter's own error code for what it raised (``describe_error``), if it has one."""
    describe_error = getattr(adapter, "describe_error", None)
    if exc is None or not callable(describe_error):
        return None
    try:
        code = describe_error(exc)
    except Exception:
        return None
    return code if isinstance(code, str) and code else None


class AdapterSpan:
    """``with telemetry.adapter_call(adapter, name, role, operation) as span: ... span.done(record)``."""

    __slots__ = (
        "_adapter",
        "_call",
        "_found",
        "_name",
        "_operation",
        "_record",
        "_role",
        "_span",
        "_t",
        "_token",
    )

    def __init__(self, t: Telemetry, adapter: object, name: str, role: str, operation: str) -> None:
        self._t, self._adapter, self._name, self._role, self._operation = t, adapter, name, role, operation
        self._span: Any = None
        self._token: object = None
        self._record: Any = None
        self._call: Any = None
        self._found: Described | None = None

    def __enter__(self) -> AdapterSpan:
        call = self._call = current_call()
        if call is None or call.traced:
            found = self._found = describe(self._adapter, self._name, self._role, self._operation)
            span = self._span = self._t.tracer.start_span(
                found.name, kind=SpanKind.CLIENT, attributes=found.attributes
            )
            if span.get_span_context().is_valid:
                self._token = otel_context.attach(trace.set_span_in_context(span))
        return self

    def done(self, record: Any) -> None:
        """The call's ``AdapterCall``; recorded when the ``with`` block ends."""
        self._record = record

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
        try:
            self._finish(exc)
        except Exception:  # telemetry must never replace the storage outcome
            logger.debug("autoplay_obs telemetry hook failed", exc_info=True)

    def _finish(self, exc: BaseException | None) -> None:
        record, span = self._record, self._span
        if record is None:  # left without an outcome: a bug at the call site, not the adapter's
            if span is not None:
                span.end()
            return
        outcome = getattr(record.outcome, "value", record.outcome)
        failed = outcome in FAILED
        error_type = (record.error_type or "_OTHER") if failed else record.error_type
        code = _db_error(self._adapter, exc) if failed else None
        span_error = code or error_type
        if span is not None and span.is_recording():
            span.set_attribute("autoplay.outcome", outcome)
            if outcome == "conflict":
                span.add_event("autoplay.state.cas_conflict")
            if failed:
                span.set_attribute("error.type", span_error)
                if code:
                    span.set_attribute("db.response.status_code", code)
                span.set_status(Status(StatusCode.ERROR, span_error))
        if span is not None:
            span.end()
        t = self._t
        trace_id = None
        if t.recorder.prom is not None:
            trace_id = trace_id_of(span if span is not None else trace.get_current_span())
        name, role, operation = record.adapter, record.role, record.operation
        recorder = t.recorder
        recorder.record("adapter_duration", record.duration_s, (name, role, operation, outcome), trace_id)
        if failed:
            recorder.record("adapter_failures", 1, (name, role, operation, str(error_type)), trace_id)
        if t.switches.db_metrics and role == "primary":
            found = self._found or describe(self._adapter, self._name, role, self._operation)
            db = found.db
            if db is not None:
                attributes = {**db, "error.type": span_error} if failed else db
                recorder.record_attributes("db_operation_duration", record.duration_s, attributes, trace_id)
        call = self._call
        if call is not None:
            call.adapter_done(role, operation, failed)
        if failed:
            log_failure(record, outcome, str(error_type), span)


def log_failure(record: Any, outcome: str, error_type: str, span: Any) -> None:
    name, role, operation = record.adapter, record.role, record.operation
    log.warning(
        ("adapter", name, role, operation, error_type),
        f"{role} {name} {operation} {outcome}: {error_type}",
        span,
        adapter=name,
        role=role,
        operation=operation,
        outcome=outcome,
        error_type=error_type,
    )


class _NullAdapterSpan(contextlib.AbstractContextManager["_NullAdapterSpan"]):
    """Telemetry off: the same shape, doing nothing."""

    __slots__ = ()

    def done(self, record: Any) -> None:
        pass

    def __exit__(self, *exc_info: object) -> None:
        return None


NULL_ADAPTER_SPAN: Final = _NullAdapterSpan()


class _IdleAdapterSpan(_NullAdapterSpan):
    """Nothing to record (no SDK, no Prometheus): only a failure is logged."""

    __slots__ = ()

    def done(self, record: Any) -> None:
        if record.error_type is not None:
            outcome = getattr(record.outcome, "value", record.outcome)
            if outcome in FAILED:
                log_failure(record, outcome, record.error_type, None)


IDLE_ADAPTER_SPAN: Final = _IdleAdapterSpan()
