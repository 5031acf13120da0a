"""Behaviour across process boundaries, each checked in a fresh interpreter.

- Workers forked after import (gunicorn --preload, Celery prefork) must draw
  their own event keys, or analytics backends deduplicate one worker's events
  against another's.
- configure_telemetry must record into its own providers when the host already
  installed a global meter provider (a global can be set once per process, so
  this runs in its own interpreter).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_forked_workers_draw_distinct_event_keys() -> None:
    out = _python(
        """
        import os
        from autoplay_obs.storage.adapters._analytics import unique_event_key
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(write, " ".join(unique_event_key() for _ in range(3)).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        child = os.read(read, 4096).decode().split()
        parent = [unique_event_key() for _ in range(3)]
        print(len(set(child) | set(parent)))
        """
    )
    assert out.split() == ["6"]


def test_configure_telemetry_uses_its_own_meter_when_the_host_set_one() -> None:
    out = _python(
        """
        import asyncio
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from autoplay_obs.storage import InMemoryStorageAdapter, StorageManager, on_session_start
        from autoplay_obs.telemetry import _telemetry, configure_telemetry

        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
        handle = configure_telemetry("svc")
        asyncio.run(on_session_start("p", "u", "s", StorageManager([InMemoryStorageAdapter()])))
        print(_telemetry.current().meter_provider is handle.meter_provider)
        handle.shutdown()
        """
    )
    assert out.split() == ["True"]
