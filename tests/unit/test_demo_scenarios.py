"""The demo's scenarios, pacing, streaming statistics, ``--version`` and the cleanup's key pattern.

Whether the incident really fires every alert (and the healthy run none) is
checked against a real Prometheus in
``tests/integration/test_demo_alerts.py``; the memory of a long run in
``tests/integration/test_demo_memory.py``.
"""

from __future__ import annotations

import fnmatch
import math
import random
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from autoplay_obs import __version__
from autoplay_obs.demo import DemoConfig, build_parser, run_demo
from autoplay_obs.demo._cleanup import glob_escape, key_pattern, shell_command
from autoplay_obs.demo._cli import config_from_args
from autoplay_obs.demo._local_sink import LocalEventSink
from autoplay_obs.demo._report import closing_lines
from autoplay_obs.demo._scenario import FlappingOutage, scenario_config
from autoplay_obs.demo._stats import CallTally, DemoStats, LatencyStats
from autoplay_obs.storage import AdapterCall, Outcome, SessionStartResult
from autoplay_obs.user_adoption_state import UserAdoptionState

# ------------------------------------------------------------------------------ streaming stats


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def test_latency_percentiles_are_within_one_bucket_of_the_exact_ones() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(-6, 1.5) for _ in range(20_000)] + [4.2, 1e-7]
    stats = LatencyStats()
    for value in values:
        stats.add(value)
    assert stats.count == len(values) and stats.min == min(values) and stats.max == max(values)
    for q in (1, 50, 90, 95, 99, 99.9):
        exact = nearest_rank(values, q)
        assert exact <= stats.percentile(q) <= exact * 1.0201, q
    assert stats.percentile(100) == max(values)
    assert math.isnan(LatencyStats().percentile(50))


def test_latency_stats_take_the_same_memory_for_ten_values_or_a_million() -> None:
    small, large = LatencyStats(), LatencyStats()
    for i in range(10):
        small.add(i / 1000)
    for i in range(100_000):
        large.add(i / 1000)
    assert len(small._buckets) == len(large._buckets)
    assert large.percentile(50) == pytest.approx(50.0, rel=0.021)


def result_with_calls(*calls: AdapterCall) -> SessionStartResult:
    return SessionStartResult(UserAdoptionState(user_id="u"), True, _calls=list(calls))


def test_call_tally_counts_late_calls_and_holds_results_only_for_its_window() -> None:
    stats = DemoStats()
    tally = CallTally(stats, settle_after=5.0)
    early = result_with_calls(AdapterCall("memory", "primary", "load_state", Outcome.OK, 0.001))
    tally.add(early, now=0.0)
    early._calls.append(
        AdapterCall("sink", "sink", "save_user_state", Outcome.ERROR, 0.01, "X")
    )  # lands late
    for t in range(1, 100):
        tally.add(result_with_calls(), now=float(t))
        assert len(tally) <= 6  # a window's worth, not the run's
    assert stats.adapters[("sink", "sink")].failed == 1  # the late call was counted
    assert stats.adapters[("memory", "primary")].calls == 1
    tally.settle_all()
    assert len(tally) == 0


async def test_local_sink_counts_events_and_keeps_none() -> None:
    sink = LocalEventSink(failure_rate=0.5, seed=1)
    state = UserAdoptionState(user_id="u").to_dict()
    for _ in range(200):
        await sink.save_user_state("p", "u", state)
    totals = sink.delivery.totals()
    assert totals["enqueued"] == 200 and totals["in_flight"] == 0
    assert sink.received["$set"] == totals["delivered"] and 0 < totals["failed"] < 200
    assert not any(isinstance(v, list | dict) and len(v) > 2 for v in vars(sink).values())


# ------------------------------------------------------------------------------ scenarios


def test_flapping_outage_is_down_a_fixed_share_of_each_period() -> None:
    now = [100.0]
    flap = FlappingOutage(period=20.0, down=5.0, first=2.0, clock=lambda: now[0])
    flap.start()
    states = []
    for tenth in range(0, 600):
        now[0] = 100.0 + tenth / 10
        states.append(flap.down())
    assert not any(states[:20])  # healthy for the first 2 s
    assert sum(states) == 3 * 50  # 5 s of each 20 s period, three periods in 60 s
    assert states[20] and states[69] and not states[70]


def test_scenario_presets_and_explicit_flags_on_top() -> None:
    parser = build_parser()
    healthy = config_from_args(parser.parse_args(["demo"]))
    assert healthy.scenario == "healthy"
    assert (healthy.sink_error_rate, healthy.summarizer_failure_rate, healthy.primary_outage) == (0, 0, 0)
    incident = config_from_args(parser.parse_args(["demo", "--scenario", "incident"]))
    assert incident.sink_error_rate > 0.05 and incident.summarizer_failure_rate > 0.05
    assert incident.primary_outage == 0  # the flapping primary, not the three windows
    mine = config_from_args(parser.parse_args(["demo", "--scenario", "incident", "--sink-error-rate", "0"]))
    assert mine.sink_error_rate == 0 and mine.summarizer_failure_rate == incident.summarizer_failure_rate
    assert scenario_config("incident", users=5).users == 5


def test_a_duration_run_is_paced_and_a_fixed_one_is_not() -> None:
    assert DemoConfig(duration=10).session_rate == 25.0
    assert DemoConfig(duration=10, rate=0).session_rate is None
    assert DemoConfig().session_rate is None
    assert DemoConfig(rate=7).session_rate == 7
    with pytest.raises(ValueError):
        DemoConfig(rate=-1)


async def test_paced_run_starts_about_rate_times_duration_sessions() -> None:
    stats = await run_demo(DemoConfig(duration=1.0, rate=40, users=10, concurrency=8, progress=False))
    assert 30 <= stats.started <= 41


async def test_incident_run_refuses_the_newer_document_again_and_again_and_fails_the_rest() -> None:
    config = scenario_config(
        "incident", duration=3.0, rate=120, users=6, concurrency=8, progress=False, summarizer_timeout=0.05
    )
    stats = await run_demo(config)
    assert stats.refused_documents >= 2  # the newer user comes back, refused each time
    assert stats.injected["primary outage errors"] > 0  # the first flap starts 2 s in
    assert stats.adapters[("local_events", "sink")].failed > 0 and stats.summarizer_failed > 0
    assert stats.outage_label.startswith("primary flapping")
    assert not stats.count_mismatches
    # The flush after the run waits out the flap it ended in: every queued end is replayed (or,
    # for the newer-version user, parked: refused, not lost).
    assert stats.outbox_queued > 0 and stats.lost == 0
    assert stats.outbox_replayed + stats.outbox_parked == stats.outbox_queued


# ------------------------------------------------------------------------------ --version


def test_version_on_the_console_script_and_the_module(capsys: pytest.CaptureFixture[str]) -> None:
    script = entry_points(group="console_scripts")["autoplay-obs"].load()
    assert script(["--version"]) == 0  # the exit status, as for every command
    assert capsys.readouterr().out == f"autoplay-obs {__version__}\n"
    result = subprocess.run(
        [sys.executable, "-m", "autoplay_obs", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout == f"autoplay-obs {__version__}\n"


# ------------------------------------------------------------------------------ cleanup


@pytest.mark.parametrize("product", ["demo-1a2b3c", "demo[1]", "d*?", "a\\b"])
def test_key_pattern_matches_exactly_the_product_s_keys(product: str) -> None:
    pattern = key_pattern(product)
    # Redis MATCH is glob with backslash escapes; fnmatch has none, so unescape into [] classes.
    as_fnmatch = "".join(f"[{c}]" if c in "*?[]\\" else c for c in _unescape(pattern[:-1])) + "*"
    assert fnmatch.fnmatchcase(f"autoplay:user:{product}:u1:state", as_fnmatch)
    assert fnmatch.fnmatchcase(f"autoplay:user:{product}:u1:session:s1", as_fnmatch)
    for other in (f"{product}x", f"x{product}", "demo1", "demo-1a2b3"):
        if other != product:
            assert not fnmatch.fnmatchcase(f"autoplay:user:{other}:u1:state", as_fnmatch), other


def _unescape(pattern: str) -> str:
    out, chars = [], iter(pattern)
    for c in chars:
        out.append(next(chars) if c == "\\" else c)
    return "".join(out)


def test_glob_escape_and_the_shell_line() -> None:
    assert glob_escape("a*b?c[d]e\\") == "a\\*b\\?c\\[d\\]e\\\\"
    line = shell_command("redis://127.0.0.1:6379/0", "demo-abc")
    assert line == (
        "redis-cli -u redis://127.0.0.1:6379/0 --scan --pattern 'autoplay:user:demo-abc:*' "
        "| xargs -r redis-cli -u redis://127.0.0.1:6379/0 unlink"
    )


def test_closing_lines_say_what_was_left_or_removed() -> None:
    stats = DemoStats(product_id="demo-abc", keys_left=12)
    redis = DemoConfig(redis_url="redis://h:1/0")
    text = "\n".join(closing_lines(redis, stats))
    assert "12 keys" in text and "--cleanup" in text and "redis-cli" in text
    removed = DemoStats(product_id="demo-abc", keys_removed=12)
    assert "removed the 12 keys" in "\n".join(closing_lines(DemoConfig(redis_url="x", cleanup=True), removed))
    assert closing_lines(DemoConfig(), DemoStats()) == []
    assert "nothing to remove" in closing_lines(DemoConfig(cleanup=True), DemoStats())[0]
