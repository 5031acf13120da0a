"""The one JSON path of the package: msgspec first, the standard library for lone surrogates.

Decisions:
- msgspec writes UTF-8 and so can neither write nor read back a lone
  surrogate (``"\\ud800"``, which Python's ``json`` writes and a host can put
  in ``metadata``). Those rare documents are written with ASCII escapes and
  read with the standard library, so they round-trip unchanged through the
  primary, the manager and every sink instead of failing one of them.
- Everything that turns documents into bytes or back goes through here, so no
  path can be surrogate-safe in one direction and not the other.
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgspec

from autoplay_obs.errors import InvalidValueError, UnreadableDocumentError

__all__ = ["dumps", "loads", "loads_object"]

_encoder: Final = msgspec.json.Encoder()


def dumps(value: Any) -> bytes:
    """JSON bytes of a Struct or plain JSON value; ``InvalidValueError`` when it is not JSON."""
    try:
        return _encoder.encode(value)
    except UnicodeEncodeError:
        builtins = msgspec.to_builtins(value) if isinstance(value, msgspec.Struct) else value
        return json.dumps(builtins, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        raise InvalidValueError(f"not JSON-serialisable: {exc}") from exc


def loads(raw: bytes | str) -> Any:
    """The JSON value of ``raw``; ``UnreadableDocumentError`` when it is not JSON."""
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeError):
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise UnreadableDocumentError(f"not JSON: {exc}") from exc


def loads_object(raw: bytes | None) -> dict[str, Any] | None:
    """A stored document as a dict (None stays None); refuses, never hides, what is not an object."""
    if raw is None:
        return None
    value = loads(raw)
    if not isinstance(value, dict):
        raise UnreadableDocumentError(f"stored document is a JSON {type(value).__name__}")
    return value
