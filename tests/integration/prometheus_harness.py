"""A real Prometheus scraping a demo subprocess, for the demo's integration tests.

A real ``prometheus`` (Debian's package) runs on a free port with its TSDB in
a temporary directory, scraping the demo's ``/metrics`` every second and
evaluating the given rule file every second, exemplar storage on. The
fixture's name starts with ``prometheus``, so the suite marks every test using
it and a skip fails CI (``AUTOPLAY_REQUIRE_SERVERS=1``).
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
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "autoplay_obs.json"
ALERTS = ROOT / "dashboards" / "alerts.yml"
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$job": ".+",
    "$instance": ".+",
}


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
    """One demo and the Prometheus scraping it, with ``rule_file`` loaded."""

    def __init__(self, binary: str, workdir: Path, rule_file: Path = ALERTS) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.demo_port = free_port()
        self.port = free_port()
        self.workdir = workdir
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rule_file)],
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

    def wait_ready(self) -> None:
        wait_until(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1).status == 200,
            30,
            "prometheus to be ready",
        )

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

    def rules(self) -> list[dict[str, Any]]:
        groups = get_json(f"{self.api}/rules")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def log_tail(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        if self.demo is not None:
            stop(self.demo)
        stop(self.prometheus)
        self.prometheus_log.close()


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title [refId], query with Grafana's variables substituted) for every target."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    out = []
    for panel in panels:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            out.append((f"{panel['title']} [{target['refId']}]", expr))
    return out
