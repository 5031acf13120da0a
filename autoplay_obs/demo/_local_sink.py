"""The demo's own analytics sink when no PostHog or Amplitude host is given.

It builds the events the way an analytics tool would receive them (user
properties and one event per finished session) and counts them by kind,
keeping none (a long run must not grow with its events). It accounts for
them in a ``DeliveryLedger`` like the real sinks do, so the delivery panels have
data without any service. ``failure_rate`` stands in for an endpoint that
rejects a share of the events after the SDK took them (``failed/http_503``),
which is a different failure from a write that raises. Write-only: reads
return ``None``.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from autoplay_obs.storage.adapters._analytics import (
    DELIVERED,
    FAILED,
    DeliveryLedger,
    session_event_key,
    session_properties,
    unique_event_key,
    user_properties,
)

__all__ = ["LocalEventSink"]


class LocalEventSink:
    """Counts events by kind; each is settled at once: delivered, or failed at ``failure_rate``."""

    name = "local_events"

    def __init__(self, *, failure_rate: float = 0.0, seed: int = 0) -> None:
        self.received: Counter[str] = Counter()
        """Delivered events by kind (``$set``, ``session``)."""
        self.delivery = DeliveryLedger(self.name)
        self.failure_rate = failure_rate
        self._rng = random.Random(f"local_events:{seed}")

    def _deliver(self, key: str, kind: str, properties: dict[str, Any]) -> None:
        self.delivery.begin(key)
        if self._rng.random() < self.failure_rate:
            self.delivery.settle(key, FAILED, "http_503")
            return
        self.received[kind] += 1  # the payload was built as a real sink's would be, then let go
        self.delivery.settle(key, DELIVERED, "acknowledged")

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        self._deliver(unique_event_key(), "$set", user_properties(product_id, state, None))

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        key = session_event_key(product_id, user_id, session_id)
        self._deliver(key, "session", session_properties(product_id, session_id, snapshot))

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        return None

    async def get_session_snapshot(
        self, product_id: str, user_id: str, session_id: str
    ) -> dict[str, Any] | None:
        return None
