"""One call that sets up telemetry for an application or the demo; never run on import."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from autoplay_obs.errors import MissingDependencyError
from autoplay_obs.telemetry import _telemetry

__all__ = ["TelemetryHandle", "configure_telemetry"]

logger = logging.getLogger("autoplay_obs")


@dataclass
class TelemetryHandle:
    """What ``configure_telemetry`` installed; ``shutdown()`` flushes and stops it."""

    tracer_provider: Any
    meter_provider: Any
    prometheus_server: Any = None
    _installed_globally: bool = field(default=True, repr=False)

    @property
    def prometheus_port(self) -> int | None:
        return None if self.prometheus_server is None else int(self.prometheus_server.server_port)

    def shutdown(self) -> None:
        if self.prometheus_server is not None:
            self.prometheus_server.shutdown()
            self.prometheus_server.server_close()
            self.prometheus_server = None
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def _with_path(endpoint: str, path: str) -> str:
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(path) else endpoint + path


def configure_telemetry(
    service_name: str,
    prometheus_port: int | None = None,
    otlp_endpoint: str | None = None,
    *,
    prometheus_addr: str = "127.0.0.1",
    record_user_id: str | None = None,
    install_globally: bool = True,
    export_timeout: float = 5.0,
) -> TelemetryHandle:
    """Install OpenTelemetry SDK providers, and optionally OTLP export and a Prometheus endpoint.

    - spans: an SDK ``TracerProvider`` with a batch span processor exporting by
      OTLP/HTTP when ``otlp_endpoint`` is given (e.g. ``http://127.0.0.1:4318``);
      without it, spans still get trace ids (for Prometheus exemplars) but go nowhere.
    - metrics: an SDK ``MeterProvider`` exporting by OTLP when ``otlp_endpoint`` is given.
    - Prometheus: ``prometheus_port`` (0 = any free port) serves ``/metrics`` on
      ``prometheus_addr`` from the library's own registry, with trace exemplars.

    ``export_timeout`` bounds each OTLP export, retries included, so an
    unreachable collector delays ``shutdown()`` by seconds, not the SDK's
    default half a minute.

    The providers are installed as the global ones (OpenTelemetry allows that
    once per process) unless ``install_globally=False``, in which case only this
    library uses them.
    """
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        extra = "otlp" if otlp_endpoint and prometheus_port is None else "prometheus"
        raise MissingDependencyError("configure_telemetry", extra) from exc
    if record_user_id is not None:
        _telemetry.set_user_id_recording(record_user_id)
    resource = Resource.create({"service.name": service_name})
    tracer_provider = TracerProvider(resource=resource)
    readers: list[Any] = []
    if otlp_endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        except ImportError as exc:
            raise MissingDependencyError("OTLP export", "otlp") from exc
        tracer_provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=_with_path(otlp_endpoint, "/v1/traces"), timeout=export_timeout)
            )
        )
        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=_with_path(otlp_endpoint, "/v1/metrics"), timeout=export_timeout)
            )
        )
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if install_globally:
        from opentelemetry import metrics, trace

        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        if (
            trace.get_tracer_provider() is not tracer_provider
            or metrics.get_meter_provider() is not meter_provider
        ):
            logger.warning("a global tracer or meter provider was already set; autoplay_obs uses its own")
            _telemetry.use_providers(tracer_provider, meter_provider)
    else:
        _telemetry.use_providers(tracer_provider, meter_provider)
    handle = TelemetryHandle(tracer_provider, meter_provider, _installed_globally=install_globally)
    if prometheus_port is not None:
        from autoplay_obs.telemetry import prometheus

        handle.prometheus_server, _ = prometheus.start_http_server(prometheus_port, prometheus_addr)
    return handle
