"""The adapter contracts.

``AutoplayStorageAdapter`` is the seed's four-method Protocol over plain JSON
dicts: any object with those async methods is an adapter, no inheritance.
Write-only sinks return ``None`` from the reads (and say so with
``readable = False``, so the manager refuses one in the primary's place).

``AtomicStore`` is the optional capability of a readable primary that lets the
manager keep the invariants: a write-once snapshot that reports whether it was
created, and a compare-and-set on the user state keyed by a token derived from
the stored bytes (so documents written by other tools, which carry no revision,
are still safe to replace). Both built-in primaries implement it; a custom
primary without it gets best-effort read-modify-write. A primary may also
offer ``freeze_and_swap`` (see ``RedisStorageAdapter``): the snapshot write and
a compare-and-set in one round trip.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, Final, NamedTuple, Protocol, runtime_checkable

__all__ = ["AtomicStore", "AutoplayStorageAdapter", "Stored", "token_of"]


@runtime_checkable
class AutoplayStorageAdapter(Protocol):
    """Where user states and session snapshots go; reads may return None."""

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        """Store (overwrite) the user's state document."""

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        """The user's state document, or None when absent or not readable here."""

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        """Store a snapshot once; never overwrite an existing one."""

    async def get_session_snapshot(
        self, product_id: str, user_id: str, session_id: str
    ) -> dict[str, Any] | None:
        """One snapshot, or None when absent or not readable here."""


class Stored(NamedTuple):
    """A stored document's bytes and the token a compare-and-set must present."""

    raw: bytes
    token: str


REVISION_PREFIX: Final = b'{"_rev":"'
REVISION_END: Final = len(REVISION_PREFIX) + 32
"""A document written through a manager starts ``{"_rev":"<32 hex>"``: 42 bytes name the write."""


def new_revision() -> str:
    return secrets.token_hex(16)


def headed(raw: bytes) -> bytes:
    """A document's bytes with a fresh ``_rev`` at their head, naming this one write.

    A snapshot carries no revision of its own (readers ignore the field): it
    is there so that a write resent after a lost reply can recognise its own.
    """
    return b"".join((REVISION_PREFIX, new_revision().encode("ascii"), b'",', raw[1:]))


def with_new_revision(state: dict[str, Any]) -> dict[str, Any]:
    """A state dict to store by a plain overwrite: a fresh revision at its head.

    A caller that read a document and saves it back would otherwise store new
    content under the old revision, and another writer's compare-and-set
    holding that revision would then pass and overwrite the change.
    """
    return {"_rev": new_revision(), **without_revision(state)}


def without_revision(state: dict[str, Any]) -> dict[str, Any]:
    """A document as the dict-level API shows it: the revision is the atomic path's business."""
    return {k: v for k, v in state.items() if k != "_rev"}


def token_of(raw: bytes) -> str:
    """The compare-and-set token of stored bytes.

    The revision a manager wrote at the document's head, when there is one
    (cheap to read on the server too: 42 bytes); otherwise the SHA-1 of the
    whole document, so one written by another tool -- which drops ``_rev`` --
    is still compared exactly.
    """
    if raw.startswith(REVISION_PREFIX) and raw[REVISION_END : REVISION_END + 1] == b'"':
        return raw[len(REVISION_PREFIX) : REVISION_END].decode("ascii", "replace")
    return hashlib.sha1(raw, usedforsecurity=False).hexdigest()


@runtime_checkable
class AtomicStore(Protocol):
    """Single-key atomic operations a primary offers the manager (bytes in, bytes out)."""

    async def load_state(self, product_id: str, user_id: str) -> Stored | None: ...

    async def swap_state(
        self, product_id: str, user_id: str, raw: bytes, expected: str | None
    ) -> tuple[bool, Stored | None]:
        """Write ``raw`` if the stored token is still ``expected`` (None: no document).

        Returns ``(True, None)`` on success, ``(False, current)`` on a conflict,
        so the caller can re-apply its change without another round trip.
        """
        ...

    async def create_snapshot(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> bool:
        """Store a snapshot unless one exists; True when this call created it."""
        ...

    async def load_snapshot(self, product_id: str, user_id: str, session_id: str) -> bytes | None: ...
