"""The demo's knobs, one dataclass shared by the command line, the simulation and the tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["DURATION_RATE", "DemoConfig", "Scenario"]

Scenario = Literal["healthy", "incident"]
DURATION_RATE: Final = 25.0
"""Sessions a second a ``--duration`` run starts unless told otherwise: a busy product, and a
pace a laptop (and the embedded store's memory) sustains for hours."""


@dataclass(frozen=True)
class DemoConfig:
    """Everything a demo run needs; the defaults finish in seconds with no services."""

    sessions: int = 1000
    """Sessions to simulate (ignored when ``duration`` is set)."""
    duration: float | None = None
    """Run for this many seconds instead of a fixed number of sessions."""
    rate: float | None = None
    """Sessions started per second at most; None: unlimited with ``sessions``,
    ``DURATION_RATE`` with ``duration``; 0: unlimited."""
    scenario: Scenario = "healthy"
    """``incident`` drives every shipped alert past its threshold (see ``_scenario``)."""
    users: int = 60
    concurrency: int = 16
    replicas: int = 2
    """Agent processes sharing the store, each with its own StorageManager (and cache)."""
    seed: int = 7
    product_id: str | None = None
    """Defaults to ``demo`` in memory, ``demo-<random>`` on Redis (so runs never mix)."""
    redis_url: str | None = None
    posthog_host: str | None = None
    amplitude_url: str | None = None
    sink_error_rate: float = 0.0
    sink_latency: float = 0.0
    summarizer_failure_rate: float = 0.0
    summarizer_timeout: float = 0.5
    primary_outage: float = 0.0
    """Share of the run during which the primary is unreachable (in three windows)."""
    retry_rate: float = 0.03
    """Share of session ends the host sends twice, as after a lost reply."""
    edge_cases: bool = True
    """A user whose full 50-entry session index overflows, a repairable and a newer-version document."""
    prometheus_port: int | None = None
    otlp_endpoint: str | None = None
    linger: float = 0.0
    progress: bool = True
    cleanup: bool = False
    """Delete the keys the run wrote to Redis at the end."""
    outbox: bool = True
    """Queue the session ends the primary did not acknowledge, replay them, lose none (``_outbox``)."""
    outbox_path: str | None = None
    """The outbox file, kept after the run; None: a temporary one, removed at the end."""

    def __post_init__(self) -> None:
        for name in ("sink_error_rate", "summarizer_failure_rate", "retry_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if not 0.0 <= self.primary_outage <= 0.9:
            raise ValueError(f"primary_outage must be between 0 and 0.9, got {self.primary_outage}")
        for name in ("sessions", "users", "concurrency", "replicas"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.duration is not None and self.duration <= 0:
            raise ValueError(f"duration must be positive, got {self.duration}")
        if self.scenario not in ("healthy", "incident"):
            raise ValueError(f"scenario must be healthy or incident, got {self.scenario!r}")
        if self.outbox_path is not None and not self.outbox:
            raise ValueError("an outbox path was given with the outbox off")
        for name in ("sink_latency", "linger", "summarizer_timeout", "rate"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must not be negative")

    @property
    def session_rate(self) -> float | None:
        """The pace to keep, in sessions a second; None: as fast as the store answers."""
        rate = self.rate if self.rate is not None else (DURATION_RATE if self.duration else None)
        return rate or None

    @property
    def sinks_configured(self) -> bool:
        return bool(self.posthog_host or self.amplitude_url)
