"""Write-only PostHog sink on the official ``posthog`` client.

User state becomes person properties (a ``$set`` event); each frozen session
becomes an ``autoplay_session_captured`` event whose ``uuid`` is derived from
(product, user, session), so a retried session end is deduplicated by PostHog.
Reads return ``None``.

Concurrency: ``save_*`` only put the event on the SDK's in-memory queue (no
network I/O, no waiting); the SDK's consumer thread batches, gzips, posts and
retries. ``flush()`` and ``aclose()`` run the SDK's blocking calls on a
daemon thread and wait a bounded time.

Delivery accounting (``adapter.delivery``, a ``DeliveryLedger``) and what the
SDK (posthog-python, ``/batch/`` protocol) does not tell us:

- There is no success callback. ``on_error(exc, batch)`` names the events of
  a batch that finally failed; everything else is *inferred* delivered when
  the SDK's queue has fully drained (every queued event was taken, posted or
  reported failed) — counted ``("delivered", "inferred")``. Until such a
  moment an event is ``in_flight``; ``flush()`` creates one.
- ``capture()`` returns ``None`` instead of calling back when the queue is full
  (it only logs), when the client is shut down or disabled (empty API key), or
  when a ``before_send`` hook drops the event: counted ``dropped`` with reason
  ``queue_full`` / ``closed`` / ``disabled`` / ``rejected``.
- The consumer drops an event over 900 KiB with only a log line and then
  acknowledges it, which would read as delivered: events over
  ``MAX_EVENT_BYTES`` are refused before queueing (``dropped/too_large``).
- Only HTTP 200 is success. 4xx other than 408/429 is not retried; 5xx and
  network errors are retried ``max_retries`` times with backoff of 1, 2, 4 s
  (capped) on the consumer thread, stalling the queue behind that batch; a
  failure fails the whole batch.
- ``shutdown()`` drains with no time limit, yet lets each consumer send only
  one more batch and silently discards the rest of the queue. ``aclose()``
  therefore flushes first within ``close_timeout``, shuts down on a daemon
  thread, and writes off what is still unsettled as
  ``dropped/unsent_at_close`` (a later callback for it counts as ``late``).
- The capture-v1 protocol (``POSTHOG_CAPTURE_MODE=v1``) reports per-event
  drops as one error for the whole batch; a client built here is pinned to the
  ``/batch/`` protocol so ``on_error`` names exactly the failed events.
- Without ``aclose()`` the SDK's exit hook tries for about one second; events
  still queued after that are lost without a trace.
"""

from __future__ import annotations

import inspect
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from autoplay_obs.errors import ConfigurationError, MissingDependencyError
from autoplay_obs.storage.adapters._analytics import (
    DROPPED,
    FAILED,
    MAX_EVENT_BYTES,
    SESSION_EVENT,
    DeliveryLedger,
    captured_at,
    event_size,
    http_reason,
    run_in_daemon_thread,
    session_event_key,
    session_properties,
    unique_event_key,
    user_properties,
)

__all__ = ["PostHogStorageAdapter"]


class PostHogStorageAdapter:
    """Mirror user state and session snapshots into PostHog; never read back.

    Give ``api_key`` (and ``host`` for EU cloud or self-hosted), or a ready
    ``client`` (a ``posthog.Posthog``; the adapter chains its own ``on_error``
    and leaves the client open on close). The batching knobs are passed to the
    SDK client this adapter builds.
    """

    name = "posthog"
    readable = False  # write-only: never in the primary's place

    def __init__(
        self,
        api_key: str | None = None,
        *,
        host: str | None = None,
        property_prefix: str | None = None,
        client: Any | None = None,
        flush_interval: float = 5.0,
        flush_at: int = 100,
        max_queue_size: int = 10_000,
        max_retries: int = 3,
        timeout: float = 10.0,
        gzip: bool = True,
        close_timeout: float = 5.0,
    ) -> None:
        try:
            import posthog
        except ImportError as exc:
            raise MissingDependencyError("PostHogStorageAdapter", "analytics") from exc
        if (api_key is None) == (client is None):
            raise ConfigurationError("PostHogStorageAdapter needs exactly one of api_key= or client=")
        if client is not None and getattr(client, "sync_mode", False):
            raise ConfigurationError(
                "PostHogStorageAdapter cannot use a client in sync_mode: it would post on the event loop"
            )
        self.property_prefix = property_prefix or None
        self.close_timeout = close_timeout
        self.delivery = DeliveryLedger(self.name)
        self._closed = False
        self._owns_client = client is None
        if client is None:
            options: dict[str, Any] = {
                "host": host,
                "on_error": self._on_error,
                "flush_interval": flush_interval,
                "flush_at": flush_at,
                "max_queue_size": max_queue_size,
                "max_retries": max_retries,
                "timeout": timeout,
                "gzip": gzip,
                "sync_mode": False,
                "capture_mode": "v0",
                "enable_local_evaluation": False,
            }
            assert api_key is not None
            accepted = inspect.signature(posthog.Posthog.__init__).parameters
            client = posthog.Posthog(api_key, **{k: v for k, v in options.items() if k in accepted})
        else:
            self._chain_on_error(client)
        self.client = client
        _warm_up()
        self.delivery.set_probe(self._idle)

    # -- SDK hooks (run on the SDK's consumer thread) ------------------------

    def _on_error(self, error: BaseException, batch: Any) -> None:
        reason = _reason(error)
        keys = [str(msg["uuid"]) for msg in batch or () if isinstance(msg, dict) and msg.get("uuid")]
        self.delivery.settle_many(keys, FAILED, reason)

    def _chain_on_error(self, client: Any) -> None:
        """Hook an injected client's failure callback, keeping the one it had."""
        previous = getattr(client, "on_error", None)

        def on_error(error: BaseException, batch: Any) -> None:
            self._on_error(error, batch)
            if callable(previous):
                previous(error, batch)

        client.on_error = on_error
        lane = getattr(client, "_analytics_lane", None)
        if lane is not None:  # consumers started later read the lane's callback
            lane.on_error = on_error
        for consumer in getattr(client, "consumers", None) or ():
            consumer.on_error = on_error

    def _idle(self) -> bool:
        """Every event ever queued was posted or reported failed (on_error runs before task_done)."""
        queue = getattr(self.client, "queue", None)
        return queue is not None and queue.unfinished_tasks == 0

    # -- the adapter Protocol ---------------------------------------------------

    def describe(self) -> dict[str, Any]:
        parts = urlsplit(str(getattr(self.client, "host", "") or ""))
        described: dict[str, Any] = {}
        if parts.hostname:
            described["server.address"] = parts.hostname
            described["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
        return described

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        """Queue a ``$set`` of the user's person properties."""
        properties = user_properties(product_id, state, self.property_prefix)
        self._enqueue(
            unique_event_key(),
            properties,
            lambda key: self.client.set(distinct_id=user_id, properties=properties, uuid=key),
        )

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        """Queue the session event, keyed by the session for deduplication."""
        properties = session_properties(product_id, session_id, snapshot)
        at = captured_at(snapshot)
        timestamp = None if at is None else datetime.fromtimestamp(at, tz=timezone.utc)
        self._enqueue(
            session_event_key(product_id, user_id, session_id),
            properties,
            lambda key: self.client.capture(
                SESSION_EVENT, distinct_id=user_id, properties=properties, uuid=key, timestamp=timestamp
            ),
        )

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        return None  # write-only: the data is read in PostHog

    async def get_session_snapshot(
        self, product_id: str, user_id: str, session_id: str
    ) -> dict[str, Any] | None:
        return None

    def _enqueue(self, key: str, properties: dict[str, Any], capture: Any) -> None:
        ledger = self.delivery
        if self._closed:
            ledger.refuse(key, "closed")
            return
        if event_size(properties) > MAX_EVENT_BYTES:
            ledger.refuse(key, "too_large")
            return
        # Held across capture(): a concurrent probe must not see the queue idle
        # between counting the event and queueing it.
        with ledger.lock:
            ledger.infer()
            ledger.begin(key)
            accepted = capture(key)
            if accepted is None:
                ledger.settle(key, DROPPED, self._refusal())
            elif not getattr(self.client, "send", True):
                ledger.settle(key, DROPPED, "send_disabled")

    def _refusal(self) -> str:
        client = self.client
        if getattr(client, "disabled", False):
            return "disabled"
        lane = getattr(client, "_analytics_lane", None)
        if lane is not None and getattr(lane, "_closed", False):
            return "closed"
        queue = getattr(client, "queue", None)
        if queue is not None and queue.full():
            return "queue_full"
        return "rejected"

    # -- lifecycle ----------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> bool:
        """Ask the SDK to send what it holds now; True when it drained in time.

        Delivery of the drained events is then settled (as inferred delivered,
        unless ``on_error`` named them).
        """
        budget = self.close_timeout if timeout is None else timeout
        drained = await run_in_daemon_thread(
            lambda: _flush(self.client, budget), budget + 0.5, "posthog-flush"
        )
        if not self._closed:
            self.delivery.infer()
        return drained and self.delivery.in_flight == 0

    async def aclose(self) -> None:
        """Flush and shut the client down within ``close_timeout``; write off what is left."""
        if self._closed:
            return
        self._closed = True
        budget = self.close_timeout

        def close() -> None:
            _flush(self.client, budget * 0.8)
            with self.delivery.lock:
                self.delivery.infer()
                # From here an idle queue no longer means "posted": shutdown discards.
                self.delivery.set_probe(None)
            if self._owns_client:
                self.client.shutdown()

        await run_in_daemon_thread(close, budget, "posthog-close")
        self.delivery.set_probe(None)
        self.delivery.write_off("unsent_at_close")

    async def __aenter__(self) -> PostHogStorageAdapter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _warm_up() -> None:
    """Detect the OS once now: the SDK does it on the first capture, which would stall the loop."""
    try:
        from posthog.utils import system_context

        system_context()
    except Exception:  # an SDK without it just pays on first capture
        pass


def _flush(client: Any, timeout: float) -> None:
    try:
        client.flush(timeout_seconds=timeout)
    except TypeError:  # older SDKs: flush() without a time limit
        client.flush()


def _reason(error: BaseException) -> str:
    """A bounded label for what ``on_error`` reported."""
    status = getattr(error, "status", None)
    if isinstance(status, int):
        return http_reason(status)
    try:
        import requests
    except ImportError:  # pragma: no cover - posthog depends on requests
        return type(error).__name__
    if isinstance(error, requests.exceptions.Timeout):
        return "timeout"
    if isinstance(error, requests.exceptions.ConnectionError):
        return "connection_error"
    return type(error).__name__
