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
from autoplay_obs.demo._config import DURATION_RATE, DemoConfig
from autoplay_obs.demo._report import closing_lines, format_summary
from autoplay_obs.demo._scenario import SCENARIO_FAULTS, scenario_config
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


def _outage(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 0.9:
        raise argparse.ArgumentTypeError(f"must be between 0 and 0.9, got {text}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _per_second(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    d = DemoConfig()
    size = parser.add_argument_group("size of the run")
    size.add_argument(
        "--sessions",
        type=_positive_int,
        default=d.sessions,
        metavar="N",
        help=f"number of sessions to simulate (default {d.sessions})",
    )
    size.add_argument(
        "--duration",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="run for this long instead of a fixed number of sessions",
    )
    size.add_argument(
        "--rate",
        type=_per_second,
        default=None,
        metavar="PER_SECOND",
        help="start at most this many sessions a second; 0 = as fast as the store answers "
        f"(default: unlimited with --sessions, {DURATION_RATE:g} with --duration)",
    )
    size.add_argument(
        "--scenario",
        choices=("healthy", "incident"),
        default="healthy",
        help="healthy (the default): no faults, no shipped alert fires. incident: sink writes and "
        "the summarizer fail, the primary flaps, a stored document comes from a newer version -- "
        "each alert in dashboards/alerts.yml goes past its threshold for the whole run and fires "
        "once its 'for:' has passed (run it with --duration 600). The fault flags below override it",
    )
    size.add_argument(
        "--users",
        type=_positive_int,
        default=d.users,
        metavar="N",
        help=f"number of users; a few are heavy users, most come back rarely (default {d.users})",
    )
    size.add_argument(
        "--concurrency",
        type=_positive_int,
        default=d.concurrency,
        metavar="N",
        help=f"sessions in progress at once (default {d.concurrency})",
    )
    size.add_argument(
        "--replicas",
        type=_positive_int,
        default=d.replicas,
        metavar="N",
        help="agent processes sharing the store; >1 gives real compare-and-set conflicts "
        f"(default {d.replicas})",
    )
    size.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help=f"random seed: the same seed gives the same mix of users, activity, faults (default {d.seed})",
    )
    size.add_argument(
        "--no-edge-cases",
        dest="edge_cases",
        action="store_false",
        help="skip the planted edge cases: a long-time user whose 50-entry session index overflows, "
        "a repairable document, a document from a newer version (never overwritten)",
    )
    size.add_argument(
        "--retry-rate",
        type=_rate,
        default=d.retry_rate,
        metavar="RATE",
        help=f"share of session ends sent twice, as after a lost reply (default {d.retry_rate})",
    )

    where = parser.add_argument_group("where the data goes (default: in memory, nothing to set up)")
    where.add_argument(
        "--redis-url",
        metavar="URL",
        help="use a real Redis as the primary, e.g. redis://127.0.0.1:6379/0 "
        '(needs: pip install "autoplay-obs[redis]"); keys go under a fresh product id',
    )
    where.add_argument(
        "--posthog-host",
        metavar="URL",
        help="mirror to PostHog at this host, e.g. a local test server (dummy API key; "
        'needs: pip install "autoplay-obs[analytics]")',
    )
    where.add_argument(
        "--amplitude-url",
        metavar="URL",
        help="mirror to Amplitude at this server URL (dummy API key; needs the analytics extra). "
        "Without either, a built-in in-memory sink stands in",
    )

    faults = parser.add_argument_group("fault injection")
    faults.add_argument(
        "--sink-error-rate",
        type=_rate,
        default=None,
        metavar="RATE",
        help="share of sink writes that fail (0..1); sessions must still be saved. The built-in "
        "sink also fails that share of the events it took, as a rejecting endpoint would "
        f"(default 0; incident {SCENARIO_FAULTS['incident']['sink_error_rate']:g})",
    )
    faults.add_argument(
        "--sink-latency",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="delay added to every sink write; session latency must not change",
    )
    faults.add_argument(
        "--summarizer-failure-rate",
        type=_rate,
        default=None,
        metavar="RATE",
        help="share of summarizer calls that fail (rate limited, provider error, timeout) "
        f"(default 0; incident {SCENARIO_FAULTS['incident']['summarizer_failure_rate']:g})",
    )
    faults.add_argument(
        "--summarizer-timeout",
        type=_seconds,
        default=d.summarizer_timeout,
        metavar="SECONDS",
        help="how long a session end waits for the summarizer; the injected timeouts take "
        f"twice this (default {d.summarizer_timeout})",
    )
    faults.add_argument(
        "--primary-outage",
        type=_outage,
        default=None,
        metavar="SHARE",
        help="share of the run (0..0.9, in three windows) during which the primary is unreachable "
        "(default 0; the incident scenario makes it flap instead: down 5 s of every 20 s)",
    )

    telemetry = parser.add_argument_group("telemetry (off by default)")
    telemetry.add_argument(
        "--prometheus-port",
        type=int,
        metavar="PORT",
        help="serve /metrics on 127.0.0.1:PORT, 0 = any free port "
        '(needs: pip install "autoplay-obs[prometheus]")',
    )
    telemetry.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="export traces and metrics by OTLP/HTTP, e.g. http://127.0.0.1:4318 "
        '(needs: pip install "autoplay-obs[otlp]")',
    )
    telemetry.add_argument(
        "--linger",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="keep /metrics up this long after the run (its final counters stay scrapeable and "
        "the alerts keep their state); Ctrl-C ends it early",
    )

    where.add_argument(
        "--cleanup",
        action="store_true",
        help="with --redis-url: at the end, delete every key the run wrote (SCAN over the run's own "
        "product id, nothing else). Without it the closing line says how to delete them later",
    )

    output = parser.add_argument_group("output")
    output.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar on stderr"
    )
    output.add_argument(
        "-v", "--verbose", action="store_true", help="show the library's (rate-limited) warning log lines"
    )


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
