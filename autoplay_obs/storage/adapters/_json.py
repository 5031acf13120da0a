"""Plain-dict <-> bytes for the seed's dict-level adapter methods.

msgspec is the fast path both ways. A lone surrogate (``"\\ud800"``, which
Python's ``json`` writes and the reference package can store) is the one case
msgspec cannot encode or decode; the standard library handles it, with ASCII
escapes on the way out, so such documents round-trip instead of being refused.
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgspec

from autoplay_obs.errors import UnreadableDocumentError

__all__ = ["dumps", "loads"]

_encoder: Final = msgspec.json.Encoder()


def dumps(document: dict[str, Any]) -> bytes:
    try:
        return _encoder.encode(document)
    except UnicodeEncodeError:
        return json.dumps(document, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        raise UnreadableDocumentError(f"document is not JSON-serialisable: {exc}") from exc


def loads(raw: bytes | None) -> dict[str, Any] | None:
    """Decode stored bytes to a dict; refuse (never hide) what is not a JSON object."""
    if raw is None:
        return None
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise UnreadableDocumentError(f"stored document is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise UnreadableDocumentError(f"stored document is a JSON {type(value).__name__}")
    return value
