"""The shipped alerts against a real Prometheus: the incident fires every one, a healthy run none.

The rule file is ``dashboards/alerts.yml`` itself with each ``for:`` rewritten
to a few seconds (nothing else changes: expressions, windows and thresholds
are the shipped ones), so the test takes well under a minute instead of the
ten a real run needs. Two Prometheus servers, each scraping one demo every
second and evaluating every second, run side by side: one on
``--scenario incident``, one on the default healthy scenario. The healthy one
also shows that the dashboard's failure panels read zero, not "No data".
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_harness import (
    ALERTS,
    Scrape,
    dashboard_targets,
    prometheus_binary,  # noqa: F401 -- the fixture
    wait_until,
)

SHORT_FOR = "3s"
ALERT_NAMES = set(re.findall(r"^\s*- alert: (\w+)", ALERTS.read_text(), re.M))
DEMO = ("--duration", "60", "--linger", "60", "--no-progress", "--users", "20", "--rate", "60")
ZERO_WHEN_HEALTHY = (
    "Adapter failures by error type [A]",
    "Sink failures and drops by reason [A]",
    "Summarizer errors by type [A]",
    "Summarizer errors by type [B]",
    "Sessions not persisted [A]",
    "Documents repaired / refused [B]",
)


def short_for_rules(path: Path) -> Path:
    """The shipped rules with every ``for:`` set to ``SHORT_FOR``."""
    text, count = re.subn(r"^(\s+for: )\S+$", rf"\g<1>{SHORT_FOR}", ALERTS.read_text(), flags=re.M)
    assert count == len(ALERT_NAMES) > 0
    path.write_text(text)
    return path


@pytest.fixture
def scrapes(prometheus_binary: str, tmp_path: Path) -> Iterator[dict[str, Scrape]]:  # noqa: F811
    rules = short_for_rules(tmp_path / "alerts_short_for.yml")
    pair = {name: Scrape(prometheus_binary, tmp_path / name, rules) for name in ("incident", "healthy")}
    try:
        for scrape in pair.values():
            scrape.wait_ready()
        yield pair
    except BaseException:
        for name, scrape in pair.items():
            print(f"--- {name}: prometheus log\n{scrape.log_tail()}\n--- demo\n{scrape.demo_output()}")
        raise
    finally:
        for scrape in pair.values():
            scrape.close()


def alert_states(scrape: Scrape) -> dict[str, set[str]] | None:
    """Each rule's alert states (one per label set); None until every rule has been evaluated."""
    rules = scrape.rules()
    assert not any(r["health"] == "err" or r.get("lastError") for r in rules), rules
    if not rules or any(r["health"] != "ok" for r in rules):
        return None
    return {r["name"]: {a["state"] for a in r.get("alerts", [])} for r in rules}


def alive(scrape: Scrape) -> None:
    assert scrape.demo is not None and scrape.demo.poll() is None, scrape.demo_output()


@pytest.mark.prometheus
def test_the_incident_fires_every_alert_and_a_healthy_run_none(scrapes: dict[str, Scrape]) -> None:
    incident, healthy = scrapes["incident"], scrapes["healthy"]
    incident.start_demo("--scenario", "incident", "--summarizer-timeout", "0.05", *DEMO)
    healthy.start_demo(*DEMO)

    def all_firing() -> dict[str, set[str]] | None:
        alive(incident)
        states = alert_states(incident) or {}
        return (
            states if set(states) == ALERT_NAMES and all(s == {"firing"} for s in states.values()) else None
        )

    wait_until(all_firing, 60, "every alert of the incident to fire")

    # The healthy demo has been scraped and its rules evaluated all that time: wait until it
    # has run long enough for a short `for:` to have passed many times over, then nothing.
    def scraped_for_a_while() -> bool:
        alive(healthy)
        up = healthy.query('count_over_time(up{job="autoplay_demo"}[1m]) >= 10')
        return bool(up)

    wait_until(scraped_for_a_while, 30, "ten scrapes of the healthy demo")
    time.sleep(2 * int(SHORT_FOR.rstrip("s")))
    states = alert_states(healthy)
    assert states is not None and set(states) == ALERT_NAMES
    assert all(not s for s in states.values()), states  # not even pending

    values = dict(dashboard_targets())
    for title in ZERO_WHEN_HEALTHY:
        result: list[dict[str, Any]] = healthy.query(values[title])
        assert result, f"{title}: No data on a healthy system"
        assert all(float(series["value"][1]) == 0 for series in result), (title, result)
    # The same panels show the incident's failures.
    for title in ZERO_WHEN_HEALTHY:
        result = incident.query(values[title])
        assert any(float(series["value"][1]) > 0 for series in result), (title, result)
