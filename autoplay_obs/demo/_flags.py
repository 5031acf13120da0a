"""The ``demo`` command's flags, in groups: size of the run, where the data goes, faults, telemetry.

Fault flags default to None, meaning "the scenario's value" (``_scenario``);
``config_from_args`` in ``_cli`` lays the flags given over the scenario.
"""

from __future__ import annotations

import argparse

from autoplay_obs.demo._config import DURATION_RATE, DemoConfig
from autoplay_obs.demo._scenario import SCENARIO_FAULTS

__all__ = ["add_demo_arguments"]


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

    outbox = where.add_mutually_exclusive_group()
    outbox.add_argument(
        "--outbox",
        dest="outbox_path",
        metavar="PATH",
        help="the outbox file (SQLite) where the replicas queue the session ends the primary did not "
        "acknowledge, to replay them once it is back; kept after the run (default: on, in a "
        "temporary directory removed at the end)",
    )
    outbox.add_argument(
        "--no-outbox",
        dest="outbox",
        action="store_false",
        help="no outbox: a session end the primary did not acknowledge is lost, as without one",
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
