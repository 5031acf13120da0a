"""The adapter contracts.

``AutoplayStorageAdapter`` is the seed's four-method Protocol over plain JSON
dicts: any object with those async methods is an adapter, no inheritance.
Write-only sinks return ``None`` from the reads.

``AtomicStore`` is the optional capability of a readable primary that lets the
manager keep the invariants: a write-once snapshot that reports whether it was
created, and a compare-and-set on the user state keyed by a token derived from
the stored bytes (so documents written by other tools, which carry no revision,
are still safe to replace). Both built-in primaries implement it; a custom
primary without it gets best-effort read-modify-write. A primary may also
offer ``swap_state_with`` (see ``RedisStorageAdapter``): a compare-and-set
carrying a snapshot write in the same round trip, that runs the manager's
own work while the server answers.
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
"""A state written through a manager starts ``{"_rev":"<32 hex>"``."""


def revision_head(revision: str) -> bytes:
    """The first bytes of a state written with ``revision``: all a compare-and-set reads."""
    return b"".join((REVISION_PREFIX, revision.encode("ascii"), b'"'))


def splice_tail(previous: bytes, head: bytes, key: bytes, tail: bytes) -> bytes | None:
    """A state this process wrote, with a new revision ``head`` and new tail fields (see
    ``encode_tail``).

    The tail starts at the last ``key``: the fields after it have fixed names,
    and a JSON string cannot hold an unescaped quote, so nothing later looks
    like it. None when ``previous`` does not have that shape.
    """
    cut = previous.rfind(key)
    if cut <= REVISION_END or not previous.startswith(REVISION_PREFIX):
        return None
    return b"".join((head, previous[REVISION_END + 1 : cut], tail))


def new_revision() -> str:
    return secrets.token_hex(16)


def with_new_revision(state: dict[str, Any]) -> dict[str, Any]:
    """A state dict to store by a plain overwrite: a fresh revision at its head.

    A caller that read a document and saves it back would otherwise store new
    content under the old revision, and another writer's compare-and-set
    holding that revision would then pass and overwrite the change.
    """
    return {"_rev": new_revision(), **without_revision(state)}


def without_revision(state: dict[str, Any]) -> dict[str, Any]:
    """A state as the dict-level API shows it: the revision is the atomic path's business."""
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
