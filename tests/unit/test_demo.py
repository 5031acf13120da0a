"""The demo, run in-process with small numbers: its counts add up and its faults show.

Also: ``--help`` reads well, a missing extra gives a message naming it, the
default run needs nothing but the core dependencies (the optional packages are
blocked from importing in a subprocess, as on a fresh ``pip install -e .``),
``--version``, the scenarios, and the streaming statistics that keep a long
run's memory flat (measured in ``tests/integration/test_demo_memory.py``).
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import pytest

from autoplay_obs.demo import DemoConfig, DemoStats, main, run_demo
from autoplay_obs.demo._progress import ProgressBar

SMALL = {"sessions": 80, "users": 10, "concurrency": 8, "progress": False}


async def run(**overrides: object) -> DemoStats:
    return await run_demo(DemoConfig(**{**SMALL, **overrides}))  # type: ignore[arg-type]


def assert_consistent(stats: DemoStats, sessions: int) -> None:
    assert stats.started == stats.ended == sessions
    assert stats.ended == stats.persisted + stats.not_persisted
    assert stats.snapshots_created + stats.snapshots_existing + stats.snapshots_failed == (
        stats.ended + stats.retried_ends
    )
    assert not stats.count_mismatches, stats.count_mismatches  # no lost updates
    assert stats.checked_users == len(stats.users_seen)


async def test_default_run_counts_add_up_and_every_edge_case_happens() -> None:
    stats = await run()
    assert_consistent(stats, SMALL["sessions"])  # type: ignore[arg-type]
    # Healthy: nothing lost, nothing refused (the newer-version document is the incident's).
    assert stats.not_persisted == 0 and not stats.end_errors
    assert stats.degraded_starts == 0 and stats.refused_documents == 0
    assert stats.repaired_documents == 1
    assert stats.trimmed >= 1  # the power user arrived with a full index: each session trims one
    assert stats.duplicates == stats.retried_ends  # every retried end recognised
    assert stats.snapshots_created == stats.ended and stats.snapshots_existing == stats.retried_ends
    assert stats.summarizer_failed == 0
    assert stats.returning_starts > 0 and stats.onboarding_context > 0
    assert stats.conflicts > 0  # two replicas sharing one store
    sink = stats.adapters[("local_events", "sink")]
    assert sink.calls > 0 and sink.failed == 0
    assert stats.sink_delivery["local_events"]["delivered"] == sink.calls
    primary = stats.adapters[("memory", "primary")]
    assert primary.failed == 0
    assert stats.start_latencies.count == stats.started
    assert stats.end_latencies.count == stats.ended + stats.retried_ends
    assert 0 < stats.start_latencies.percentile(50) <= stats.start_latencies.max


async def test_every_end_retried_is_counted_once() -> None:
    stats = await run(retry_rate=1.0, edge_cases=False, sessions=40)
    assert_consistent_without_edge_cases(stats, 40)
    assert stats.retried_ends == 40 and stats.duplicates == 40
    assert stats.snapshots_existing == 40


def assert_consistent_without_edge_cases(stats: DemoStats, sessions: int) -> None:
    assert stats.started == stats.ended == sessions
    assert stats.ended == stats.persisted + stats.not_persisted
    assert not stats.count_mismatches
    assert stats.checked_users == len(stats.users_seen)


async def test_sink_errors_are_counted_and_never_cost_a_session() -> None:
    stats = await run(sink_error_rate=0.3)
    assert_consistent(stats, SMALL["sessions"])  # type: ignore[arg-type]
    sink = stats.adapters[("local_events", "sink")]
    assert sink.failed == stats.injected["sink errors"] > 0
    assert set(sink.error_types) == {"InjectedSinkError"}
    assert stats.not_persisted == 0
    delivery = stats.sink_delivery["local_events"]
    assert delivery["failed"] > 0 and delivery["enqueued"] == sink.calls - sink.failed
    assert delivery["delivered"] + delivery["failed"] == delivery["enqueued"]


async def test_sink_latency_stays_off_the_session_path() -> None:
    stats = await run(sink_latency=0.05, sessions=30, edge_cases=False)
    sink = stats.adapters[("local_events", "sink")]
    assert sink.durations.min >= 0.02  # the sink was slow...
    assert stats.start_latencies.percentile(50) < 0.02  # ...and the sessions did not wait for it
    assert stats.end_latencies.percentile(50) < 0.04


async def test_summarizer_failures_are_counted_and_sessions_still_saved() -> None:
    stats = await run(summarizer_failure_rate=1.0, summarizer_timeout=0.05)
    assert_consistent(stats, SMALL["sessions"])  # type: ignore[arg-type]
    assert stats.summarizer_failed == stats.summarizer_calls > 0
    assert set(stats.summarizer_failures) <= {"RateLimitError", "ProviderError", "TimeoutError"}
    assert len(stats.summarizer_failures) >= 2
    assert stats.not_persisted == 0


async def test_primary_outage_degrades_starts_and_queues_ends_but_loses_none() -> None:
    stats = await run(primary_outage=0.3)
    assert_consistent(stats, SMALL["sessions"])  # type: ignore[arg-type]
    assert stats.injected["primary outage errors"] > 0
    assert stats.degraded_starts > 0 and stats.not_persisted > 0
    assert stats.start_errors["StorageUnavailableError"] > 0
    assert stats.end_errors["StorageUnavailableError"] > 0
    primary = stats.adapters[("memory", "primary")]
    # The sessions' calls; the background replay's attempts during a window fail too, uncounted here.
    assert 0 < primary.failed <= stats.injected["primary outage errors"]
    # Every end not persisted was queued, and replayed after the outage (test_demo_outbox.py).
    assert stats.queued_ends >= stats.not_persisted and stats.lost == 0


async def test_primary_outage_without_the_outbox_loses_the_ends_not_persisted() -> None:
    stats = await run(primary_outage=0.3, outbox=False)
    assert_consistent(stats, SMALL["sessions"])  # type: ignore[arg-type]
    assert stats.not_persisted > 0 and stats.end_errors["StorageUnavailableError"] > 0
    assert stats.queued_ends == stats.outbox_queued == 0 and not stats.queued_sessions_by_user
    assert 0 < stats.lost <= stats.not_persisted


async def test_duration_mode_runs_for_about_that_long() -> None:
    stats = await run(duration=0.5, edge_cases=False)
    assert stats.ended > 0 and 0.4 < stats.elapsed_s < 3.0
    assert_consistent_without_edge_cases(stats, stats.ended)


# ------------------------------------------------------------------------------ command line


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_redraws_in_place_on_a_terminal_and_prints_quarters_otherwise() -> None:
    tty = Terminal()
    bar = ProgressBar(tty)
    bar.update(0.5, "half")
    bar.update(1.0, "done")
    bar.close()
    assert "\r[" in tty.getvalue() and " 100%  done" in tty.getvalue() and tty.getvalue().endswith("\n")
    plain = io.StringIO()
    bar = ProgressBar(plain)
    for i in range(1, 101):
        bar.update(i / 100, f"{i}")
    bar.close()
    assert plain.getvalue().count("\n") == 4 and "\r" not in plain.getvalue()
    silent = io.StringIO()
    ProgressBar(silent, enabled=False).update(1.0, "x")
    assert silent.getvalue() == ""


def test_help_explains_the_demo_to_a_newcomer(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--sessions", "--duration", "--users", "--concurrency", "--seed", "--redis-url",
        "--posthog-host", "--amplitude-url", "--sink-error-rate", "--sink-latency",
        "--summarizer-failure-rate", "--primary-outage", "--prometheus-port", "--otlp-endpoint", "--linger",
        "--scenario", "--rate", "--cleanup",
    ):  # fmt: skip
        assert flag in text
    assert "in-memory" in text and "nothing to install" in text
    assert "autoplay-obs[redis]" in text and "autoplay-obs[prometheus]" in text


def test_cli_run_prints_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert main(["demo", "--sessions", "60", "--users", "8", "--no-progress"], out=out) == 0
    text = out.getvalue()
    for part in ("Sessions", "persisted", "not persisted", "duplicates", "degraded", "summarizer",
                 "CAS conflicts", "p50", "p95", "p99", "What was degraded", "no lost updates",
                 "outbox a temporary file", "lost 0"):  # fmt: skip
        assert part in text, part


def test_bad_flags_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--sink-error-rate", "2"])
    assert "between 0 and 1" in capsys.readouterr().err


def test_a_missing_extra_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    assert main(["demo", "--prometheus-port", "0", "--sessions", "5"], out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert "--prometheus-port" in err and 'pip install "autoplay-obs[prometheus]"' in err


BLOCKED = (
    "prometheus_client",
    "opentelemetry.sdk",
    "opentelemetry.exporter",
    "redis",
    "posthog",
    "amplitude",
)


def run_with_core_dependencies_only(*args: str) -> subprocess.CompletedProcess[str]:
    """The demo in a subprocess where every optional dependency fails to import."""
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys
        BLOCKED = {BLOCKED!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ModuleNotFoundError(f"No module named {{name!r}}")
                return None
        sys.meta_path.insert(0, Block())
        from autoplay_obs.__main__ import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)


def test_default_run_needs_only_the_core_dependencies() -> None:
    result = run_with_core_dependencies_only("demo", "--sessions", "60", "--users", "8")
    assert result.returncode == 0, result.stderr
    assert "no lost updates" in result.stdout
    assert "100%" in result.stderr  # the progress bar


@pytest.mark.parametrize(
    ("flag", "value", "extra"),
    [
        ("--redis-url", "redis://127.0.0.1:1/0", "redis"),
        ("--posthog-host", "http://127.0.0.1:1", "analytics"),
        ("--amplitude-url", "http://127.0.0.1:1", "analytics"),
        ("--prometheus-port", "0", "prometheus"),
        ("--otlp-endpoint", "http://127.0.0.1:1", "otlp"),
    ],
)
def test_each_optional_flag_names_its_extra_when_missing(flag: str, value: str, extra: str) -> None:
    result = run_with_core_dependencies_only("demo", "--sessions", "5", flag, value)
    assert result.returncode == 2, result.stdout + result.stderr
    assert flag in result.stderr and f'pip install "autoplay-obs[{extra}]"' in result.stderr
    assert "Traceback" not in result.stderr
