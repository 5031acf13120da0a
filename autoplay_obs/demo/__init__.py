"""``python -m autoplay_obs demo``: a product full of users, run through the real lifecycle.

The demo is a short, real program over the public API: simulated users start
sessions, make progress on workflows, gain mastery, end sessions through a
deterministic stand-in for an LLM summarizer, and come back to get their
onboarding context. It runs on the embedded in-memory store with nothing to
set up; flags point it at Redis, the analytics sinks, Prometheus or an OTLP
collector, and inject faults so that every degraded path (and every
dashboard panel) has something to show.

One concern per module: ``_config`` (the knobs), ``_scenario`` (healthy and
incident), ``_faults`` (wrappers that break things on purpose),
``_summarizer`` (the stand-in LLM), ``_local_sink`` (the built-in analytics
sink), ``_storage`` (building adapters and telemetry from the flags),
``_simulation`` (users and sessions), ``_activity`` (what a session does),
``_edge_cases`` (planted documents, the final read-back), ``_stats`` (what
happened, streamed), ``_cleanup`` (the keys left in Redis), ``_progress`` and
``_report`` (what the operator sees), ``_flags`` and ``_cli`` (the command
line).
"""

from __future__ import annotations

from autoplay_obs.demo._cli import build_parser, main
from autoplay_obs.demo._config import DemoConfig
from autoplay_obs.demo._simulation import run_demo
from autoplay_obs.demo._stats import DemoStats

__all__ = ["DemoConfig", "DemoStats", "build_parser", "main", "run_demo"]
