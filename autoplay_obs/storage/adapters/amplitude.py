"""Write-only Amplitude sink on the official ``amplitude-analytics`` client.

User state becomes user properties (an ``$identify`` event with ``$set``);
each frozen session becomes an ``autoplay_session_captured`` event whose
``insert_id`` is derived from (product, user, session), so a retried session
end is deduplicated by Amplitude. Reads return ``None``.

Concurrency: ``save_*`` only hand the event to the SDK's in-memory buffer (no
network I/O, no waiting); the SDK's consumer thread batches and its thread
pool posts and retries. ``flush()`` and ``aclose()`` run the SDK's blocking
calls on a daemon thread and wait a bounded time.

Delivery accounting (``adapter.delivery``, a ``DeliveryLedger``) comes from the
SDK's per-event callback ``(event, status code, message)``: a 2xx is
``("delivered", "acknowledged")``, anything else ``failed`` with the status
(``http_500``, ``timeout`` for 408 and socket timeouts, ``connection_error``
for no response at all). What the SDK (amplitude-analytics 1.x) does not tell
us, and how it is accounted:

- No backpressure: new events are never refused, the buffer grows without
  bound while the endpoint is down. This adapter caps the events it has in
  flight at ``max_queue_size`` and counts the excess ``dropped/queue_full``.
  Retries are refused once the SDK buffer holds 20,000 events (reported with
  a callback: ``dropped/buffer_full``).
- Silent losses, no callback: a 400 "Invalid API key" (caught and logged); a
  response that is not JSON with a ``code`` (a proxy's HTML error page), or a
  connection dropped after the request was sent (the exception dies in a pool
  thread nobody reads); an event tracked after ``shutdown()`` (skipped with an
  info log — refused here first as ``dropped/closed``); an exception in a
  plugin. Such events stay ``in_flight`` and are written off at ``aclose()``
  as ``dropped/unsent_at_close``, never counted as delivered.
- ``shutdown()`` flushes once and stops; events that fail after that and are
  re-buffered for a retry are never sent and never called back. ``aclose()``
  flushes repeatedly (which also sends waiting retries at once) until every
  event is settled or ``close_timeout`` passes, then shuts down.
- The request timeout is the module constant
  ``amplitude.constants.CONNECTION_TIMEOUT`` (10 s), not a client option: a
  hung endpoint holds one of the SDK's 16 sender threads that long per try.
- Data fidelity, not delivery: the SDK cuts string values to 1,024 characters
  (a long ``onboarding_summary`` arrives truncated) and drops ``None`` event
  properties. Amplitude rejects user ids shorter than 5 characters unless told
  otherwise, so a client built here sends ``min_id_length=1``.
- ``client.identify(identify, EventOptions(callback=...))`` silently drops the
  per-event callback (only wire fields are copied), so the ``$identify``
  event is built here as an ``IdentifyEvent`` carrying its callback.
- Without ``aclose()`` the SDK's exit hook flushes once; retries pending at
  exit are lost.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from typing import Any

from autoplay_obs.errors import ConfigurationError, MissingDependencyError
from autoplay_obs.storage.adapters._analytics import (
    DELIVERED,
    DROPPED,
    FAILED,
    SESSION_EVENT,
    captured_at,
    http_reason,
    session_event_key,
    session_properties,
    unique_event_key,
    user_properties,
)
from autoplay_obs.storage.adapters._sink import AnalyticsSink

__all__ = ["AmplitudeStorageAdapter"]


class AmplitudeStorageAdapter(AnalyticsSink):
    """Mirror user state and session snapshots into Amplitude; never read back.

    Give ``api_key`` (with ``server_zone="EU"`` for EU residency, or a
    ``server_url``), or a ready ``client`` (an ``amplitude.Amplitude``, left
    open on close). The batching knobs configure the client built here.
    """

    name = "amplitude"

    def __init__(
        self,
        api_key: str | None = None,
        *,
        server_url: str | None = None,
        server_zone: str = "US",
        use_batch: bool = False,
        property_prefix: str | None = None,
        client: Any | None = None,
        flush_interval: float = 5.0,
        flush_at: int = 200,
        max_queue_size: int = 10_000,
        max_retries: int = 3,
        min_id_length: int | None = 1,
        close_timeout: float = 5.0,
    ) -> None:
        try:
            import amplitude  # type: ignore[import-untyped]
        except ImportError as exc:
            raise MissingDependencyError("AmplitudeStorageAdapter", "analytics") from exc
        if (api_key is None) == (client is None):
            raise ConfigurationError("AmplitudeStorageAdapter needs exactly one of api_key= or client=")
        if server_zone not in ("US", "EU"):
            raise ConfigurationError(f'server_zone must be "US" or "EU", got {server_zone!r}')
        super().__init__(
            property_prefix=property_prefix, close_timeout=close_timeout, owns_client=client is None
        )
        self.max_queue_size = max_queue_size
        self._amplitude = amplitude
        if client is None:
            log_levels = getattr(amplitude, "EventLogLevel", None)
            options: dict[str, Any] = {
                "flush_queue_size": max(1, flush_at),
                "flush_interval_millis": max(1, int(flush_interval * 1000)),
                # The SDK counts attempts, not retries.
                "flush_max_retries": max(0, max_retries) + 1,
                "min_id_length": min_id_length,
                "server_zone": server_zone,
                "use_batch": use_batch,
                "server_url": server_url,
                # The SDK logs every event sent at INFO by default; the ledger counts them instead.
                "event_log_level": None if log_levels is None else log_levels.DEBUG,
            }
            accepted = inspect.signature(amplitude.Config.__init__).parameters
            config = amplitude.Config(**{k: v for k, v in options.items() if k in accepted and v is not None})
            client = amplitude.Amplitude(api_key, config)
        self.client = client
        ledger = self.delivery

        # A plain function, not a bound method: the SDK deep-copies each event
        # (callback included) on its way to the buffer.
        def on_result(event: Any, code: int, message: str | None = None) -> None:
            key = str(event["insert_id"])
            if 200 <= code < 300:
                ledger.settle(key, DELIVERED, "acknowledged")
            elif (message or "").startswith("Destination buffer full"):
                ledger.settle(key, DROPPED, "buffer_full")
            else:
                ledger.settle(key, FAILED, http_reason(code))

        self._on_result = on_result

    def _endpoint(self) -> str:
        return str(getattr(getattr(self.client, "configuration", None), "server_url", "") or "")

    # -- the adapter Protocol ---------------------------------------------------

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        """Buffer an ``$identify`` that sets the user's properties."""
        properties = user_properties(product_id, state, self.property_prefix)
        amplitude = self._amplitude

        def send(key: str) -> str | None:
            identify = amplitude.Identify()
            for name, value in properties.items():
                identify.set(name, value)
            # Built directly: ``client.identify(..., EventOptions(callback=...))`` drops the callback.
            event = amplitude.IdentifyEvent(
                user_id=user_id,
                insert_id=key,
                user_properties=identify.user_properties,
                callback=self._on_result,
            )
            self.client.track(event)
            return None

        self._enqueue(unique_event_key(), properties, send)

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        """Buffer the session event, keyed by the session for deduplication."""
        properties = session_properties(product_id, session_id, snapshot)
        at = captured_at(snapshot)
        amplitude = self._amplitude

        def send(key: str) -> str | None:
            event = amplitude.BaseEvent(
                event_type=SESSION_EVENT,
                user_id=user_id,
                event_properties=properties,
                insert_id=key,
                time=None if at is None else int(at * 1000),
                callback=self._on_result,
            )
            self.client.track(event)
            return None

        self._enqueue(session_event_key(product_id, user_id, session_id), properties, send)

    def _refusal(self) -> str | None:
        if getattr(getattr(self.client, "configuration", None), "opt_out", False):
            return "closed"
        if self.delivery.in_flight >= self.max_queue_size:
            return "queue_full"
        return None

    # -- lifecycle ----------------------------------------------------------

    def _drain(self, budget: float) -> None:
        """Flush until every event of ours is settled or the budget is spent (blocking)."""
        deadline = time.monotonic() + budget
        while self.delivery.in_flight and time.monotonic() < deadline:
            for future in self.client.flush() or ():
                if future is None:
                    continue
                # A timed-out wait or a send that raised: the ledger says which events settled.
                with contextlib.suppress(Exception):
                    future.result(timeout=max(0.0, deadline - time.monotonic()))
            if self.delivery.in_flight:
                time.sleep(0.02)

    def _shutdown(self) -> None:
        self.client.shutdown()
