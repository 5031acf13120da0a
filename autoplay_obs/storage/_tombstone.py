"""The erasure tombstone: what an erased user's state key holds until it expires.

Decisions:
- The tombstone lives in the state key itself, so the compare-and-set script
  sees it in the same single-key operation that would overwrite it
  (invariant 6), and a session start or end that reads the state first
  learns of the erasure without another round trip.
- It starts with a ``_rev`` like every document a manager writes, then
  ``"_tombstone":true``: both the Lua script and ``is_tombstone`` recognise it
  from its first 60 bytes, never decoding a document to find out.
- It expires (``TOMBSTONE_TTL_S``, 30 days by default): long enough for every
  retry, outbox replay or straggling process to meet it; after that the user
  id may start again from nothing. A plain ``save_user_state`` overwrites it
  (the way to lift it early, on purpose).
"""

from __future__ import annotations

import time
from typing import Final

from autoplay_obs import _json
from autoplay_obs.storage._protocol import REVISION_END, REVISION_PREFIX, new_revision

__all__ = ["TOMBSTONE_MARK", "TOMBSTONE_TTL_S", "erased_at", "is_tombstone", "tombstone"]

TOMBSTONE_TTL_S: Final = 30 * 24 * 3600
TOMBSTONE_MARK: Final = b',"_tombstone":true'
"""What follows the revision's closing quote in a tombstone (bytes 42..59)."""
_HEAD_END: Final = REVISION_END + 1


def tombstone(now: float | None = None) -> bytes:
    """A fresh tombstone document: revision first, then the mark, then when."""
    when = time.time() if now is None else now
    head = REVISION_PREFIX + new_revision().encode("ascii") + b'"' + TOMBSTONE_MARK
    return head + b',"erased_at":' + _json.dumps(when) + b"}"


def is_tombstone(raw: bytes) -> bool:
    """Whether stored bytes are a tombstone, from their head alone."""
    return (
        raw.startswith(REVISION_PREFIX)
        and raw[REVISION_END:_HEAD_END] == b'"'
        and raw[_HEAD_END : _HEAD_END + len(TOMBSTONE_MARK)] == TOMBSTONE_MARK
    )


def erased_at(raw: bytes) -> float | None:
    """When a tombstone was written (None when it does not say)."""
    found = _json.loads_object(raw)
    value = None if found is None else found.get("erased_at")
    return float(value) if isinstance(value, (int, float)) else None
