"""Replaying the outbox: session ends the primary did not acknowledge, merged once it answers.

Decisions:
- A replay is the session end itself (the lifecycle's freeze + merge, told
  not to queue again), on the primary's current state: never on a stand-in.
  Both steps are idempotent (``SET NX``; a session already in the index is a
  no-op), so an entry replayed twice -- by two processes after a lapsed
  lease, or after a lost reply -- still counts once.
- Oldest first per user: a claim hands out each user's oldest entry only, so
  a user's sessions merge in the order they ended.
- An entry whose document is refused (unknown ``_v``, unreadable) is parked,
  not retried forever. A primary that fails stops the round; the entry goes
  back with its attempt counted and the loop backs off (capped, jittered).
- The background loop runs while the manager lives (started by its first
  lifecycle call, so entries an earlier process left are replayed too) and
  stops at ``aclose()``. ``flush_outbox()`` replays on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from autoplay_obs.errors import DocumentError, OutboxError, StorageError, UserErasedError
from autoplay_obs.storage._outbox import Outbox
from autoplay_obs.storage._outbox_types import OutboxEntry
from autoplay_obs.storage._results import SessionEndResult
from autoplay_obs.telemetry import _hooks as telemetry
from autoplay_obs.user_adoption_state import decode_session_snapshot

__all__ = ["FlushResult", "Replayer"]

logger = logging.getLogger("autoplay_obs")
Replay = Callable[[OutboxEntry], Awaitable[SessionEndResult]]
LEASE_S: Final = 30.0
BATCH: Final = 100


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What one replay round did, and what is left."""

    replayed: int
    remaining: int
    parked: int
    dropped: int
    """Entries dropped by the outbox's bounds in this process so far."""


class Replayer:
    """Drains one outbox into the primary, in the background and on demand."""

    def __init__(self, outbox: Outbox, replay: Replay, *, interval: float, max_backoff: float) -> None:
        self.outbox = outbox
        self._replay = replay
        self._interval = interval
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._reported: Counter[str] = Counter()

    def ensure_running(self) -> None:
        """Start the background loop on the running event loop (once)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="autoplay_obs outbox replay"
            )

    def wake(self) -> None:
        """Something was queued: count what its bounds dropped, and look sooner than the poll interval."""
        self._note_drops()
        self._wake.set()

    def _note_drops(self) -> None:
        """Report the outbox's drops (at puts, claims and expiry) once each."""
        now: Counter[str] = Counter({str(reason): n for reason, n in self.outbox.dropped.items()})
        telemetry.outbox_dropped(now - self._reported)
        self._reported = now

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def flush(self) -> FlushResult:
        """Replay until the outbox is empty or the primary fails."""
        async with self._lock:  # one round at a time in this process
            replayed = parked = 0
            while True:
                entries = await self.outbox.claim(BATCH, LEASE_S)
                if not entries:
                    break
                done, stopped = await self._round(entries)
                replayed += done[0]
                parked += done[1]
                if stopped:
                    break
            status = await self.outbox.status()
            telemetry.outbox_status(status.depth, status.oldest_age_s)
            self._note_drops()
            return FlushResult(replayed, status.pending, parked, sum(self.outbox.dropped.values()))

    async def _round(self, entries: list[OutboxEntry]) -> tuple[tuple[int, int], bool]:
        """Replay claimed entries; on a primary failure hand the rest back and stop."""
        replayed = parked = 0
        for i, entry in enumerate(entries):
            outcome = await self._one(entry)
            if outcome == "replayed":
                replayed += 1
            elif outcome == "parked":
                parked += 1
            else:
                for rest in entries[i + 1 :]:
                    await self.outbox.release(rest.id, "not tried: the primary failed", retry_after_s=0.0)
                return (replayed, parked), True
        return (replayed, parked), False

    async def _one(self, entry: OutboxEntry) -> str:
        with telemetry.outbox_replay(entry.span_context(), entry.attempts) as span:
            outcome, reason = await self._settle(entry)
            span.finish(outcome, reason)
        return outcome

    async def _settle(self, entry: OutboxEntry) -> tuple[str, str | None]:
        """Replay one entry and settle it in the outbox: replayed (acked), parked, or failed."""
        try:
            decode_session_snapshot(entry.snapshot)
        except DocumentError as exc:
            await self.outbox.park(entry.id, f"snapshot refused: {type(exc).__name__}: {exc}")
            return "parked", "snapshot_refused"
        try:
            result = await self._replay(entry)
            error: BaseException | None = None if result.persisted else result.error
        except (StorageError, DocumentError) as exc:  # raised before the lifecycle could report it
            error = exc
        if error is None or isinstance(error, UserErasedError):  # erased: nothing left to replay into
            await self.outbox.ack([entry.id])
            return "replayed", None
        if isinstance(error, DocumentError):
            await self.outbox.park(entry.id, f"state refused: {type(error).__name__}: {error}")
            return "parked", "state_refused"
        await self.outbox.release(entry.id, f"{type(error).__name__}: {error}")
        return "failed", type(error).__name__

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                result = await self.flush()
                failures = failures + 1 if result.remaining else 0
            except OutboxError as exc:  # the file itself: keep trying, quietly
                failures += 1
                logger.warning("outbox replay failed: %s", type(exc).__name__)
            except Exception:  # never let the loop die on an unexpected error
                failures += 1
                logger.exception("outbox replay failed unexpectedly")
            self._wake.clear()
            if failures:  # the primary is away: back off, whatever is queued meanwhile
                await asyncio.sleep(min(self._max_backoff, 0.1 * 2**failures) * random.uniform(0.5, 1.0))
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
