"""Build the demo's adapters, managers and telemetry from its configuration.

Optional dependencies are touched only when their flag is given, so the
default run needs nothing beyond ``pip install -e .``; a missing extra raises
``MissingDependencyError`` naming the flag and the extra to install.
"""

from __future__ import annotations

import contextlib
import importlib.util
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autoplay_obs.demo._config import DemoConfig
from autoplay_obs.demo._faults import FaultySink, FlakyPrimary, OutageSchedule
from autoplay_obs.demo._local_sink import LocalEventSink
from autoplay_obs.demo._outbox import DemoOutbox, open_outbox
from autoplay_obs.errors import ConfigurationError, MissingDependencyError, StorageError
from autoplay_obs.storage import InMemoryStorageAdapter, StorageManager

__all__ = ["DemoStorage", "build_storage", "start_telemetry"]

_DUMMY_KEY = "phc_autoplay_obs_demo"  # the sinks need some API key; the demo's hosts ignore it


@dataclass
class DemoStorage:
    """What the simulation writes through: one manager per agent replica over one store."""

    product_id: str
    primary_label: str
    raw_primary: Any
    """The unwrapped primary of replica 0 (for planting documents and checking counts)."""
    managers: list[StorageManager]
    primaries: list[FlakyPrimary]
    sinks: list[FaultySink]
    schedule: OutageSchedule
    outbox: DemoOutbox | None = None

    @property
    def sink_names(self) -> list[str]:
        return [sink.name for sink in self.sinks]

    async def drain(self) -> None:
        for manager in self.managers:
            await manager.drain()

    async def aclose(self) -> None:
        """Drain every replica, then close each: its replay, adapters and outbox; then remove a
        temporary outbox. The sinks are shared: their ``aclose`` does its work once."""
        await self.drain()
        for manager in self.managers:
            with contextlib.suppress(Exception):
                await manager.aclose()
        if self.outbox is not None:
            self.outbox.remove()


def _sinks(config: DemoConfig) -> list[Any]:
    sinks: list[Any] = []
    if config.posthog_host:
        try:
            from autoplay_obs.storage.adapters.posthog import PostHogStorageAdapter

            sinks.append(
                PostHogStorageAdapter(_DUMMY_KEY, host=config.posthog_host, flush_interval=0.5, max_retries=1)
            )
        except MissingDependencyError as exc:
            raise MissingDependencyError("--posthog-host", exc.extra) from exc
    if config.amplitude_url:
        try:
            from autoplay_obs.storage.adapters.amplitude import AmplitudeStorageAdapter

            sinks.append(
                AmplitudeStorageAdapter(
                    _DUMMY_KEY, server_url=config.amplitude_url, flush_interval=0.5, max_retries=1
                )
            )
        except MissingDependencyError as exc:
            raise MissingDependencyError("--amplitude-url", exc.extra) from exc
    return sinks or [LocalEventSink(failure_rate=config.sink_error_rate, seed=config.seed)]


async def _redis_primaries(config: DemoConfig, product_id: str) -> list[Any]:
    try:
        from autoplay_obs.storage import RedisStorageAdapter

        primaries = [RedisStorageAdapter(redis_url=config.redis_url) for _ in range(config.replicas)]
    except MissingDependencyError as exc:
        raise MissingDependencyError("--redis-url", exc.extra) from exc
    try:
        await primaries[0].load_state(product_id, "demo_probe")
    except StorageError as exc:
        for primary in primaries:
            await primary.aclose()
        raise ConfigurationError(f"cannot reach Redis at {config.redis_url}: {exc}") from exc
    return primaries


async def build_storage(config: DemoConfig, progress: Callable[[], float]) -> DemoStorage:
    """Adapters per the flags, wrapped for fault injection, one manager per replica."""
    if config.redis_url:
        product_id = config.product_id or f"demo-{secrets.token_hex(3)}"
        raw = await _redis_primaries(config, product_id)
        label = f"redis ({config.redis_url})"
    else:
        product_id = config.product_id or "demo"
        shared = InMemoryStorageAdapter()  # replicas are "processes" sharing one store
        raw = [shared] * config.replicas
        label = "memory (embedded)"
    schedule = OutageSchedule(config.primary_outage, progress)
    primaries = [FlakyPrimary(adapter, schedule) for adapter in raw]
    sinks = [
        FaultySink(sink, error_rate=config.sink_error_rate, latency=config.sink_latency, seed=config.seed)
        for sink in _sinks(config)
    ]
    try:
        outbox = await open_outbox(config, len(primaries), in_memory=not config.redis_url)
    except ConfigurationError:
        for primary in primaries if config.redis_url else []:
            await primary.aclose()
        raise
    managers = [
        StorageManager([primary, *sinks], outbox=None if outbox is None else outbox.outboxes[i])
        for i, primary in enumerate(primaries)
    ]
    return DemoStorage(product_id, label, raw[0], managers, primaries, sinks, schedule, outbox)


def start_telemetry(config: DemoConfig) -> Any:
    """``configure_telemetry`` when Prometheus or OTLP is asked for; None otherwise."""
    if config.prometheus_port is None and not config.otlp_endpoint:
        return None
    flag = "--prometheus-port" if config.prometheus_port is not None else "--otlp-endpoint"
    # Checked here so the message names the flag and its extra (configure_telemetry names
    # "prometheus" for a missing SDK even when only OTLP was asked for).
    if config.otlp_endpoint and not _installed("opentelemetry.exporter.otlp.proto.http"):
        raise MissingDependencyError("--otlp-endpoint", "otlp")
    if config.prometheus_port is not None and not _installed("prometheus_client"):
        raise MissingDependencyError("--prometheus-port", "prometheus")
    if not _installed("opentelemetry.sdk"):
        raise MissingDependencyError(flag, "prometheus" if config.prometheus_port is not None else "otlp")
    from autoplay_obs.telemetry import configure_telemetry

    return configure_telemetry(
        "autoplay-obs-demo", prometheus_port=config.prometheus_port, otlp_endpoint=config.otlp_endpoint
    )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False
