"""The ``demo`` command line: flags -> ``DemoConfig``, telemetry on, run, summary, cleanup, linger."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import TextIO

from autoplay_obs import __version__
from autoplay_obs.demo._config import DemoConfig
from autoplay_obs.demo._flags import add_demo_arguments
from autoplay_obs.demo._report import closing_lines, format_summary
from autoplay_obs.demo._scenario import scenario_config
from autoplay_obs.demo._simulation import run_demo
from autoplay_obs.demo._storage import start_telemetry
from autoplay_obs.errors import ConfigurationError

__all__ = ["add_demo_arguments", "build_parser", "config_from_args", "main"]

DESCRIPTION = """\
Simulate a product with many users and sessions going through the real
autoplay_obs lifecycle: session start (returning users get their onboarding
context), in-session progress on workflows and mastery, session end with a
stand-in LLM summarizer (deterministic, no network). By default everything runs
in this process on the embedded in-memory store: nothing to install or start.

At the end it prints a summary: sessions, what was persisted, duplicates,
degraded starts, summarizer failures, conflicts, latencies, and what was
degraded. Point it at real services and break things with the flags below.
"""

EPILOG = """\
examples:
  python -m autoplay_obs demo                                  # seconds, no services
  python -m autoplay_obs demo --sink-error-rate 0.2 --summarizer-failure-rate 0.1 --primary-outage 0.1
  python -m autoplay_obs demo --redis-url redis://127.0.0.1:6379/0 --cleanup
  python -m autoplay_obs demo --prometheus-port 9464 --duration 600 --scenario incident --linger 120
                                   # then scrape http://127.0.0.1:9464/metrics (examples/prometheus.yml):
                                   # every alert in dashboards/alerts.yml fires within the ten minutes
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps ``"autoplay-obs[extra]"`` on one line (the default wraps at its hyphen)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoplay-obs",
        description="Cross-session memory for in-product AI agents, observable to the last write.",
    )
    parser.add_argument("--version", action="version", version=f"autoplay-obs {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="simulate users and sessions through the real lifecycle and print what happened",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
    )
    add_demo_arguments(demo)
    return parser


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """The scenario's faults, then every flag given on top of them."""
    given = {
        name: getattr(args, name)
        for name in ("sink_error_rate", "summarizer_failure_rate", "primary_outage")
        if getattr(args, name) is not None
    }
    return scenario_config(
        args.scenario,
        **given,
        sessions=args.sessions,
        rate=args.rate,
        duration=args.duration,
        users=args.users,
        concurrency=args.concurrency,
        replicas=args.replicas,
        seed=args.seed,
        redis_url=args.redis_url,
        posthog_host=args.posthog_host,
        amplitude_url=args.amplitude_url,
        sink_latency=args.sink_latency,
        summarizer_timeout=args.summarizer_timeout,
        retry_rate=args.retry_rate,
        edge_cases=args.edge_cases,
        prometheus_port=args.prometheus_port,
        otlp_endpoint=args.otlp_endpoint,
        linger=args.linger,
        progress=args.progress,
        cleanup=args.cleanup,
        outbox=args.outbox,
        outbox_path=args.outbox_path,
    )


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Entry point of ``python -m autoplay_obs`` and the ``autoplay-obs`` script; returns the exit code."""
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.verbose:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    else:  # the summary reports every failure; keep the library's (and SDKs') log lines off the bar
        logging.getLogger().addHandler(logging.NullHandler())
    try:
        handle = start_telemetry(config)
    except ConfigurationError as exc:  # MissingDependencyError names the extra
        print(f"autoplay-obs demo: {exc}", file=sys.stderr)
        return 2
    try:
        if handle is not None and handle.prometheus_port is not None:
            print(f"metrics: http://127.0.0.1:{handle.prometheus_port}/metrics", file=out, flush=True)
        try:
            stats = asyncio.run(run_demo(config))
        except ConfigurationError as exc:
            print(f"autoplay-obs demo: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("autoplay-obs demo: interrupted", file=sys.stderr)
            return 130
        out.write(format_summary(config, stats))
        for line in closing_lines(config, stats):
            print(line, file=out)
        out.flush()
        if handle is not None and handle.prometheus_port is not None and config.linger:
            print(
                f"serving http://127.0.0.1:{handle.prometheus_port}/metrics for {config.linger:g} s "
                "(Ctrl-C to stop)",
                file=out,
                flush=True,
            )
            with contextlib.suppress(KeyboardInterrupt):
                time.sleep(config.linger)
        return 0
    finally:
        if handle is not None:
            if config.otlp_endpoint:
                print(
                    f"flushing traces and metrics to {config.otlp_endpoint} (the OpenTelemetry SDK "
                    "retries an unreachable endpoint for up to about 30 s)",
                    file=sys.stderr,
                    flush=True,
                )
            handle.shutdown()
