"""An in-process primary for tests and local development.

Same semantics as Redis: snapshots write-once, user state by compare-and-set.
Each operation completes without awaiting, so concurrent tasks on one event
loop can never interleave inside it. Documents are kept as bytes, so every
read returns a fresh copy. Not shared across processes. Erasure tombstones
are honoured as on Redis; nothing expires here (no TTLs).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from autoplay_obs.errors import UserErasedError
from autoplay_obs.storage._keys import session_key, user_state_key
from autoplay_obs.storage._operator_protocol import KeyRef, parse_key
from autoplay_obs.storage._protocol import REVISION_END, REVISION_PREFIX, Stored, token_of
from autoplay_obs.storage._tombstone import erased_at, is_tombstone
from autoplay_obs.storage.adapters._dict_view import DictView

__all__ = ["InMemoryStorageAdapter"]


class InMemoryStorageAdapter(DictView):
    """Dict-backed primary; implements the seed Protocol, ``AtomicStore`` and ``OperatorStore``."""

    name = "memory"
    snapshot_ttl: int | None = None

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}

    def describe(self) -> dict[str, str]:
        return {"db.system.name": "memory"}

    async def load_state(self, product_id: str, user_id: str) -> Stored | None:
        raw = self._data.get(user_state_key(product_id, user_id))
        if raw is not None and is_tombstone(raw):
            raise UserErasedError(erased_at(raw))
        return None if raw is None else Stored(raw, token_of(raw))

    async def swap_state(
        self, product_id: str, user_id: str, raw: bytes, expected: str | None
    ) -> tuple[bool, Stored | None]:
        key = user_state_key(product_id, user_id)
        current = self._data.get(key)
        if current is not None and is_tombstone(current):
            raise UserErasedError(erased_at(current))
        if (None if current is None else token_of(current)) != expected:
            return False, None if current is None else Stored(current, token_of(current))
        self._data[key] = bytes(raw)
        return True, None

    async def create_snapshot(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> bool:
        key = session_key(product_id, user_id, session_id)
        stored = self._data.get(key)
        if stored is not None:  # as on Redis: a write that finds its own head (a replay) created it
            return raw.startswith(REVISION_PREFIX) and stored[: REVISION_END + 1] == raw[: REVISION_END + 1]
        self._data[key] = bytes(raw)
        return True

    async def load_snapshot(self, product_id: str, user_id: str, session_id: str) -> bytes | None:
        return self._data.get(session_key(product_id, user_id, session_id))

    async def _put_state(self, product_id: str, user_id: str, raw: bytes) -> None:
        self._data[user_state_key(product_id, user_id)] = raw

    async def scan_keys(self, product_id: str, user_id: str | None = None) -> AsyncIterator[KeyRef]:
        for key in list(self._data):
            ref = parse_key(key)
            if ref is not None and ref.product_id == product_id and user_id in (None, ref.user_id):
                yield ref

    async def delete_key(self, product_id: str, user_id: str, session_id: str | None) -> bool:
        key = (
            user_state_key(product_id, user_id)
            if session_id is None
            else session_key(product_id, user_id, session_id)
        )
        return self._data.pop(key, None) is not None

    async def put_tombstone(self, product_id: str, user_id: str, raw: bytes, ttl_s: int) -> None:
        self._data[user_state_key(product_id, user_id)] = bytes(raw)
