"""The demo scraped by a real Prometheus: every dashboard query returns data, every alert evaluates.

A real ``prometheus`` (Debian's package) runs on a free port with its TSDB in
a temporary directory, scraping the demo's ``/metrics`` every second with the
shipped alert rules loaded and exemplar storage on. The demo runs as a
subprocess with every fault injected (so that every panel has something to
show), then lingers so the last scrapes see its final counters. Also: the
demo's ``--redis-url`` run against the suite's real ``redis-server``.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_harness import (
    ROOT,
    Scrape,
    dashboard_targets,
    get_json,
    prometheus_binary,  # noqa: F401 -- the fixture
    wait_until,
)

from autoplay_obs.demo import DemoConfig, run_demo

DEMO_SECONDS = 8


@pytest.fixture
def prometheus_scrape(prometheus_binary: str, tmp_path: Path) -> Iterator[Scrape]:  # noqa: F811
    scrape = Scrape(prometheus_binary, tmp_path)
    try:
        scrape.wait_ready()
        yield scrape
    except BaseException:
        print(scrape.log_tail())
        raise
    finally:
        scrape.close()


@pytest.mark.prometheus
def test_every_dashboard_query_returns_data_and_alerts_evaluate(prometheus_scrape: Scrape) -> None:
    scrape = prometheus_scrape
    started = time.time()
    # fmt: off
    scrape.start_demo(
        "--duration", str(DEMO_SECONDS), "--linger", "60", "--no-progress",
        "--users", "30", "--concurrency", "8",
        "--sink-error-rate", "0.2", "--summarizer-failure-rate", "0.2",
        "--primary-outage", "0.2", "--retry-rate", "0.1", "--summarizer-timeout", "0.05", "--rate", "0",
    )
    # fmt: on
    def demo_finished() -> bool:
        assert scrape.demo is not None and scrape.demo.poll() is None, scrape.demo_output()
        return "serving http" in scrape.demo_output()

    wait_until(demo_finished, DEMO_SECONDS + 30, "the demo run to finish")
    output = scrape.demo_output()
    assert "no lost updates" in output, output
    finished = time.time()

    # Prometheus has scraped the demo's final counters.
    def scraped_final() -> bool:
        up = scrape.query('up{job="autoplay_demo"}')
        return bool(up) and up[0]["value"][1] == "1" and float(up[0]["value"][0]) > finished + 1.5

    wait_until(scraped_final, 15, "a scrape after the run")

    empty = [title for title, expr in dashboard_targets() if not scrape.query(expr)]
    assert not empty, f"dashboard queries without data: {empty}"

    # Latency exemplars carry the trace id of the call measured.
    url = f"{scrape.api}/query_exemplars?" + urllib.parse.urlencode(
        {
            "query": "autoplay_adapter_operation_duration_seconds_bucket",
            "start": f"{started - 5:.3f}",
            "end": f"{time.time():.3f}",
        }
    )
    exemplars = get_json(url)["data"]
    assert exemplars and all(len(e["labels"]["trace_id"]) == 32 for s in exemplars for e in s["exemplars"])

    def rules_evaluated() -> list[dict[str, Any]]:
        groups = get_json(f"{scrape.api}/rules")["data"]["groups"]
        rules: list[dict[str, Any]] = [rule for group in groups for rule in group["rules"]]
        return rules if rules and all(r["health"] == "ok" for r in rules) else []

    rules = wait_until(rules_evaluated, 10, "every alert rule to evaluate with health ok")
    assert len(rules) == 6
    assert all(not r.get("lastError") for r in rules), rules
    state = {r["name"]: r["state"] for r in rules}
    # The demo lost sessions and sink events: those alerts are (at least) pending.
    assert state["AutoplaySessionsNotPersisted"] in ("pending", "firing"), state
    assert state["AutoplaySinkDroppingEvents"] in ("pending", "firing"), state


async def test_demo_runs_against_a_real_redis(redis_url: str) -> None:
    stats = await run_demo(
        DemoConfig(
            sessions=120, users=10, concurrency=8, redis_url=redis_url, progress=False, primary_outage=0.1
        )
    )
    assert stats.primary_label.startswith("redis")
    assert stats.ended == 120 == stats.persisted + stats.not_persisted
    assert stats.not_persisted > 1  # the outage windows
    assert stats.outbox_queued > 0 and stats.outbox_replayed == stats.outbox_queued and stats.lost == 0
    assert not stats.count_mismatches, stats.count_mismatches  # the replayed sessions included
    assert stats.checked_users == len(stats.users_seen)
    assert stats.adapters[("redis", "primary")].calls > 0
    assert stats.trimmed >= 1 and stats.repaired_documents == 1 and stats.refused_documents == 0


@pytest.mark.redis_server
def test_demo_command_line_against_a_real_redis(redis_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "autoplay_obs", "demo", "--redis-url", redis_url, "--sessions", "80",
         "--users", "8", "--no-progress"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "primary redis" in result.stdout and "no lost updates" in result.stdout
