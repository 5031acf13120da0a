"""Built-in adapters. The analytics sinks live in ``.posthog`` and ``.amplitude``."""

from __future__ import annotations

from autoplay_obs.storage.adapters.memory import InMemoryStorageAdapter
from autoplay_obs.storage.adapters.redis import RedisStorageAdapter

__all__ = ["InMemoryStorageAdapter", "RedisStorageAdapter"]
