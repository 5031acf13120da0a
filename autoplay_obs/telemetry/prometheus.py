"""Serve this library's metrics to Prometheus, with trace exemplars.

Decisions:
- The OpenTelemetry-to-Prometheus bridge drops exemplars, so samples are
  recorded straight into ``prometheus_client`` instruments, built from the
  same instrument table as the OpenTelemetry ones, with
  ``exemplar={"trace_id": ...}`` from the span of the call being measured.
- The instruments live in a private ``CollectorRegistry`` the library owns,
  never the client's global one, so nothing leaks into a host's own registry
  and a host can still merge it (``registry()``).
- Nothing is recorded into Prometheus until ``enable()`` runs (any of the
  functions below calls it). Exemplars are only exposed in OpenMetrics
  format, which the served endpoints pick when the scraper's ``Accept``
  header asks for it (Prometheus does).
- ``prometheus_client`` is an optional extra, imported here and only here.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from autoplay_obs.errors import MissingDependencyError
from autoplay_obs.telemetry import _telemetry
from autoplay_obs.telemetry._delivery import delivery_counts
from autoplay_obs.telemetry._instruments import INSTRUMENTS

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry

__all__ = ["disable", "enable", "make_asgi_app", "make_wsgi_app", "registry", "start_http_server"]

_lock = threading.Lock()
_registry: CollectorRegistry | None = None
_instruments: dict[str, Any] | None = None


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise MissingDependencyError("Prometheus exposition", "prometheus") from exc
    return prometheus_client


def enable() -> CollectorRegistry:
    """Build the library's registry (once) and start recording into it; returns the registry."""
    global _registry, _instruments
    client = _client()
    with _lock:
        if _registry is None or _instruments is None:
            reg = client.CollectorRegistry(auto_describe=True)
            instruments: dict[str, Any] = {}
            for key, inst in INSTRUMENTS.items():
                if inst.kind == "observed_counter":
                    reg.register(_DeliveryCollector(client, inst))
                elif inst.kind == "histogram":
                    instruments[key] = client.Histogram(
                        inst.prometheus_name,
                        inst.description,
                        inst.prometheus_labels,
                        unit=inst.prometheus_unit,
                        registry=reg,
                        buckets=(*(inst.buckets or ()), float("inf")),
                    )
                else:
                    instruments[key] = client.Counter(
                        inst.prometheus_name, inst.description, inst.prometheus_labels, registry=reg
                    )
            _registry, _instruments = reg, instruments
        _telemetry.set_prometheus(_instruments)
        return _registry


class _DeliveryCollector:
    """Exposes the sinks' delivery ledgers as a counter family, read at scrape time."""

    def __init__(self, client: Any, instrument: Any) -> None:
        self._family = client.metrics_core.CounterMetricFamily
        self._instrument = instrument

    def _empty(self) -> Any:
        inst = self._instrument
        return self._family(inst.prometheus_name, inst.description, labels=inst.prometheus_labels)

    def describe(self) -> list[Any]:
        return [self._empty()]

    def collect(self) -> list[Any]:
        family = self._empty()
        for labels, count in sorted(delivery_counts().items()):
            family.add_metric(labels, count)
        return [family]


def disable() -> None:
    """Stop recording into the registry (what it holds stays, and is still served)."""
    _telemetry.set_prometheus(None)


def registry() -> CollectorRegistry:
    """The library's private registry (enabling it): mount it yourself or merge it into yours."""
    return enable()


def start_http_server(port: int, addr: str = "127.0.0.1") -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` from a daemon thread; ``port=0`` picks a free port (``server.server_port``).

    Binds to loopback by default: expose it wider on purpose (``addr="0.0.0.0"``).
    Stop it with ``server.shutdown(); server.server_close()``.
    """
    reg = enable()
    server, thread = _client().start_http_server(port, addr=addr, registry=reg)
    return server, thread


def make_wsgi_app() -> Any:
    """A WSGI app serving the library's metrics (OpenMetrics when asked for)."""
    return _client().make_wsgi_app(registry=enable())


def make_asgi_app() -> Any:
    """An ASGI app serving the library's metrics (OpenMetrics when asked for)."""
    return _client().make_asgi_app(registry=enable())
