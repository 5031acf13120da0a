"""The dashboard linted the way grafana's dashboard-linter does (it cannot be installed here).

Its rules, in its own names: ``template-datasource-rule`` and
``panel-datasource-rule`` (one datasource variable, used by every panel and
query), ``template-job-rule`` / ``template-instance-rule`` and
``target-job-rule`` / ``target-instance-rule`` (every selector scoped by
``$job`` and ``$instance``), ``template-on-time-change-reload-rule``,
``target-rate-interval-rule`` (``$__rate_interval`` in every range function),
``target-counter-agg-rule`` (a counter only through ``rate``/``increase``),
``panel-units-rule``, ``panel-title-description-rule``,
``panel-no-targets-rule``; plus unique panel ids. The PromQL is walked by a
small scanner of calls and parentheses, enough for these queries (promtool
parses them for real in ``test_dashboards``). The counter rule is applied to
the alert expressions too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoplay_obs.telemetry import INSTRUMENTS

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "autoplay_obs.json"
ALERTS = ROOT / "dashboards" / "alerts.yml"
RANGE_FUNCTIONS = {"rate", "irate", "increase"}
TOKEN = re.compile(r"\(|\)|\b[a-zA-Z_][a-zA-Z0-9_]*(?=\s*\()|\bautoplay_[a-z0-9_]+(?:\{[^}]*\})?")
SCOPE = ('job=~"$job"', 'instance=~"$instance"')
FAILURE_SERIES = (
    "autoplay_adapter_operation_failures_total",
    "autoplay_summarizer_failures_total",
    "autoplay_sessions_not_persisted_total",
    "autoplay_documents_refused_total",
    "autoplay_documents_repaired_total",
    "autoplay_state_cas_conflicts_total",
    "autoplay_session_index_truncations_total",
    "autoplay_summaries_truncated_total",
)


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p.get("type") != "row"]


def targets() -> list[tuple[str, str]]:
    return [(f"{p['title']} [{t['refId']}]", t["expr"]) for p in panels() for t in p["targets"]]


def alert_exprs() -> list[tuple[str, str]]:
    text = ALERTS.read_text()
    names = re.findall(r"^\s*- alert: (\w+)", text, re.M)
    exprs = re.findall(r"expr: \|\n(.*?)\n\s*for:", text, re.S)
    assert len(names) == len(exprs) > 0
    return list(zip(names, exprs, strict=True))


def counter_series() -> set[str]:
    """Every series of the instrument table; all of them are counters to PromQL."""
    names = set()
    for inst in INSTRUMENTS.values():
        if inst.prometheus_type == "histogram":
            names |= {f"{inst.prometheus_name}{s}" for s in ("_bucket", "_count", "_sum")}
        else:
            names.add(f"{inst.prometheus_name}_total")
    return names


def walk(expr: str) -> Iterator[tuple[str, str, str | None, str]]:
    """(kind, text, innermost enclosing call, inside) for each selector and each range call.

    kind is ``selector`` (text: the selector) or ``call`` (text: the function
    name, inside: its argument text).
    """
    stack: list[tuple[str, int]] = []
    pending: str | None = None
    for match in TOKEN.finditer(expr):
        token = match.group()
        if token == "(":
            stack.append((pending or "", match.end()))
            pending = None
        elif token == ")":
            name, start = stack.pop()
            if name in RANGE_FUNCTIONS:
                yield "call", name, None, expr[start : match.start()]
        elif token.startswith("autoplay_"):
            yield "selector", token, stack[-1][0] if stack else None, ""
            pending = None
        else:
            pending = token
    assert not stack, f"unbalanced parentheses in {expr!r}"


# ------------------------------------------------------------------------------ templating


def test_template_variables_datasource_job_instance() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        var = variables[name]
        assert var["type"] == "query", name
        assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, name
        assert var["includeAll"] and var["multi"] and var["allValue"] == ".+", name
        assert var["refresh"] == 2, f"{name}: reload on time range change"
        assert f", {name})" in var["definition"], name
    assert 'job=~"$job"' in variables["instance"]["definition"]


# ------------------------------------------------------------------------------ panels


def test_panel_ids_are_unique() -> None:
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("panel", panels(), ids=lambda p: p["title"])
def test_every_panel_has_a_datasource_unit_description_and_targets(panel: dict[str, Any]) -> None:
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert panel["fieldConfig"]["defaults"].get("unit"), "panel-units-rule"
    assert panel["title"].strip() and len(panel["description"]) > 80, "panel-title-description-rule"
    assert panel["targets"], "panel-no-targets-rule"
    for target in panel["targets"]:
        assert target["datasource"] == panel["datasource"]


# ------------------------------------------------------------------------------ queries


@pytest.mark.parametrize(("title", "expr"), targets(), ids=[t for t, _ in targets()])
def test_every_query_follows_the_linter(title: str, expr: str) -> None:
    counters = counter_series()
    seen = list(walk(expr))
    selectors = [(text, parent) for kind, text, parent, _ in seen if kind == "selector"]
    calls = [inside for kind, _, _, inside in seen if kind == "call"]
    assert selectors, f"{title}: no autoplay metric"
    for selector, parent in selectors:
        name = selector.split("{", 1)[0]
        assert name in counters, f"{title}: {name} is not a series of the instrument table"
        assert parent in RANGE_FUNCTIONS, f"{title}: counter {name} outside rate/increase (in {parent!r})"
        for matcher in SCOPE:
            assert matcher in selector, f"{title}: {selector} lacks {matcher}"
    assert calls
    for inside in calls:
        window = re.search(r"\[([^\]]+)\]\s*$", inside)
        assert window is not None and window.group(1) == "$__rate_interval", f"{title}: {inside!r}"


@pytest.mark.parametrize(("title", "expr"), targets(), ids=[t for t, _ in targets()])
def test_failure_panels_read_zero_when_nothing_failed(title: str, expr: str) -> None:
    """A failure counter does not exist until the first failure: without a fallback, "No data"."""
    failing = any(name in expr for name in FAILURE_SERIES) or (
        "autoplay_sink_deliveries_total" in expr and "failed" in expr and "delivered" not in expr
    )
    if failing:
        assert re.search(r"\bor on\(\) vector\(0\)\s*$", expr), title


def test_the_fallback_rule_covers_the_failure_panels() -> None:
    """The rule above must not be vacuous: the panels a healthy system shows as zero."""
    titles = {t.rsplit(" [", 1)[0] for t, e in targets() if e.rstrip().endswith("or on() vector(0)")}
    for expected in (
        "Adapter failures by error type",
        "Sink failures and drops by reason",
        "Summarizer errors by type",
        "Sessions not persisted",
        "Documents repaired / refused",
    ):
        assert expected in titles


def test_the_scanner_catches_what_the_linter_catches() -> None:
    """A bare counter, a fixed window and an unscoped selector are each found."""
    bare = list(walk('sum(autoplay_fanout_results_total{job=~"$job", instance=~"$instance"})'))
    assert bare == [("selector", bare[0][1], "sum", "")]
    fixed = list(walk("rate(autoplay_fanout_results_total[5m])"))
    assert fixed[-1] == ("call", "rate", None, "autoplay_fanout_results_total[5m]")
    nested = list(walk('sum by (x) (rate(autoplay_a_total{y="("}[$__rate_interval]))'))
    assert nested[0][2] == "rate"


# ------------------------------------------------------------------------------ alerts


@pytest.mark.parametrize(("alert", "expr"), alert_exprs(), ids=[a for a, _ in alert_exprs()])
def test_alerts_use_counters_only_through_rate_or_increase(alert: str, expr: str) -> None:
    counters = counter_series()
    selectors = [(text, parent) for kind, text, parent, _ in walk(expr) if kind == "selector"]
    assert selectors, alert
    for selector, parent in selectors:
        name = selector.split("{", 1)[0]
        assert name in counters, f"{alert}: {name} is not a series of the instrument table"
        assert parent in RANGE_FUNCTIONS, f"{alert}: counter {name} outside rate/increase"
