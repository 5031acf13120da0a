"""Users running start+end pairs against the cluster while a test breaks it, and what they were told.

Decisions:
- Every lifecycle call runs under ``asyncio.wait_for(..., bound)``; one that
  overruns fails the test (``CallOverran``), so "every call returns within
  its bound" is checked on every call, not sampled.
- A pair is retried until the cluster accepts it, as a host would: the start
  until it is persisted, then the end of the same snapshot until it is
  persisted (a retry of an end that landed but was not acknowledged is
  reported as a duplicate and counts once). Retrying stops with a failure
  after ``give_up_s``, so a cluster that never recovers cannot hang the suite.
- The ledger records each end acknowledged with ``persisted=True``, which is
  what the host was promised; ``lost`` compares it with what is stored once
  the cluster has settled.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from autoplay_obs.storage import SessionEndResult, StorageManager, end_session, start_session
from autoplay_obs.user_adoption_state import SessionSnapshot

T = TypeVar("T")
INDEX_CAP = 50  # the state's index keeps the newest 50 sessions


class CallOverran(AssertionError):
    """A lifecycle call did not return within its bound."""


class NeverRecovered(AssertionError):
    """A pair kept failing for longer than the load was willing to retry."""


@dataclass
class Ledger:
    """What each user was told: sessions acknowledged as persisted, and how many calls failed."""

    acknowledged: dict[str, list[str]] = field(default_factory=dict)
    failed_calls: int = 0
    calls: int = 0
    slowest_s: float = 0.0
    duplicates: set[tuple[str, str]] = field(default_factory=set)
    """(user, session) whose acknowledged end was a retry that found the session counted."""
    missing: dict[tuple[str, str], str] = field(default_factory=dict)
    """Filled by ``Load.lost``: what of each lost session is missing ("state", "snapshot")."""
    errors: dict[str, int] = field(default_factory=dict)
    """Each failed call's error, by its text (ids and ports stripped), with how often it came."""

    def pairs(self, user: str) -> int:
        return len(self.acknowledged.get(user, []))


@dataclass
class Load:
    """``users`` each run pairs (at most ``max_pairs``) until ``stop`` is set and ``min_pairs`` are done."""

    storages: list[StorageManager]
    product: str
    users: list[str]
    bound_s: float = 10.0
    give_up_s: float = 45.0
    min_pairs: int = 2
    max_pairs: int = INDEX_CAP - 5
    pause_s: float = 0.0
    ledger: Ledger = field(default_factory=Ledger)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _started: dict[str, asyncio.Event] = field(default_factory=dict)

    async def _bounded(self, call: Awaitable[T]) -> T:
        t0 = time.monotonic()
        try:
            return await asyncio.wait_for(call, self.bound_s)
        except asyncio.TimeoutError:
            raise CallOverran(f"a lifecycle call took longer than {self.bound_s}s") from None
        finally:
            self.ledger.calls += 1
            self.ledger.slowest_s = max(self.ledger.slowest_s, time.monotonic() - t0)

    async def pair(self, storage: StorageManager, user: str, session_id: str) -> SessionEndResult:
        """One session, retried to success; returns the end's (persisted) result."""
        deadline = time.monotonic() + self.give_up_s
        while True:
            start = await self._bounded(start_session(self.product, user, session_id, storage))
            if start.persisted:
                break
            self._failed(deadline, f"start {user}/{session_id}: {start.error!r}", start.error)
        snapshot = SessionSnapshot.from_adoption_state(
            start.state,
            session_id=session_id,
            session_number=start.state.sessions_count + 1,
            started_at=time.time() - 60.0,
            catalog_workflow_ids=["create_project", "invite_team"],
        )
        while True:
            end = await self._bounded(end_session(self.product, user, snapshot, storage))
            if end.persisted:
                self.ledger.acknowledged.setdefault(user, []).append(session_id)
                if end.duplicate:
                    self.ledger.duplicates.add((user, session_id))
                return end
            self._failed(deadline, f"end {user}/{session_id}: {end.error!r}", end.error)
            await asyncio.sleep(0.05)

    def _failed(self, deadline: float, what: str, error: BaseException | None) -> None:
        self.ledger.failed_calls += 1
        kind = re.sub(r"\d+", "N", f"{type(error).__name__}: {error}")[:120]
        self.ledger.errors[kind] = self.ledger.errors.get(kind, 0) + 1
        if time.monotonic() > deadline:
            raise NeverRecovered(f"still failing after {self.give_up_s}s: {what}")

    async def _user(self, index: int, user: str) -> None:
        storage = self.storages[index % len(self.storages)]
        n = 0
        while n < self.max_pairs and (n < self.min_pairs or not self.stop.is_set()):
            await self.pair(storage, user, f"s{n:03d}")
            n += 1
            if n == self.min_pairs:
                self._started[user].set()
            if self.pause_s:
                await asyncio.sleep(self.pause_s)

    def start(self) -> asyncio.Future[list[None]]:
        """Run every user in the background; ``warmed_up()`` waits for their first pairs."""
        self._started = {user: asyncio.Event() for user in self.users}
        return asyncio.gather(*(self._user(i, u) for i, u in enumerate(self.users)))

    async def warmed_up(self, running: asyncio.Future[list[None]]) -> None:
        """Until every user has done ``min_pairs`` (or the load failed: its error is raised)."""
        warm = asyncio.ensure_future(asyncio.gather(*(e.wait() for e in self._started.values())))
        await asyncio.wait({warm, running}, return_when=asyncio.FIRST_COMPLETED)
        if not warm.done():
            warm.cancel()
            await running  # it finished first: raise what went wrong

    async def lost(self, storage: StorageManager) -> dict[str, list[str]]:
        """Per user, acknowledged sessions that the settled store does not have (state and snapshot)."""
        missing: dict[str, list[str]] = {}
        for user, sessions in self.ledger.acknowledged.items():
            doc = await storage.get_user_state(self.product, user)
            indexed = {e["session_id"] for e in doc["sessions"]["index"]} if doc else set()
            gone = []
            for session_id in sessions:
                stored = await storage.get_session_snapshot(self.product, user, session_id)
                missing_parts = [
                    p for p, ok in (("state", session_id in indexed), ("snapshot", stored)) if not ok
                ]
                if missing_parts:
                    gone.append(session_id)
                    self.ledger.missing[(user, session_id)] = "+".join(missing_parts)
            if gone:
                missing[user] = gone
        return missing
