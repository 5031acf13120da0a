"""Records the instrument table into an OpenTelemetry meter and, when on, into Prometheus.

Decisions:
- The meter is ``metrics.get_meter(...)`` (or an injected provider's): with no
  SDK installed yet it hands out the API's proxy instruments, which cost a
  check per record and start forwarding once an application installs a
  provider. So nothing here asks whether an SDK is there.
- Prometheus samples carry ``{"trace_id": ...}`` exemplars from the span of
  the call being measured; the OpenTelemetry SDK takes its own exemplars
  from the current context.
- ``record_attributes`` takes the conventions' optional attributes as a
  mapping: OpenTelemetry gets only those present, Prometheus (fixed label
  sets) gets ``""`` for the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import metrics

from autoplay_obs.telemetry._delivery import observe_deliveries
from autoplay_obs.telemetry._instruments import INSTRUMENTS

__all__ = ["Recorder"]


class Recorder:
    """One meter's instruments (built once) and the Prometheus instruments, if on."""

    __slots__ = ("_attributes", "otel", "prom")

    def __init__(self, meter: metrics.Meter) -> None:
        self.otel: dict[str, tuple[Callable[..., None], tuple[str, ...]]] = {}
        self.prom: Mapping[str, Any] | None = None
        self._attributes: dict[tuple[str, tuple[str, ...]], dict[str, str] | None] = {}
        for key, inst in INSTRUMENTS.items():
            if inst.kind == "observed_counter":
                meter.create_observable_counter(
                    inst.name, callbacks=[observe_deliveries], unit=inst.unit, description=inst.description
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

    def record(
        self, key: str, value: float, labels: tuple[str, ...] = (), trace_id: str | None = None
    ) -> None:
        record, names = self.otel[key]
        try:
            attributes = self._attributes[(key, labels)]
        except KeyError:  # label values are bounded sets: each mapping is built once
            attributes = dict(zip(names, labels, strict=True)) if names else None
            self._attributes[(key, labels)] = attributes
        record(value, attributes)
        prom = self.prom
        if prom is not None:
            _prometheus(prom[key], INSTRUMENTS[key].kind, value, labels, trace_id)

    def record_attributes(
        self, key: str, value: float, attributes: Mapping[str, Any], trace_id: str | None = None
    ) -> None:
        """``attributes`` holds only the instrument's label names (each optional)."""
        record, names = self.otel[key]
        record(value, attributes)
        prom = self.prom
        if prom is not None:
            labels = tuple(str(attributes.get(name, "")) for name in names)
            _prometheus(prom[key], INSTRUMENTS[key].kind, value, labels, trace_id)


def _prometheus(metric: Any, kind: str, value: float, labels: tuple[str, ...], trace_id: str | None) -> None:
    child = metric.labels(*labels) if labels else metric
    exemplar = {"trace_id": trace_id} if trace_id else None
    if kind == "histogram":
        child.observe(value, exemplar)
    else:
        child.inc(value, exemplar)
