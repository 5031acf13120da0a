"""One event loop per manager and per Redis client.

Decisions:
- asyncio connections, locks and background tasks belong to the loop that
  made them. A host that calls ``asyncio.run`` per request would otherwise get
  "Event loop is closed" from a connection of an earlier loop -- and report a
  write that Redis holds as not persisted -- or hang on a lock of another
  loop. So the first loop that uses an object owns it, and a call from any
  other loop is refused at once with a ``ConfigurationError`` naming the fix.
- ``strict`` (a Redis client: its connections cannot move) refuses every other
  loop for good. Otherwise (a manager, whose locks and tasks last one call) the
  object moves on once its loop is closed: ``asyncio.run`` per call works with
  a primary that allows it.
"""

from __future__ import annotations

import asyncio

from autoplay_obs.errors import ConfigurationError

__all__ = ["LoopBinding"]


class LoopBinding:
    """Remembers the first running loop and refuses every other one."""

    __slots__ = ("_loop", "_owner", "_strict")

    def __init__(self, owner: str, *, strict: bool) -> None:
        self._owner = owner
        self._strict = strict
        self._loop: asyncio.AbstractEventLoop | None = None

    def check(self) -> None:
        loop = asyncio.get_running_loop()
        bound = self._loop
        if bound is loop:
            return
        if bound is None or (not self._strict and bound.is_closed()):
            self._loop = loop
            return
        raise ConfigurationError(
            f"{self._owner} is used from a second event loop; it belongs to the first one that "
            "used it (its connections and locks cannot move). Create it once per event loop, keep "
            "one long-lived loop, or use autoplay_obs.storage.sync.SyncStorageManager from "
            "synchronous code."
        )
