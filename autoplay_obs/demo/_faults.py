"""Wrappers that break things on purpose: a flaky sink and a primary with outages.

Both wrap a real adapter and keep its ``name``, so metrics and spans carry
the real adapter's label; the injected errors are ordinary exceptions that
the storage manager maps and counts like any real failure.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from autoplay_obs.errors import StorageUnavailableError
from autoplay_obs.storage import Stored

__all__ = ["FaultySink", "FlakyPrimary", "InjectedSinkError", "OutageSchedule"]


class InjectedSinkError(ConnectionError):
    """What a sink raises when the demo fails it on purpose (shows up as ``error_type``)."""


class FaultySink:
    """A write-only sink that fails a share of writes and adds latency before each one."""

    def __init__(self, inner: Any, *, error_rate: float, latency: float, seed: int) -> None:
        self.inner = inner
        self.name: str = getattr(inner, "name", type(inner).__name__)
        self.error_rate = error_rate
        self.latency = latency
        self.injected_errors = 0
        self._rng = random.Random(f"sink:{seed}:{self.name}")

    def __getattr__(self, attribute: str) -> Any:  # describe(), delivery, flush() of the real sink
        return getattr(self.inner, attribute)

    async def _fault(self) -> None:
        if self.latency:
            await asyncio.sleep(self.latency * self._rng.uniform(0.5, 1.5))
        if self._rng.random() < self.error_rate:
            self.injected_errors += 1
            raise InjectedSinkError(f"{self.name}: injected failure")

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        await self._fault()
        await self.inner.save_user_state(product_id, user_id, state)

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        await self._fault()
        await self.inner.save_session_snapshot(product_id, user_id, session_id, snapshot)

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        return None

    async def get_session_snapshot(
        self, product_id: str, user_id: str, session_id: str
    ) -> dict[str, Any] | None:
        return None


class OutageSchedule:
    """Primary outages as windows over the run's progress (0..1): ``share`` of it, in three windows.

    The windows are centred at 25 %, 55 % and 85 % of the run, so the demo
    shows the primary going away and coming back.
    """

    CENTRES = (0.25, 0.55, 0.85)

    def __init__(self, share: float, progress: Callable[[], float]) -> None:
        half = share / len(self.CENTRES) / 2
        self.windows = [(c - half, c + half) for c in self.CENTRES] if share > 0 else []
        self._progress = progress

    def down(self) -> bool:
        at = self._progress()
        return any(start <= at < end for start, end in self.windows)


class FlakyPrimary:
    """The primary, unreachable while the schedule says so (``StorageUnavailableError``)."""

    def __init__(self, inner: Any, schedule: OutageSchedule) -> None:
        self.inner = inner
        self.name: str = getattr(inner, "name", type(inner).__name__)
        self.schedule = schedule
        self.injected_errors = 0

    def describe(self) -> dict[str, Any]:
        describe = getattr(self.inner, "describe", None)
        return dict(describe()) if callable(describe) else {}

    def _check(self) -> None:
        if self.schedule.down():
            self.injected_errors += 1
            raise StorageUnavailableError(f"{self.name}: injected outage")

    async def load_state(self, product_id: str, user_id: str) -> Stored | None:
        self._check()
        result: Stored | None = await self.inner.load_state(product_id, user_id)
        return result

    async def swap_state(
        self, product_id: str, user_id: str, raw: bytes, expected: str | None
    ) -> tuple[bool, Stored | None]:
        self._check()
        result: tuple[bool, Stored | None] = await self.inner.swap_state(product_id, user_id, raw, expected)
        return result

    async def create_snapshot(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> bool:
        self._check()
        return bool(await self.inner.create_snapshot(product_id, user_id, session_id, raw))

    async def load_snapshot(self, product_id: str, user_id: str, session_id: str) -> bytes | None:
        self._check()
        result: bytes | None = await self.inner.load_snapshot(product_id, user_id, session_id)
        return result

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        self._check()
        await self.inner.save_user_state(product_id, user_id, state)

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        self._check()
        result: dict[str, Any] | None = await self.inner.get_user_state(product_id, user_id)
        return result

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        self._check()
        await self.inner.save_session_snapshot(product_id, user_id, session_id, snapshot)

    async def get_session_snapshot(
        self, product_id: str, user_id: str, session_id: str
    ) -> dict[str, Any] | None:
        self._check()
        result: dict[str, Any] | None = await self.inner.get_session_snapshot(product_id, user_id, session_id)
        return result

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if callable(close):
            await close()
