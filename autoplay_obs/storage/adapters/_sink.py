"""The base of the PostHog and Amplitude sinks: what they share, once.

Decisions:
- A sink is write-only (``readable = False``; reads return None), owns a
  ``DeliveryLedger``, refuses events once closed or when too large, and runs
  the SDK's blocking flush and shutdown on a daemon thread within a time
  budget. A subclass says how to hand an event to its SDK (``_send``), how
  to drain it (``_drain``, blocking) and how to shut it down.
- Only the SDKs' public callbacks, options and methods are used; what they
  do not report stays ``in_flight`` until ``aclose()`` writes it off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from autoplay_obs.storage.adapters._analytics import (
    DROPPED,
    MAX_EVENT_BYTES,
    DeliveryLedger,
    event_size,
    run_in_daemon_thread,
)

__all__ = ["AnalyticsSink"]


class AnalyticsSink:
    """Write-only mirror into an analytics SDK; see the subclasses."""

    name = "sink"
    readable = False  # write-only: never in the primary's place

    def __init__(self, *, property_prefix: str | None, close_timeout: float, owns_client: bool) -> None:
        self.property_prefix = property_prefix or None
        self.close_timeout = close_timeout
        self.delivery = DeliveryLedger(self.name)
        self._closed = False
        self._owns_client = owns_client

    # -- what a subclass provides ---------------------------------------------

    def _endpoint(self) -> str:
        """The URL events are posted to (for ``describe()``)."""
        return ""

    def _refusal(self) -> str | None:
        """Why the SDK cannot take an event now (checked before it is handed over), or None."""
        return None

    def _drain(self, budget: float) -> None:
        """Send what the SDK holds and settle what it reports, within ``budget`` (blocking)."""

    def _shutdown(self) -> None:
        """Stop the client this sink built (blocking)."""

    # -- shared --------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        parts = urlsplit(self._endpoint())
        described: dict[str, Any] = {}
        if parts.hostname:
            described["server.address"] = parts.hostname
            described["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
        return described

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        return None  # write-only: the data is read in the analytics tool

    async def get_session_snapshot(
        self, product_id: str, user_id: str, session_id: str
    ) -> dict[str, Any] | None:
        return None

    def _enqueue(self, key: str, properties: dict[str, Any], send: Callable[[str], str | None]) -> None:
        """Hand one event to the SDK; ``send`` returns a drop reason when the SDK refused it."""
        ledger = self.delivery
        if self._closed:
            ledger.refuse(key, "closed")
            return
        if event_size(properties) > MAX_EVENT_BYTES:
            ledger.refuse(key, "too_large")
            return
        refused = self._refusal()
        if refused is not None:
            ledger.refuse(key, refused)
            return
        ledger.begin(key)
        try:
            dropped = send(key)
        except Exception:  # the SDK refused it outright: no callback will come
            dropped = "rejected"
        if dropped is not None:
            ledger.settle(key, DROPPED, dropped)

    async def flush(self, timeout: float | None = None) -> bool:
        """Send what the SDK holds now; True when every event of ours is settled."""
        budget = self.close_timeout if timeout is None else timeout
        await run_in_daemon_thread(lambda: self._drain(budget), budget + 0.5, f"{self.name}-flush")
        return self.delivery.in_flight == 0

    async def aclose(self) -> None:
        """Drain and shut the client down within ``close_timeout``; write off what is left."""
        if self._closed:
            return
        self._closed = True
        budget = self.close_timeout

        def close() -> None:
            self._drain(budget * 0.8)
            if self._owns_client:
                self._shutdown()

        await run_in_daemon_thread(close, budget, f"{self.name}-close")
        self.delivery.write_off("unsent_at_close")

    async def __aenter__(self) -> AnalyticsSink:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
