"""The demo scraped by a real Prometheus: every dashboard query returns data, every alert evaluates.

A real ``prometheus`` (Debian's package) runs on a free port with its TSDB in
a temporary directory, scraping the demo's ``/metrics`` every second with the
shipped alert rules loaded and exemplar storage on. The demo runs as a
subprocess with every fault injected (so that every panel has something to
show), then lingers so the last scrapes see its final counters. Also: the
demo's ``--redis-url`` run against the suite's real ``redis-server``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoplay_obs.demo import DemoConfig, run_demo

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "autoplay_obs.json"
ALERTS = ROOT / "dashboards" / "alerts.yml"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
DEMO_SECONDS = 8


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: last {last!r}")


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    """Debian's prometheus (the suite fails instead of skipping when AUTOPLAY_REQUIRE_SERVERS=1)."""
    path = os.environ.get("AUTOPLAY_PROMETHEUS") or shutil.which("prometheus")
    if not path:
        pytest.skip(
            "`prometheus` not found on PATH; install it (apt-get install prometheus, or bash .ci/run)"
        )
    return path


class Scrape:
    """The demo and the Prometheus scraping it, for one test."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.demo_port = free_port()
        self.port = free_port()
        self.workdir = workdir
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": "autoplay_demo",
                    "static_configs": [{"targets": [f"127.0.0.1:{self.demo_port}"]}],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.prometheus_log = (workdir / "prometheus.log").open("wb")
        # fmt: off
        self.prometheus = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--enable-feature=exemplar-storage",
                "--log.level=warn",
            ],
            stdout=self.prometheus_log, stderr=subprocess.STDOUT,
        )
        # fmt: on
        self.demo_out = workdir / "demo.out"
        self.demo: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start_demo(self, *flags: str) -> None:
        with self.demo_out.open("wb") as out:
            self.demo = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "autoplay_obs",
                    "demo",
                    "--prometheus-port",
                    str(self.demo_port),
                    *flags,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def demo_output(self) -> str:
        return self.demo_out.read_text(errors="replace")

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.api}/query?" + urllib.parse.urlencode({"query": expr})
        body = get_json(url)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def close(self) -> None:
        if self.demo is not None:
            stop(self.demo)
        stop(self.prometheus)
        self.prometheus_log.close()


@pytest.fixture
def prometheus_scrape(prometheus_binary: str, tmp_path: Path) -> Iterator[Scrape]:
    scrape = Scrape(prometheus_binary, tmp_path)
    try:
        wait_until(
            lambda: (
                urllib.request.urlopen(f"http://127.0.0.1:{scrape.port}/-/ready", timeout=1).status == 200
            ),
            30,
            "prometheus to be ready",
        )
        yield scrape
    except BaseException:
        print((tmp_path / "prometheus.log").read_text(errors="replace")[-3000:])
        raise
    finally:
        scrape.close()


def dashboard_targets() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    out = []
    for panel in panels:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            out.append((f"{panel['title']} [{target['refId']}]", expr))
    return out


@pytest.mark.prometheus
def test_every_dashboard_query_returns_data_and_alerts_evaluate(prometheus_scrape: Scrape) -> None:
    scrape = prometheus_scrape
    started = time.time()
    # fmt: off
    scrape.start_demo(
        "--duration", str(DEMO_SECONDS), "--linger", "60", "--no-progress",
        "--users", "30", "--concurrency", "8",
        "--sink-error-rate", "0.2", "--summarizer-failure-rate", "0.2",
        "--primary-outage", "0.2", "--retry-rate", "0.1", "--summarizer-timeout", "0.05",
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
    assert {r["name"] for r in rules} >= {
        "AutoplayPrimaryFailing",
        "AutoplaySinkFailing",
        "AutoplaySinkDroppingEvents",
        "AutoplaySummarizerErrorRatio",
        "AutoplaySessionsNotPersisted",
    }
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
    assert not stats.count_mismatches, stats.count_mismatches
    assert stats.checked_users == len(stats.users_seen) - 1
    assert stats.adapters[("redis", "primary")].calls > 0
    assert stats.trimmed >= 1 and stats.repaired_documents == 1 and stats.refused_documents == 1


@pytest.mark.redis_server
def test_demo_command_line_against_a_real_redis(redis_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "autoplay_obs", "demo", "--redis-url", redis_url, "--sessions", "80",
         "--users", "8", "--no-progress"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "primary redis" in result.stdout and "no lost updates" in result.stdout
