"""One event loop per manager and per Redis client.

Decisions:
- asyncio connections, locks and background tasks belong to the loop that
  made them. A host that calls ``asyncio.run`` per request would otherwise get
  "Event loop is closed" from a connection of an earlier loop -- and report a
  write that Redis holds as not persisted -- or hang on a lock of another
  loop. So the first loop that uses an object owns it, and a call from any
  other loop is refused at once with a ``ConfigurationError`` naming the fix.
"""

from __future__ import annotations

import asyncio
import weakref

from autoplay_obs.errors import ConfigurationError

__all__ = ["LoopBinding"]


class LoopBinding:
    """Remembers the first running loop and refuses every other one."""

    __slots__ = ("_loop", "_owner")

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    def check(self) -> None:
        loop = asyncio.get_running_loop()
        bound = None if self._loop is None else self._loop()
        if bound is loop:
            return
        if bound is None:
            self._loop = weakref.ref(loop)
            return
        raise ConfigurationError(
            f"{self._owner} is used from a second event loop; it belongs to the first one that "
            "used it (its connections and locks cannot move). Create it once per event loop, keep "
            "one long-lived loop, or use autoplay_obs.storage.sync.SyncStorageManager from "
            "synchronous code."
        )
