"""Reading and writing stored documents: a strict fast path, a lenient repair path.

Every read first tries msgspec's typed decoder, which validates the whole
document (types, ranges, enums) in one pass. Only when that fails does the
lenient path run: parse with the standard library (which accepts NaN and
Infinity), walk the document against the Struct's own type information
(``msgspec.inspect``), repair what can be repaired, and report each repair as
a path and a reason so the caller can count it:

- a number given as a string is parsed; an out-of-range number is clamped to
  its bound; NaN, Infinity and unparseable values take the field's default;
- an unknown enum value, a wrong container type or a null where a value is
  required takes the field's default;
- an unreadable entry of a list or mapping is dropped;
- invalid UTF-8 is replaced; an index over 50 entries keeps the newest 50;
- a missing ``_v`` is read as version 1 (and reported, even on the fast path);
- NaN or Infinity inside the free-form ``metadata`` becomes null.

What cannot be repaired is refused with a typed error and never replaced by a
fresh document: input that is not JSON, not an object, or nested too deeply
to read (``UnreadableDocumentError``), and a ``_v`` other than 1
(``UnsupportedVersionError``). Nothing else escapes a read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar, cast

import msgspec
from msgspec import inspect as mi

from autoplay_obs import _json
from autoplay_obs.errors import UnreadableDocumentError, UnsupportedVersionError
from autoplay_obs.user_adoption_state._models import MAX_SESSION_INDEX, UserAdoptionState
from autoplay_obs.user_adoption_state._parts import SOURCE_UNKNOWN, WorkflowProgress
from autoplay_obs.user_adoption_state._repair import BAD, finite_number, parse, repair, repair_any
from autoplay_obs.user_adoption_state._snapshot import SessionSnapshot

__all__ = [
    "Decoded",
    "decode_session_snapshot",
    "decode_user_state",
    "encode",
    "read",
]

T = TypeVar("T")

_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}
_TEXT: Final = (bytes, bytearray, memoryview, str)


@dataclass(frozen=True, slots=True)
class Decoded(Generic[T]):
    """A document read from storage and the repairs it needed (empty when clean)."""

    value: T
    repairs: tuple[str, ...] = ()


def encode(document: msgspec.Struct) -> bytes:
    """The stored bytes of a document."""
    return _json.dumps(document)


def decode_user_state(
    raw: bytes | str | Mapping[str, Any], *, user_id: str | None = None
) -> Decoded[UserAdoptionState]:
    """Read a user state; ``user_id`` fills in a missing or empty stored id."""
    return read(UserAdoptionState, raw, user_id=user_id)


def decode_session_snapshot(raw: bytes | str | Mapping[str, Any]) -> Decoded[SessionSnapshot]:
    return read(SessionSnapshot, raw)


def read(cls: type[T], raw: bytes | str | Mapping[str, Any], *, user_id: str | None = None) -> Decoded[T]:
    """Strict decode of ``raw`` as ``cls``; on failure, repair and report."""
    try:
        try:
            if isinstance(raw, _TEXT):  # checked first: an ABC check costs more than it should
                decoder = _decoders.get(cls)
                if decoder is None:
                    decoder = _decoders[cls] = msgspec.json.Decoder(cls)
                value = decoder.decode(raw)
            elif isinstance(raw, Mapping):
                value = msgspec.convert(raw, cls)
            else:
                return _read_lenient(cls, raw, user_id)  # refuses it with a typed error
        # UnicodeError: a str holding a lone surrogate.
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeError):
            return _read_lenient(cls, raw, user_id)
        repairs: list[str] = []
        if _lacks_version(cls, raw):
            repairs.append("$._v: missing, read as version 1")
        _check_rules(value, repairs)
        return Decoded(value, tuple(repairs))
    except RecursionError as exc:
        raise UnreadableDocumentError("document is nested too deeply to read") from exc


def _lacks_version(cls: type[Any], raw: bytes | str | Mapping[str, Any]) -> bool:
    """Whether a strictly decoded document had no ``_v`` at all.

    A decoded Struct cannot tell a default 1 from a stored 1, so the raw input
    is asked. A ``"_v"`` elsewhere in the text (a metadata key, say) can only
    hide this report, never change what is read; ``_v`` is normally the first
    key, so the search stops almost at once.
    """
    if "_v" not in cls.__struct_encode_fields__:
        return False
    if isinstance(raw, (bytes, bytearray)):
        return b'"_v"' not in raw
    if isinstance(raw, str):
        return '"_v"' not in raw
    if isinstance(raw, memoryview):
        return b'"_v"' not in raw.tobytes()
    return "_v" not in raw


def _read_lenient(cls: type[T], raw: Any, user_id: str | None) -> Decoded[T]:
    repairs: list[str] = []
    data = parse(raw, repairs)
    if not isinstance(data, dict):
        raise UnreadableDocumentError(f"expected a JSON object, got {type(data).__name__}")
    info = cast(mi.StructType, mi.type_info(cls))
    data = dict(data)
    if "_v" in info.cls.__struct_encode_fields__:
        _repair_version(data, repairs)
    if cls is UserAdoptionState:
        _repair_user_id(data, user_id, repairs)
    fixed = repair(data, info, "$", repairs)
    if fixed is BAD:
        raise UnreadableDocumentError("document has no usable required fields")
    try:
        value = msgspec.convert(fixed, cls)
    except msgspec.ValidationError as exc:  # a rule the walker does not know
        raise UnreadableDocumentError(f"document could not be repaired: {exc}") from exc
    _check_rules(value, repairs)
    return Decoded(value, tuple(repairs))


def _repair_version(data: dict[str, Any], repairs: list[str]) -> None:
    version = data.get("_v", BAD)
    if version == 1 and type(version) is int:
        return
    if version is BAD:
        repairs.append("$._v: missing, read as version 1")
    elif isinstance(version, (str, float)) and not isinstance(version, bool) and finite_number(version) == 1:
        repairs.append(f"$._v: {version!r} read as version 1")
    else:
        raise UnsupportedVersionError(version)
    data["_v"] = 1


def _repair_user_id(data: dict[str, Any], user_id: str | None, repairs: list[str]) -> None:
    stored = data.get("user_id")
    if isinstance(stored, str) and stored.strip():
        return
    if isinstance(stored, int) and not isinstance(stored, bool):
        data["user_id"] = str(stored)
    elif user_id:
        data["user_id"] = user_id
    else:
        raise UnreadableDocumentError("user state has no usable user_id")
    repairs.append(f"$.user_id: {stored!r} replaced with {data['user_id']!r}")


def _check_rules(value: Any, repairs: list[str]) -> None:
    """Rules a type cannot express; cheap enough to run on every read."""
    if isinstance(value, SessionSnapshot):
        _check_sources(value.workflow_progress, "$.workflow_progress", repairs)
        return
    if not isinstance(value, UserAdoptionState):
        return
    if not _all_finite(value.metadata):  # NaN from a plain dict, or a literal like 1e400
        value.metadata = repair_any(value.metadata, _ANY, "$.metadata", repairs)
    sessions = value.sessions
    if sessions.count < len(sessions.index):
        repairs.append(f"$.sessions.count: {sessions.count} raised to {len(sessions.index)}")
        sessions.count = len(sessions.index)
    if len(sessions.index) > MAX_SESSION_INDEX:
        excess = len(sessions.index) - MAX_SESSION_INDEX
        repairs.append(f"$.sessions.index: {excess} oldest of {len(sessions.index)} entries trimmed")
        del sessions.index[:excess]
    features = value.discovered_features
    names = set(map(str.strip, features))  # one pass finds repeats and blanks alike
    if len(names) != len(features) or "" in names:
        unique = list(dict.fromkeys(name for f in features if (name := f.strip())))
        repairs.append(f"$.discovered_features: {len(features) - len(unique)} blank or repeated removed")
        value.discovered_features = unique
    _check_sources(value.onboarding.workflow_progress, "$.onboarding.workflow_progress", repairs)


def _check_sources(progress: dict[str, WorkflowProgress], path: str, repairs: list[str]) -> None:
    for wid, wp in progress.items():
        if not wp.source.strip():
            repairs.append(f"{path}.{wid}.source: empty, set to {SOURCE_UNKNOWN!r}")
            progress[wid] = msgspec.structs.replace(wp, source=SOURCE_UNKNOWN)


_ANY: Final = mi.AnyType()


def _all_finite(value: Any) -> bool:
    """Whether free-form JSON holds no NaN or infinity (msgspec reads 1e400 as inf)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        return True
    return all(isinstance(item, str) or _all_finite(item) for item in value)
