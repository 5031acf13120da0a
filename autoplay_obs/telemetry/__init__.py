"""Traces, metrics and logs for autoplay_obs: the only package that knows OpenTelemetry or Prometheus.

The library depends on ``opentelemetry-api`` only, and uses its public API
only. With no SDK configured its hooks create no valid spans and record into
the API's proxy instruments, so they cost close to nothing;
``configure_telemetry`` (or your own SDK setup) turns them on, and
``autoplay_obs.telemetry.prometheus`` serves the metrics with trace exemplars.
Metric and span names are listed in ``docs/telemetry.md`` and defined once in
``INSTRUMENTS``.

Switches (environment variables; the functions override them):

- ``AUTOPLAY_OBS_TELEMETRY=off`` -- every hook returns at once (``set_enabled``).
- ``AUTOPLAY_OBS_DB_CLIENT_METRICS=off`` -- no ``db.client.operation.duration``
  (when redis-py 8's own metrics record it).
- ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`` -- GenAI memory
  attributes on the lifecycle spans (experimental); ``AUTOPLAY_OBS_CAPTURE_CONTENT=true``
  adds the onboarding summary to them.
- ``AUTOPLAY_OBS_RECORD_USER_ID=omit|hashed|raw`` -- ``autoplay.user_id`` on
  lifecycle spans; ``omit`` by default, ``hashed`` is an HMAC-SHA256 keyed by
  ``AUTOPLAY_OBS_USER_ID_KEY`` (``set_user_id_recording``).
"""

from __future__ import annotations

from autoplay_obs.telemetry._instruments import INSTRUMENTS, Instrument
from autoplay_obs.telemetry._setup import TelemetryHandle, configure_telemetry
from autoplay_obs.telemetry._switches import (
    ENV_CAPTURE_CONTENT,
    ENV_DB_METRICS,
    ENV_RECORD_USER_ID,
    ENV_SEMCONV_OPT_IN,
    ENV_SWITCH,
    ENV_USER_ID_KEY,
)
from autoplay_obs.telemetry._telemetry import (
    Telemetry,
    current,
    is_enabled,
    set_enabled,
    set_user_id_recording,
    use_providers,
)

__all__ = [
    "ENV_CAPTURE_CONTENT",
    "ENV_DB_METRICS",
    "ENV_RECORD_USER_ID",
    "ENV_SEMCONV_OPT_IN",
    "ENV_SWITCH",
    "ENV_USER_ID_KEY",
    "INSTRUMENTS",
    "Instrument",
    "Telemetry",
    "TelemetryHandle",
    "configure_telemetry",
    "current",
    "is_enabled",
    "set_enabled",
    "set_user_id_recording",
    "use_providers",
]
