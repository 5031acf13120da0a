"""``OperatorStore``: what a readable primary offers the operator tools, and its key scans.

Decisions:
- An optional capability beside ``AtomicStore``: listing a user's (or a
  product's) keys, deleting one key, writing a tombstone. The built-in
  primaries implement it; the operator tools refuse a primary without it with
  a ``ConfigurationError`` instead of guessing.
- Every operation touches one key (invariant 6). A scan is not a key
  operation: Redis walks the keyspace of each primary with ``SCAN MATCH``.
- Ids are key-encoded (``_keys.encode_id``) and then glob-escaped, so a user
  whose id is a prefix of another's (``u1`` / ``u10``) or holds glob
  characters (``u1*``, ``u[1]``) matches only its own keys; encoded ids never
  hold ``:``, so ``u1:session:x`` cannot pass for ``u1``'s session ``x``.
- Keys are parsed back with the encoding's inverse, and a key that parses to
  another triple than asked for is dropped: tenant isolation does not rest
  on the pattern alone.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Final, NamedTuple, Protocol, runtime_checkable
from urllib.parse import unquote

from autoplay_obs.errors import ConfigurationError
from autoplay_obs.storage._keys import encode_id, validate_id
from autoplay_obs.storage._protocol import Stored

__all__ = ["KeyRef", "OperatorStore", "operator_store", "parse_key", "scan_pattern"]

_GLOB: Final = re.compile(r"([*?\[\]\\])")
_PREFIX: Final = "autoplay:user:"


class KeyRef(NamedTuple):
    """One stored key of a user: the state (``session_id`` None) or one snapshot."""

    product_id: str
    user_id: str
    session_id: str | None


def _glob_escaped(encoded: str) -> str:
    return _GLOB.sub(r"\\\1", encoded)


def scan_pattern(product_id: str, user_id: str | None = None) -> str:
    """The ``SCAN MATCH`` pattern of a user's keys, or of every key of a product."""
    product = _glob_escaped(encode_id(validate_id(product_id, "product_id")))
    if user_id is None:
        return f"{_PREFIX}{product}:*"
    return f"{_PREFIX}{product}:{_glob_escaped(encode_id(validate_id(user_id, 'user_id')))}:*"


def parse_key(key: str | bytes) -> KeyRef | None:
    """The ids a key was built from, or None for a key this package did not build."""
    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    if not text.startswith(_PREFIX):
        return None
    parts = text[len(_PREFIX) :].split(":")
    if len(parts) == 3 and parts[2] == "state":
        return KeyRef(unquote(parts[0]), unquote(parts[1]), None)
    if len(parts) == 4 and parts[2] == "session" and parts[3]:
        return KeyRef(unquote(parts[0]), unquote(parts[1]), unquote(parts[3]))
    return None


@runtime_checkable
class OperatorStore(Protocol):
    """Key listing, single-key deletes and tombstones: the operator tools' view of a primary."""

    snapshot_ttl: int | None
    """Seconds a snapshot lives (None: forever); an index entry older than that may be gone."""

    async def load_state(self, product_id: str, user_id: str) -> Stored | None:
        """The state's bytes (``UserErasedError`` on a tombstone), as in ``AtomicStore``."""
        ...

    async def load_snapshot(self, product_id: str, user_id: str, session_id: str) -> bytes | None:
        """One snapshot's bytes, as in ``AtomicStore``."""
        ...

    def scan_keys(self, product_id: str, user_id: str | None = None) -> AsyncIterator[KeyRef]:
        """Every key of the user (or of every user of the product), each once, in no order."""
        ...

    async def delete_key(self, product_id: str, user_id: str, session_id: str | None) -> bool:
        """Delete one snapshot (``session_id``) or the state; True when it existed."""
        ...

    async def put_tombstone(self, product_id: str, user_id: str, raw: bytes, ttl_s: int) -> None:
        """Overwrite the state with a tombstone that expires after ``ttl_s``."""
        ...


def operator_store(primary: object) -> OperatorStore:
    """``primary`` as an ``OperatorStore``, or a ``ConfigurationError`` saying why not."""
    if not isinstance(primary, OperatorStore):
        raise ConfigurationError(
            f"{type(primary).__name__} cannot list or delete keys: the operator tools need a primary "
            "like RedisStorageAdapter or InMemoryStorageAdapter"
        )
    return primary
