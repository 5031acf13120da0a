"""The Redis primary's data lifecycle: retention per tier, key scans, single-key deletes.

Decisions:
- Retention: the state lives ``state_ttl`` seconds after its last write and a
  snapshot ``snapshot_ttl`` after it was frozen (None: forever, the default).
  The onboarding snapshot (``session_number`` 1) gets no TTL: every later
  session start reads it, so it must not vanish while the state lives. Its
  number is read from the document's own bytes (a two-field decode), because
  the write-once path hands the adapter bytes, not a model.
- Scans use ``SCAN MATCH`` with the escaped pattern of ``_operator_protocol``;
  on a Redis Cluster each primary is scanned (``get_primaries()``), since a
  user's keys hash to many slots.
- Deletes are ``DEL`` of one key each (invariant 6), never a multi-key DEL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final

import msgspec

from autoplay_obs.storage._keys import session_key, user_state_key
from autoplay_obs.storage._operator_protocol import KeyRef, parse_key, scan_pattern

__all__ = ["RedisOperatorOps", "snapshot_expiry"]

ONBOARDING_SESSION_NUMBER: Final = 1
SCAN_COUNT: Final = 1000


class _Numbered(msgspec.Struct):
    session_number: Any = None


_numbered: Final = msgspec.json.Decoder(_Numbered)


def snapshot_expiry(raw: bytes, snapshot_ttl: int | None, onboarding_ttl: int | None) -> int | None:
    """The TTL of a snapshot about to be frozen: the onboarding one is pinned (``onboarding_ttl``)."""
    if snapshot_ttl == onboarding_ttl:
        return snapshot_ttl
    try:
        number = _numbered.decode(raw).session_number
    except (msgspec.DecodeError, UnicodeError):
        return snapshot_ttl
    return onboarding_ttl if number == ONBOARDING_SESSION_NUMBER else snapshot_ttl


class RedisOperatorOps:
    """Mixin for ``RedisStorageAdapter``: ``OperatorStore`` on its client."""

    _redis: Any
    _cluster: bool
    snapshot_ttl: int | None

    if TYPE_CHECKING:  # provided by RedisStorageAdapter

        async def _do(self, command: Any) -> Any: ...

        async def _replicated(self, key: str) -> None: ...

    async def scan_keys(self, product_id: str, user_id: str | None = None) -> AsyncIterator[KeyRef]:
        pattern = scan_pattern(product_id, user_id)
        options: dict[str, Any] = {"match": pattern, "count": SCAN_COUNT}
        if self._cluster:
            options["target_nodes"] = self._redis.get_primaries()
        seen: set[KeyRef] = set()
        cursor = self._redis.scan_iter(**options)
        while True:
            key = await self._do(_next(cursor))
            if key is None:
                return
            ref = parse_key(key)
            # SCAN may return a key twice; a key of another triple never passes.
            if ref is None or ref in seen or ref.product_id != product_id:
                continue
            if user_id is not None and ref.user_id != user_id:
                continue
            seen.add(ref)
            yield ref

    async def delete_key(self, product_id: str, user_id: str, session_id: str | None) -> bool:
        key = (
            user_state_key(product_id, user_id)
            if session_id is None
            else session_key(product_id, user_id, session_id)
        )
        deleted = await self._do(self._redis.delete(key))
        await self._replicated(key)
        return int(deleted) > 0

    async def put_tombstone(self, product_id: str, user_id: str, raw: bytes, ttl_s: int) -> None:
        key = user_state_key(product_id, user_id)
        await self._do(self._redis.set(key, raw, ex=ttl_s))
        await self._replicated(key)


async def _next(cursor: AsyncIterator[Any]) -> Any:
    """The next key of a scan, or None at its end (so each step goes through ``_do``)."""
    try:
        return await cursor.__anext__()
    except StopAsyncIteration:
        return None
