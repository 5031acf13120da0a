"""The adapters a manager is given: checked once, and the primary's view of a custom one.

Decisions:
- A manager refuses what cannot work at construction, before any I/O: no
  adapters, a class instead of an instance, an object without the four seed
  methods, a write-only sink in the primary's place; a readable primary in a
  sink's place is warned about (it only receives overwrites).
- A custom primary without ``AtomicStore`` gets best-effort read-modify-write
  through its dict methods (``DictPrimary``).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final, Generic, TypeVar

from autoplay_obs import _json
from autoplay_obs.errors import ConfigurationError
from autoplay_obs.storage._protocol import (
    AtomicStore,
    AutoplayStorageAdapter,
    Stored,
    token_of,
    without_revision,
)

__all__ = ["DictPrimary", "Lru", "adapter_name", "checked_adapters"]

K = TypeVar("K")
V = TypeVar("V")

_ADAPTER_METHODS: Final = (
    "save_user_state",
    "get_user_state",
    "save_session_snapshot",
    "get_session_snapshot",
)


class Lru(OrderedDict[K, V], Generic[K, V]):
    """A bounded mapping that forgets the least recently used entry."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_recent(self, key: K) -> V | None:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key: K, value: V | None) -> None:
        if value is None or self.size <= 0:
            self.pop(key, None)
            return
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


def adapter_name(adapter: object) -> str:
    name = getattr(adapter, "name", None)
    return name if isinstance(name, str) else type(adapter).__name__


def checked_adapters(adapters: Sequence[AutoplayStorageAdapter]) -> list[AutoplayStorageAdapter]:
    """The adapters, refused when they cannot work: none, a class, a sink in the primary's place."""
    adapters = list(adapters)
    if not adapters:
        raise ConfigurationError(
            "StorageManager needs at least one adapter; put the readable primary first, "
            "e.g. StorageManager([RedisStorageAdapter(redis_url=...)])"
        )
    for adapter in adapters:
        if isinstance(adapter, type):
            raise ConfigurationError(f"pass an adapter instance, not the class {adapter.__name__}")
        missing = [m for m in _ADAPTER_METHODS if not callable(getattr(adapter, m, None))]
        if missing:
            raise ConfigurationError(f"{adapter_name(adapter)} is not an adapter: no {missing}")
    if getattr(adapters[0], "readable", True) is False:
        raise ConfigurationError(
            f"{adapter_name(adapters[0])} is write-only and cannot be the primary: "
            "put the readable primary (e.g. RedisStorageAdapter) first"
        )
    for adapter in adapters[1:]:
        if isinstance(adapter, AtomicStore):
            warnings.warn(
                f"{adapter_name(adapter)} is a readable primary in a sink's place: only the first "
                f"adapter ({adapter_name(adapters[0])}) is read and compare-and-set; "
                f"{adapter_name(adapter)} only receives overwrites. Put the primary first.",
                UserWarning,
                stacklevel=3,
            )
    return adapters


class DictPrimary:
    """``AtomicStore`` over a custom adapter's dict methods: best effort, not atomic."""

    def __init__(self, adapter: AutoplayStorageAdapter) -> None:
        self._adapter = adapter

    async def load_state(self, product_id: str, user_id: str) -> Stored | None:
        found = await self._adapter.get_user_state(product_id, user_id)
        if found is None:
            return None
        raw = _json.dumps(found)
        return Stored(raw, token_of(raw))

    async def swap_state(
        self, product_id: str, user_id: str, raw: bytes, expected: str | None
    ) -> tuple[bool, Stored | None]:
        current = await self.load_state(product_id, user_id)
        if (None if current is None else current.token) != expected:
            return False, current
        await self._adapter.save_user_state(product_id, user_id, _json.loads(raw))
        return True, None

    async def create_snapshot(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> bool:
        if await self._adapter.get_session_snapshot(product_id, user_id, session_id) is not None:
            return False
        snapshot = without_revision(_json.loads(raw))
        await self._adapter.save_session_snapshot(product_id, user_id, session_id, snapshot)
        return True

    async def load_snapshot(self, product_id: str, user_id: str, session_id: str) -> bytes | None:
        found = await self._adapter.get_session_snapshot(product_id, user_id, session_id)
        return None if found is None else _json.dumps(found)
