"""Write-only PostHog sink on the official ``posthog`` client.

User state becomes person properties (a ``$set`` event); each frozen session
becomes an ``autoplay_session_captured`` event whose ``uuid`` is derived from
(product, user, session), so a retried session end is deduplicated by PostHog.
Reads return ``None``.

Concurrency: ``save_*`` only put the event on the SDK's in-memory queue (no
network I/O, no waiting); the SDK's consumer thread batches, gzips, posts and
retries. ``flush()`` and ``aclose()`` run the SDK's blocking calls on a
daemon thread and wait a bounded time.

Delivery accounting (``adapter.delivery``, a ``DeliveryLedger``) uses only the
SDK's public callback and methods (posthog-python 7.x, ``/batch/`` protocol);
what it does not tell us:

- There is no success callback. ``on_error(exc, batch)`` names the events of
  a batch that finally failed; the rest are *inferred* delivered once a
  ``flush()`` has seen the client's queue drain (``client.queue.join()``:
  every event taken was posted or reported failed, ``on_error`` running
  first) -- counted ``("delivered", "inferred")``. Between flushes an event
  stays ``in_flight``; ``flush()`` and ``aclose()`` settle it.
- An injected client calls the ``on_error`` it was built with; the adapter
  cannot hook it afterwards without the SDK's internals. Build it with
  ``on_error=PostHogDeliveryHook()`` and pass the hook as ``on_error_hook=``
  to count its failures; without one, drained events are counted
  ``("delivered", "unverified")`` (failures included).
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
  therefore drains first within ``close_timeout``, shuts down on a daemon
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
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from autoplay_obs.errors import ConfigurationError, MissingDependencyError
from autoplay_obs.storage.adapters._analytics import (
    DELIVERED,
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

__all__ = ["PostHogDeliveryHook", "PostHogStorageAdapter"]


class PostHogDeliveryHook:
    """An ``on_error`` for a PostHog client you build yourself: counts its failures for the adapter.

    ``posthog.Posthog(key, on_error=hook)``, then
    ``PostHogStorageAdapter(client=client, on_error_hook=hook)``; ``then`` is
    called after it (your own handler).
    """

    def __init__(self, then: Callable[[BaseException, Any], None] | None = None) -> None:
        self.then = then
        self.adapter: PostHogStorageAdapter | None = None

    def __call__(self, error: BaseException, batch: Any) -> None:
        if self.adapter is not None:
            self.adapter._on_error(error, batch)
        if self.then is not None:
            self.then(error, batch)


class PostHogStorageAdapter(AnalyticsSink):
    """Mirror user state and session snapshots into PostHog; never read back.

    Give ``api_key`` (and ``host`` for EU cloud or self-hosted), or a ready
    ``client`` (a ``posthog.Posthog``, left open on close; see
    ``PostHogDeliveryHook`` to count its failures). The batching knobs are
    passed to the SDK client this adapter builds.
    """

    name = "posthog"

    def __init__(
        self,
        api_key: str | None = None,
        *,
        host: str | None = None,
        property_prefix: str | None = None,
        client: Any | None = None,
        on_error_hook: PostHogDeliveryHook | None = None,
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
        super().__init__(
            property_prefix=property_prefix, close_timeout=close_timeout, owns_client=client is None
        )
        self._counts_failures = client is None or on_error_hook is not None
        if on_error_hook is not None:
            on_error_hook.adapter = self
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
        self.client = client
        _warm_up()

    # -- SDK hooks (run on the SDK's consumer thread) ------------------------

    def _on_error(self, error: BaseException, batch: Any) -> None:
        reason = _reason(error)
        keys = [str(msg["uuid"]) for msg in batch or () if isinstance(msg, dict) and msg.get("uuid")]
        self.delivery.settle_many(keys, FAILED, reason)

    # -- the adapter Protocol ---------------------------------------------------

    def _endpoint(self) -> str:
        return str(getattr(self.client, "host", "") or "")

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        """Queue a ``$set`` of the user's person properties."""
        properties = user_properties(product_id, state, self.property_prefix)
        self._enqueue(
            unique_event_key(),
            properties,
            lambda key: self._accepted(self.client.set(distinct_id=user_id, properties=properties, uuid=key)),
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
            lambda key: self._accepted(
                self.client.capture(
                    SESSION_EVENT, distinct_id=user_id, properties=properties, uuid=key, timestamp=timestamp
                )
            ),
        )

    def _accepted(self, reply: Any) -> str | None:
        """The drop reason for what ``capture()`` / ``set()`` returned (None: queued)."""
        if reply is None:
            client = self.client
            if getattr(client, "disabled", False):
                return "disabled"
            queue = getattr(client, "queue", None)
            if queue is not None and queue.full():
                return "queue_full"
            return "rejected"
        if not getattr(self.client, "send", True):
            return "send_disabled"
        return None

    # -- draining -------------------------------------------------------------

    def _drain(self, budget: float) -> None:
        """Flush, wait for the queue to drain, settle what was handed over before as delivered."""
        deadline = time.monotonic() + budget
        handed_over = self.delivery.pending_keys()
        _flush(self.client, budget)
        queue = getattr(self.client, "queue", None)
        if queue is None or not handed_over:
            return
        drained = threading.Event()

        def join() -> None:  # Queue.join has no timeout: waited on from a thread of its own
            queue.join()
            drained.set()

        threading.Thread(target=join, name="posthog-join", daemon=True).start()
        if drained.wait(max(0.0, deadline - time.monotonic())):
            reason = "inferred" if self._counts_failures else "unverified"
            self.delivery.settle_many(handed_over, DELIVERED, reason)

    def _shutdown(self) -> None:
        self.client.shutdown()


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
