"""The seed's four dict-level methods, for a primary that offers the atomic byte-level ones.

One place for what a plain overwrite must do to stay safe beside compare-and-set
(store a fresh revision) and what a dict-level reader sees (no revision), so
the built-in primaries cannot drift apart on it.
"""

from __future__ import annotations

from typing import Any, Protocol

from autoplay_obs._json import dumps, loads_object
from autoplay_obs.storage._protocol import Stored, with_new_revision, without_revision

__all__ = ["DictView"]


class _Primary(Protocol):
    """What the mixin builds on: the primary's byte-level operations."""

    async def _put_state(self, product_id: str, user_id: str, raw: bytes) -> None: ...

    async def load_state(self, product_id: str, user_id: str) -> Stored | None: ...

    async def create_snapshot(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> bool: ...

    async def load_snapshot(self, product_id: str, user_id: str, session_id: str) -> bytes | None: ...


class DictView:
    """Mixin: the seed's ``save_*``/``get_*`` over the primary's byte-level operations."""

    async def save_user_state(self: _Primary, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        await self._put_state(product_id, user_id, dumps(with_new_revision(state)))

    async def get_user_state(self: _Primary, product_id: str, user_id: str) -> dict[str, Any] | None:
        stored = await self.load_state(product_id, user_id)
        found = loads_object(None if stored is None else stored.raw)
        return None if found is None else without_revision(found)

    async def save_session_snapshot(
        self: _Primary, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        await self.create_snapshot(product_id, user_id, session_id, dumps(snapshot))

    async def get_session_snapshot(
        self: _Primary, product_id: str, user_id: str, session_id: str
    ) -> dict[str, Any] | None:
        found = loads_object(await self.load_snapshot(product_id, user_id, session_id))
        return None if found is None else without_revision(found)
