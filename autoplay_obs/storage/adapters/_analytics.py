"""What the PostHog and Amplitude sinks share: projection, idempotency keys, delivery accounting.

Decisions:
- The sinks read the plain JSON documents (``to_dict()``), never the model
  classes, and tolerate documents in the wild: a missing or mistyped field
  becomes ``None`` / an empty list instead of an error on an SDK thread.
- Property names follow the reference SDK (``journey_state``,
  ``completed_workflows``, ...), so dashboards built on it keep working. The
  optional prefix (``"ap"`` -> ``ap_journey_state``) namespaces the *person /
  user* properties, which share one namespace per analytics project; the
  session event's own properties are scoped by the event name and are not
  prefixed (as in the reference SDK).
- A session event's idempotency key is a UUIDv5 of (product id, user id,
  session id), JSON-encoded so that no two distinct triples can collide
  whatever characters the ids contain. PostHog takes it as the event ``uuid``,
  Amplitude as ``insert_id``: a retried session end is deduplicated
  downstream, and the same session carries the same key in both tools.
- ``DeliveryLedger`` settles every event handed to an SDK exactly once, as
  delivered, failed or dropped, each with a bounded reason label; until then
  it is in flight. So ``enqueued == delivered + failed + dropped + in_flight``
  holds at every instant, and ``in_flight`` is 0 after ``aclose()``. A
  callback for an event already written off (at close) is counted as ``late``,
  outside that sum, instead of being counted twice. Callbacks run on SDK
  threads, so the ledger is guarded by a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from autoplay_obs.telemetry import _hooks as telemetry

__all__ = [
    "DELIVERED",
    "DROPPED",
    "ENQUEUED",
    "FAILED",
    "IN_FLIGHT",
    "LATE",
    "MAX_EVENT_BYTES",
    "SESSION_EVENT",
    "DeliveryLedger",
    "event_size",
    "http_reason",
    "run_in_daemon_thread",
    "session_event_key",
    "session_properties",
    "unique_event_key",
    "user_properties",
    "workflow_ids",
]

logger = logging.getLogger("autoplay_obs.storage.sinks")

SESSION_EVENT: Final = "autoplay_session_captured"
# PostHog's consumer silently drops events over 900 KiB after acknowledging them,
# which would read as delivered; refuse anything near that before it is queued.
MAX_EVENT_BYTES: Final = 512 * 1024

ENQUEUED: Final = "enqueued"
DELIVERED: Final = "delivered"
FAILED: Final = "failed"
DROPPED: Final = "dropped"
IN_FLIGHT: Final = "in_flight"
LATE: Final = "late"

_KEY_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "autoplay-obs:" + SESSION_EVENT)


_RANDOM_BASE = uuid.uuid4().int
_sequence = itertools.count()


def _reseed() -> None:
    """A forked worker (gunicorn --preload, Celery prefork) draws its own base."""
    global _RANDOM_BASE, _sequence
    _RANDOM_BASE, _sequence = uuid.uuid4().int, itertools.count()


os.register_at_fork(after_in_child=_reseed)


def unique_event_key() -> str:
    """A fresh random-looking UUID for an event with no natural key (a state mirror).

    One random base per process plus a counter: unique without reading the
    OS's entropy per event, a syscall that would give up the GIL on the event
    loop to the SDK threads at every call.
    """
    return str(uuid.UUID(int=_RANDOM_BASE ^ next(_sequence), version=4))


def session_event_key(product_id: str, user_id: str, session_id: str) -> str:
    """The session event's idempotency key: the same triple always gives the same UUID."""
    return str(uuid.uuid5(_KEY_NAMESPACE, json.dumps([product_id, user_id, session_id])))


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str_list(value: object) -> list[str]:
    if not isinstance(value, (list, tuple)):
        return []
    return [str(item) for item in value if isinstance(item, (str, int, float))]


def workflow_ids(state: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(completed, in progress) workflow ids of a user-state document, in stored order."""
    completed: list[str] = []
    in_progress: list[str] = []
    progress = _mapping(_mapping(state.get("onboarding")).get("workflow_progress"))
    for workflow_id, belief in progress.items():
        status = _mapping(belief).get("status")
        if status == "completed":
            completed.append(str(workflow_id))
        elif status == "in_progress":
            in_progress.append(str(workflow_id))
    return completed, in_progress


def user_properties(product_id: str, state: Mapping[str, Any], prefix: str | None) -> dict[str, Any]:
    """The person / user properties mirrored from a user-state document."""
    onboarding = _mapping(state.get("onboarding"))
    mastery = _mapping(state.get("mastery"))
    sessions = _mapping(state.get("sessions"))
    completed, in_progress = workflow_ids(state)
    head = f"{prefix}_" if prefix else ""
    values = {
        "product_id": product_id,
        "journey_state": state.get("journey_state"),
        "mastery_level": mastery.get("level"),
        "mastery_rating": mastery.get("rating"),
        "is_onboarded": onboarding.get("onboarding_completed_at") is not None,
        "onboarding_summary": onboarding.get("summary"),
        "completion_rate": onboarding.get("completion_rate"),
        "session_count": sessions.get("count"),
        "completed_workflows": completed,
        "in_progress_workflows": in_progress,
    }
    return {head + name: value for name, value in values.items()}


def session_properties(product_id: str, session_id: str, snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """The properties of the ``autoplay_session_captured`` event for one snapshot."""
    return {
        "product_id": product_id,
        "session_id": session_id,
        "session_number": snapshot.get("session_number"),
        "duration_s": snapshot.get("duration_s"),
        "completion_rate": snapshot.get("completion_rate"),
        "completed_workflow_ids": _str_list(snapshot.get("completed_workflow_ids")),
        "in_progress_workflow_ids": _str_list(snapshot.get("in_progress_workflow_ids")),
        "mastery_level": _mapping(snapshot.get("mastery")).get("level"),
        "reached_onboarding_complete": bool(snapshot.get("reached_onboarding_complete")),
    }


def captured_at(snapshot: Mapping[str, Any]) -> float | None:
    """The snapshot's capture time, when it is a usable unix timestamp."""
    value = snapshot.get("captured_at")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e11:
        return float(value)
    return None


def event_size(properties: Mapping[str, Any]) -> int:
    """Bytes of the properties as JSON (what dominates an event's size on the wire)."""
    return len(json.dumps(properties, default=str))


def http_reason(status: int) -> str:
    """A bounded failure label for an HTTP status (``-1``: no response at all)."""
    if status == 408:
        return "timeout"
    if status < 100:
        return "connection_error"
    return f"http_{status}"


class DeliveryLedger:
    """Per-sink delivery counters, keyed by ``(outcome, reason)``; safe to call from any thread."""

    def __init__(self, sink: str) -> None:
        self.sink = sink
        self.lock = threading.RLock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._pending: Counter[str] = Counter()
        self._written_off: Counter[str] = Counter()
        telemetry.register_delivery_ledger(self)

    @property
    def counts(self) -> Counter[tuple[str, str]]:
        """The live settled counters (no in-flight entry); read them under ``lock``."""
        return self._counts

    def pending_keys(self) -> list[str]:
        """The keys in flight now, each as often as it is in flight."""
        with self.lock:
            return list(self._pending.elements())

    @property
    def in_flight(self) -> int:
        with self.lock:
            return self._pending.total()

    def begin(self, key: str) -> None:
        """An event is being handed to the SDK: counted as enqueued, in flight until settled."""
        with self.lock:
            self._counts[(ENQUEUED, "")] += 1
            self._pending[key] += 1

    def settle(self, key: str, outcome: str, reason: str = "") -> bool:
        """Settle one in-flight event; False when it is not in flight.

        An event already written off is counted as ``late``; a key this ledger
        never saw (another user of a shared SDK client) is ignored.
        """
        with self.lock:
            if self._pending[key] > 0:
                self._pending[key] -= 1
                if not self._pending[key]:
                    del self._pending[key]
                self._counts[(outcome, reason)] += 1
                return True
            if self._written_off[key] > 0:
                self._written_off[key] -= 1
                self._counts[(LATE, outcome)] += 1
            return False

    def settle_many(self, keys: Iterable[str], outcome: str, reason: str = "") -> None:
        with self.lock:
            for key in keys:
                self.settle(key, outcome, reason)

    def refuse(self, key: str, reason: str) -> None:
        """An event the SDK never took: enqueued and dropped at once."""
        with self.lock:
            self.begin(key)
            self.settle(key, DROPPED, reason)

    def write_off(self, reason: str) -> int:
        """Settle whatever is still in flight as dropped (the sink is closed and gave up on it)."""
        with self.lock:
            self._written_off.update(self._pending)
            return self._settle_all(DROPPED, reason)

    def _settle_all(self, outcome: str, reason: str) -> int:
        count = self._pending.total()
        if count:
            self._counts[(outcome, reason)] += count
            self._pending.clear()
        return count

    def snapshot(self) -> dict[tuple[str, str], int]:
        """All counters, plus ``("in_flight", "")``."""
        with self.lock:
            counts = {(ENQUEUED, ""): 0, **self._counts}
            counts[(IN_FLIGHT, "")] = self._pending.total()
            return counts

    def totals(self) -> dict[str, int]:
        """Counts per outcome, reasons summed (``late`` is kept apart from the others)."""
        totals = dict.fromkeys((ENQUEUED, DELIVERED, FAILED, DROPPED, IN_FLIGHT, LATE), 0)
        for (outcome, _reason), count in self.snapshot().items():
            totals[outcome] = totals.get(outcome, 0) + count
        return totals


async def run_in_daemon_thread(work: Callable[[], None], timeout: float, name: str) -> bool:
    """Run blocking SDK work off the event loop; True if it finished within ``timeout``.

    A daemon thread rather than ``asyncio.to_thread``: SDK flush and shutdown
    calls can block far past any timeout (a hung endpoint), and a stuck
    default-executor thread would then also block ``asyncio.run()`` from
    returning. A daemon thread is simply abandoned.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish() -> None:
        if not done.done():
            done.set_result(None)

    def target() -> None:
        try:
            work()
        except Exception:
            logger.exception("%s failed", name)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is gone; nobody is waiting any more
                loop.call_soon_threadsafe(finish)

    threading.Thread(target=target, name=name, daemon=True).start()
    try:
        await asyncio.wait_for(asyncio.shield(done), max(0.0, timeout))
    except asyncio.TimeoutError:
        logger.warning("%s did not finish within %.1fs", name, timeout)
        return False
    return True
