"""Traces, metrics and logs for autoplay_obs: the only package that knows OpenTelemetry or Prometheus.

The library depends on ``opentelemetry-api`` only. With no SDK configured its
hooks create no spans and record nothing, so they cost close to nothing;
``configure_telemetry`` (or your own SDK setup) turns them on, and
``autoplay_obs.telemetry.prometheus`` serves the metrics with trace exemplars.
Metric and span names are listed in ``docs/telemetry.md`` and defined once in
``INSTRUMENTS``.

Switches (environment variables; the functions override them):

- ``AUTOPLAY_OBS_TELEMETRY=off`` -- every hook returns at once (``set_enabled``).
- ``AUTOPLAY_OBS_RECORD_USER_ID=omit|hashed|raw`` -- ``autoplay.user_id`` on
  lifecycle spans; ``omit`` by default, ``hashed`` is an HMAC-SHA256 keyed by
  ``AUTOPLAY_OBS_USER_ID_KEY`` (``set_user_id_recording``).
"""

from __future__ import annotations

from autoplay_obs.telemetry._hooks import (
    ENV_RECORD_USER_ID,
    ENV_SWITCH,
    ENV_USER_ID_KEY,
    is_enabled,
    set_enabled,
    set_user_id_recording,
    use_providers,
)
from autoplay_obs.telemetry._instruments import INSTRUMENTS, Instrument
from autoplay_obs.telemetry._setup import TelemetryHandle, configure_telemetry

__all__ = [
    "ENV_RECORD_USER_ID",
    "ENV_SWITCH",
    "ENV_USER_ID_KEY",
    "INSTRUMENTS",
    "Instrument",
    "TelemetryHandle",
    "configure_telemetry",
    "is_enabled",
    "set_enabled",
    "set_user_id_recording",
    "use_providers",
]
