"""The demo's scenarios: ``healthy`` fires none of the shipped alerts, ``incident`` fires them all.

Decisions:

- ``incident`` puts every alert of ``dashboards/alerts.yml`` well past its
  threshold for as long as the run lasts, so each fires once its ``for:`` has
  passed (a ten-minute run covers the longest): sink writes fail 30 % (alert
  at 5 %) and the built-in sink rejects 30 % of the events it took (alert at
  1 %), the summarizer fails 40 % (alert at 5 %), the primary flaps (about
  a fifth of its calls fail, alert at 5 %; over a hundred sessions lost per
  outage at the default pace, alert at 10 in 10 minutes), and a user's stored document comes from a newer
  version (alert on any refused document).
- The primary flaps -- down ``FLAP_DOWN`` seconds of every ``FLAP_PERIOD`` --
  instead of the three windows of ``--primary-outage``: the alerts' rate
  windows then see a steady failure share whatever the run's length, and the
  summarizer, which only runs while the primary answers, keeps being called.
- The document from a newer version is planted only in the incident. It is
  a real fault (every session of that user is lost until someone acts), the
  one ``AutoplayDocumentsRefused`` exists for, so a healthy run cannot have it.
- Explicit fault flags override the scenario's values.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from autoplay_obs.demo._config import DemoConfig, Scenario
from autoplay_obs.demo._faults import OutageSchedule

__all__ = ["FLAP_DOWN", "FLAP_PERIOD", "SCENARIO_FAULTS", "FlappingOutage", "scenario_config"]

SCENARIO_FAULTS: Final[dict[str, dict[str, float]]] = {
    "healthy": {},
    "incident": {"sink_error_rate": 0.3, "summarizer_failure_rate": 0.4},
}
FLAP_PERIOD: Final = 20.0
FLAP_DOWN: Final = 5.0
_FLAP_FIRST: Final = 2.0
"""Seconds of health before the first outage, so the first scrapes see the baseline."""


def scenario_config(scenario: Scenario = "healthy", **fields: Any) -> DemoConfig:
    """A ``DemoConfig`` with the scenario's faults, overridden by any field given."""
    return DemoConfig(scenario=scenario, **{**SCENARIO_FAULTS[scenario], **fields})


class FlappingOutage(OutageSchedule):
    """The primary down ``down`` seconds of every ``period``, from ``first`` seconds after ``start``."""

    def __init__(
        self,
        *,
        period: float = FLAP_PERIOD,
        down: float = FLAP_DOWN,
        first: float = _FLAP_FIRST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(0.0, clock)
        self.period, self.length, self.first = period, down, first
        self._clock = clock
        self._t0 = clock()

    def start(self) -> None:
        """The run begins now (planting documents took however long it took)."""
        self._t0 = self._clock()

    def down(self) -> bool:
        since = self._clock() - self._t0 - self.first
        return since >= 0 and since % self.period < self.length

    def describe(self) -> str:
        return f"primary flapping (down {self.length:g} s of every {self.period:g} s)"


def uses_flapping_outage(config: DemoConfig) -> bool:
    """The incident's flapping primary, unless ``--primary-outage`` asked for its windows."""
    return config.scenario == "incident" and not config.primary_outage
