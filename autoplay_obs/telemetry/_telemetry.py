"""The one telemetry object: switches, a tracer and the instruments; None when switched off.

Decisions:
- Built from the public API only: ``trace.get_tracer`` / ``metrics.get_meter``
  return the API's proxies until an application installs providers, and
  follow them from then on.
- "Is an SDK installed?" (``idle()``) is answered with the public getters:
  while both global providers are still the API's own (its proxy or no-op
  classes, defined in ``opentelemetry.trace`` / ``opentelemetry.metrics``)
  and Prometheus is off, there is nothing to record, and a lifecycle call and
  its adapter calls only keep the rate-limited failure logs. The getters read
  ``os.environ`` while nothing is set (microseconds each), so the answer
  "idle" is kept for ``RECHECK_S``: providers installed after the first
  lifecycle call are seen within that. Global providers are set once only,
  so the first real one ends the checks; injected ones (``use_providers``)
  are live at once. ``benchmarks/telemetry_overhead.py`` measures the idle
  path against telemetry off.
- ``use_providers`` (tests, benchmarks, ``configure_telemetry`` when a host
  already set global providers) swaps in another object built on the given
  providers; ``use_providers()`` returns to the global ones. Switches are
  shared, so a setter applies whichever object is current.
- Switched off (``AUTOPLAY_OBS_TELEMETRY=off`` or ``set_enabled(False)``),
  ``current()`` is None and every hook returns at once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry import metrics, trace

from autoplay_obs import __version__
from autoplay_obs.telemetry._metrics import Recorder
from autoplay_obs.telemetry._switches import Switches

__all__ = [
    "SCOPE",
    "Telemetry",
    "current",
    "is_enabled",
    "set_enabled",
    "set_prometheus",
    "set_user_id_recording",
    "switches",
    "use_providers",
]

SCOPE: Final = "autoplay_obs"
RECHECK_S: Final = 0.5
"""How long "no SDK installed" is believed before the global providers are looked at again."""


class Telemetry:
    """A tracer and a recorder on given providers (default: the global ones), and the switches."""

    __slots__ = (
        "_live",
        "_next_check",
        "meter_provider",
        "recorder",
        "switches",
        "tracer",
        "tracer_provider",
    )

    def __init__(
        self,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        switches: Switches | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.switches = Switches.from_env() if switches is None else switches
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.tracer: trace.Tracer = (
            trace.get_tracer(SCOPE, __version__)
            if tracer_provider is None
            else tracer_provider.get_tracer(SCOPE, __version__)
        )
        if recorder is None:
            meter = (
                metrics.get_meter(SCOPE, __version__)
                if meter_provider is None
                else meter_provider.get_meter(SCOPE, __version__)
            )
            recorder = Recorder(meter)
        self.recorder = recorder
        self._live = tracer_provider is not None or meter_provider is not None
        self._next_check = 0.0

    def idle(self) -> bool:
        """Nothing to record: no SDK provider (the global ones are the API's own) and no Prometheus."""
        if self._live or self.recorder.prom is not None:
            return False
        now = time.monotonic()
        if now < self._next_check:
            return True
        self._next_check = now + RECHECK_S
        if _api_own(trace.get_tracer_provider()) and _api_own(metrics.get_meter_provider()):
            return True
        self._live = True  # a global provider is set once and for all
        return False


def _api_own(provider: object) -> bool:
    """The API's proxy or no-op provider (a class of ``opentelemetry.trace`` / ``.metrics`` itself)."""
    module = type(provider).__module__
    return module in _API_MODULES or module.startswith(_API_PACKAGES)


_API_MODULES: Final = frozenset({"opentelemetry.trace", "opentelemetry.metrics"})
_API_PACKAGES: Final = ("opentelemetry.trace.", "opentelemetry.metrics.")


_global = Telemetry()
_configured = _global
_active: Telemetry | None = _global if _global.switches.enabled else None
_prometheus: Mapping[str, Any] | None = None


def current() -> Telemetry | None:
    """The telemetry in use, or None when switched off."""
    return _active


def switches() -> Switches:
    return _global.switches


def _refresh() -> None:
    global _active
    _configured.recorder.prom = _prometheus
    _active = _configured if _global.switches.enabled else None


def set_enabled(enabled: bool) -> None:
    """Switch every hook on or off (``AUTOPLAY_OBS_TELEMETRY=off`` sets the default)."""
    _global.switches.enabled = bool(enabled)
    _refresh()


def is_enabled() -> bool:
    return _global.switches.enabled


def use_providers(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Use these providers instead of the global ones (tests, benchmarks); no arguments resets."""
    global _configured
    if tracer_provider is None and meter_provider is None:
        _configured = _global
    else:
        _configured = Telemetry(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            switches=_global.switches,
            recorder=_global.recorder if meter_provider is None else None,
        )
    _global.recorder.prom = None
    _refresh()


def set_user_id_recording(mode: str, key: str | bytes | None = None) -> None:
    """Record ``autoplay.user_id`` on lifecycle spans: ``omit`` (default), ``hashed`` or ``raw``.

    ``hashed`` is an HMAC-SHA256 keyed by ``key`` (or ``AUTOPLAY_OBS_USER_ID_KEY``, or a
    random per-process key, which makes hashes comparable within one process only).
    ``raw`` puts personal data in your traces.
    """
    _global.switches.record_user_id(mode, key)


def set_prometheus(instruments: Mapping[str, Any] | None) -> None:
    """Record into these Prometheus instruments too (None: stop)."""
    global _prometheus
    _prometheus = instruments
    _refresh()
