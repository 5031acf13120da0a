"""The shipped Grafana dashboard, alert rules, runbooks and scrape config: structure, names, promtool.

Every metric a panel or an alert queries must exist in the instrument table
(``INSTRUMENTS``), with the suffixes Prometheus gives it; every label a
selector or a ``by`` clause names must be one of that metric's labels. The
queries are parsed by promtool itself (as recording rules in a temporary rule
file: promtool 2.42 has no PromQL parse command), and the alert rules are
checked and unit-tested with ``promtool check rules`` / ``promtool test rules``.
Every alert links a section of ``docs/runbooks.md`` that exists and says what
the alert means, how to confirm it, what to do and why its threshold is what
it is. The linter's rules are in ``test_dashboard_lint``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from autoplay_obs.telemetry import INSTRUMENTS

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "autoplay_obs.json"
ALERTS = ROOT / "dashboards" / "alerts.yml"
ALERT_TESTS = ROOT / "dashboards" / "alerts_test.yml"
SCRAPE_CONFIG = ROOT / "examples" / "prometheus.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$job": ".+",
    "$instance": ".+",
}
TARGET_LABELS = ("job", "instance")  # added by Prometheus to every scraped series
ALERT_NAMES = {
    "AutoplayPrimaryFailing",
    "AutoplaySessionsNotPersisted",
    "AutoplayDocumentsRefused",
    "AutoplaySinkFailing",
    "AutoplaySinkDroppingEvents",
    "AutoplaySummarizerErrorRatio",
}
METRIC = re.compile(r"\bautoplay_[a-z0-9_]+")
SELECTOR = re.compile(r"\b(autoplay_[a-z0-9_]+)\{([^}]*)\}")
BY_CLAUSE = re.compile(
    r"\b(?:by|on|without)\s*\(([^)]*)\)\s*(?:\(\s*(?:rate|increase)?\(?\s*)?(autoplay_[a-z0-9_]+)?"
)


def exposed_series() -> dict[str, tuple[str, ...]]:
    """Every series name Prometheus stores for the instrument table, with its labels."""
    names: dict[str, tuple[str, ...]] = {}
    for inst in INSTRUMENTS.values():
        base = inst.prometheus_name
        if inst.prometheus_type == "histogram":
            names[f"{base}_bucket"] = (*inst.labels, "le")
            names[f"{base}_count"] = inst.labels
            names[f"{base}_sum"] = inst.labels
        else:
            names[f"{base}_total"] = inst.labels
    return names


SERIES = exposed_series()


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    return [p for p in load_dashboard()["panels"] if p.get("type") != "row"]


def targets() -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in panels() for t in p["targets"]]


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def alert_rules() -> list[dict[str, str]]:
    """Name, expr, severity and annotations of each alert rule (read without a YAML dependency)."""
    rules = []
    for chunk in re.split(r"^\s*- alert: ", ALERTS.read_text(), flags=re.M)[1:]:
        name, body = chunk.split("\n", 1)
        expr = re.search(r"expr: \|\n(.*?)\n\s*for:", body, re.S)
        severity = re.search(r"severity: (\w+)", body)
        runbook = re.search(r"runbook_url: (\S+)", body)
        rules.append(
            {
                "alert": name.strip(),
                "expr": expr.group(1) if expr else "",
                "severity": severity.group(1) if severity else "",
                "summary": "summary:" in body,
                "description": "description:" in body,
                "runbook_url": runbook.group(1) if runbook else "",
            }
        )
    return rules  # type: ignore[return-value]


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """``## `` sections of docs/runbooks.md by anchor."""
    parts = re.split(r"^## (.+)$", RUNBOOKS.read_text(), flags=re.M)
    return {github_anchor(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


# ------------------------------------------------------------------------------ dashboard


def test_datasource_is_a_variable_never_a_hard_coded_uid() -> None:
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    # Grafana's import dialog asks for the data source and makes it the variable's default.
    (ds_input,) = dashboard["__inputs"]
    assert ds_input["type"] == "datasource" and ds_input["pluginId"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == "${" + ds_input["name"] + "}"
    assert dashboard.get("id") is None  # importable as a new dashboard
    for panel in panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    uids = re.findall(r'"uid":\s*"([^"]*)"', DASHBOARD.read_text())
    assert set(uids) <= {"${datasource}", dashboard["uid"]}  # no data source uid of anyone's Grafana


def test_panel_ids_are_unique_and_every_panel_is_described_and_placed() -> None:
    ids = [p["id"] for p in load_dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert len(panel["description"]) > 80, f"{panel['title']}: say what a bad value means"
        assert "Bad" in panel["description"], panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0


def test_grid_positions_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in panels():
        g = panel["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, panel["title"]
        cells |= mine


@pytest.mark.parametrize(("title", "target"), targets(), ids=[f"{t}:{x['refId']}" for t, x in targets()])
def test_every_query_names_existing_metrics_and_labels(title: str, target: dict[str, Any]) -> None:
    expr = target["expr"]
    assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
    assert expr.count("[") == expr.count("]")
    names = METRIC.findall(expr)
    assert names, f"{title}: no autoplay metric"
    for name in names:
        assert name in SERIES, f"{title}: {name} is not in the instrument table"
    for name, matchers in SELECTOR.findall(expr):
        for matcher in filter(None, (m.strip() for m in matchers.split(","))):
            label = re.split(r"[=!~]", matcher, maxsplit=1)[0].strip()
            assert label in SERIES[name] + TARGET_LABELS, f"{title}: {name} has no label {label!r}"
    known = {label for name in names for label in SERIES[name]}
    for clause, _ in BY_CLAUSE.findall(expr):
        for label in filter(None, (x.strip() for x in clause.split(","))):
            assert label in known, f"{title}: grouping by unknown label {label!r}"


def test_latency_panels_show_exemplars() -> None:
    latency = [p for p in panels() if "_bucket" in " ".join(t["expr"] for t in p["targets"])]
    assert len(latency) >= 2
    for panel in latency:
        assert all(t["exemplar"] is True for t in panel["targets"]), panel["title"]
        quantiles = {
            re.search(r"histogram_quantile\(([0-9.]+)", t["expr"]).group(1) for t in panel["targets"]
        }  # type: ignore[union-attr]
        assert quantiles == {"0.5", "0.95", "0.99"}, panel["title"]


def test_the_panels_cover_every_metric_the_issue_asks_for() -> None:
    queried = {name for _, t in targets() for name in METRIC.findall(t["expr"])}
    # db.client.operation.duration is the conventions' metric, shared with the host's own
    # database instrumentation (redis-py 8): the dashboard shows ours, autoplay_*.
    ours = [i for i in INSTRUMENTS.values() if i.prometheus_name.startswith("autoplay_")]
    assert len(ours) == len(INSTRUMENTS) - 1
    for inst in ours:
        suffixes = ("_bucket", "_count", "_sum") if inst.prometheus_type == "histogram" else ("_total",)
        assert any(inst.prometheus_name + s in queried for s in suffixes), f"no panel for {inst.name}"


# ------------------------------------------------------------------------------ alert rules


def test_alert_rules_name_existing_metrics_and_are_documented() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == ALERT_NAMES
    for rule in rules:
        for name in METRIC.findall(rule["expr"]):
            assert name in SERIES, f"{rule['alert']}: {name} is not in the instrument table"
        assert METRIC.findall(rule["expr"]), rule["alert"]
        assert rule["severity"] in ("critical", "warning")
        assert rule["summary"] and rule["description"]


def test_every_alert_links_its_runbook_section() -> None:
    sections = runbook_sections()
    for rule in alert_rules():
        url = rule["runbook_url"]
        assert url == f"docs/runbooks.md#{rule['alert'].lower()}", rule["alert"]
        body = sections.get(url.split("#", 1)[1])
        assert body is not None, f"{rule['alert']}: no section {url} in docs/runbooks.md"
        for part in ("Meaning", "Confirm", "Act", "Why this threshold"):
            assert re.search(rf"^\*\*{part}", body, re.M), f"{rule['alert']}: runbook lacks {part!r}"
        assert "dashboard" in body.lower() and "autoplay-obs" in body, rule["alert"]
        for_ = re.search(rf"- alert: {rule['alert']}\n.*?\n\s*for: (\w+)", ALERTS.read_text(), re.S)
        assert for_ is not None and f"`for: {for_.group(1)}`" in body, f"{rule['alert']}: say why its for:"


def test_runbooks_hold_a_section_per_alert_and_no_stale_one() -> None:
    alerts = {name.lower() for name in ALERT_NAMES}
    assert {anchor for anchor in runbook_sections() if anchor.startswith("autoplay")} == alerts


def test_alert_unit_tests_cover_firing_and_not_firing_for_every_alert() -> None:
    checks = re.findall(r"alertname: (\w+)\n\s*exp_alerts:[ ]*(\[\])?", ALERT_TESTS.read_text())
    for rule in alert_rules():
        mine = [expects_none for name, expects_none in checks if name == rule["alert"]]
        assert any(not none for none in mine), f"{rule['alert']}: no firing case"
        assert any(none for none in mine), f"{rule['alert']}: no not-firing case"


# ------------------------------------------------------------------------------ promtool


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not found on PATH; install Debian's `prometheus` package (bash .ci/run)")
    return path


def run(promtool: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.prometheus
def test_promtool_checks_the_alert_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.prometheus
def test_promtool_unit_tests_of_the_alert_rules_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.prometheus
def test_promtool_parses_every_dashboard_query(promtool: str, tmp_path: Path) -> None:
    """Each query (Grafana variables substituted) becomes a recording rule promtool must parse."""
    rules = [
        {"record": f"autoplay_dashboard:query_{i}", "expr": substitute(target["expr"])}
        for i, (_, target) in enumerate(targets())
    ]
    path = tmp_path / "dashboard_queries.yml"  # JSON is YAML: no YAML library needed
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


@pytest.mark.prometheus
def test_promtool_accepts_the_example_scrape_config(promtool: str) -> None:
    result = run(promtool, "check", "config", str(SCRAPE_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
