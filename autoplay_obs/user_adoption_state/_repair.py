"""The lenient half of reading: repair a parsed document against a Struct's own type information.

Decisions:
- Generic: driven by ``msgspec.inspect``, so a field added to a document later
  is repaired without touching this module, and it knows no document by name.
- A number given as a string is parsed; an out-of-range number is clamped to
  its bound; NaN, Infinity and unparseable values take the field's default;
  an unknown enum value, a wrong container type or a null where a value is
  required takes the field's default; an unreadable entry of a list or
  mapping is dropped. Every repair is reported as a path and a reason.
- ``BAD`` marks a value that cannot be used where it stands.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

from msgspec import inspect as mi

from autoplay_obs.errors import UnreadableDocumentError

__all__ = ["BAD", "NonFinite", "finite_number", "parse", "repair", "repair_any", "show"]


class NonFinite:
    """Stands in for NaN / Infinity while parsing, so the walker sees them."""

    def __init__(self, token: str) -> None:
        self.token = token


BAD: Final = object()


def parse(raw: Any, repairs: list[str]) -> Any:
    if isinstance(raw, Mapping):
        return _scrub(raw, "$", repairs)
    if isinstance(raw, (bytes, bytearray, memoryview)):
        data = bytes(raw)
        try:
            raw = data.decode("utf-8")
        except UnicodeDecodeError:
            raw = data.decode("utf-8", errors="replace")
            repairs.append("$: invalid UTF-8 bytes replaced with U+FFFD")
    if not isinstance(raw, str):
        raise UnreadableDocumentError(f"cannot read a document from {type(raw).__name__}")
    try:
        return json.loads(raw, parse_constant=NonFinite, parse_int=_parse_int)
    except (ValueError, RecursionError) as exc:
        raise UnreadableDocumentError(f"not JSON: {exc}") from exc


def _parse_int(text: str) -> int | float:
    """An integer past Python's digit limit reads as a float (inf), to be repaired, not refused."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _scrub(value: Any, path: str, repairs: list[str]) -> Any:
    """Plain-dict input: NaN/inf become markers and keys become strings, as in JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return NonFinite(_token(value))
    if isinstance(value, Mapping):
        return {_key(k, path, repairs): _scrub(v, f"{path}.{k}", repairs) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, f"{path}[{i}]", repairs) for i, v in enumerate(value)]
    return value


def _key(key: Any, path: str, repairs: list[str]) -> str:
    if isinstance(key, str):
        return key
    repairs.append(f"{path}: key {key!r} read as a string")
    return str(key)


def finite_number(value: Any) -> float | None:
    """A finite number from a JSON scalar, or None."""
    if isinstance(value, bool) or value is None or isinstance(value, NonFinite):
        return None
    if isinstance(value, (int, float, str)):
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (ValueError, OverflowError):  # OverflowError: an int too big for a float
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _bounded(number: float, t: mi.IntType | mi.FloatType, path: str, repairs: list[str]) -> float:
    low = t.ge if t.ge is not None else t.gt
    high = t.le if t.le is not None else t.lt
    if low is not None and number < low:
        repairs.append(f"{path}: {number!r} clamped to {low!r}")
        return low
    if high is not None and number > high:
        repairs.append(f"{path}: {number!r} clamped to {high!r}")
        return high
    return number


def _repair_float(value: Any, t: mi.FloatType, path: str, repairs: list[str]) -> Any:
    number = finite_number(value)
    if number is None:
        return BAD
    if not isinstance(value, (int, float)):
        repairs.append(f"{path}: {value!r} read as a number")
    return _bounded(number, t, path, repairs)


def _repair_int(value: Any, t: mi.IntType, path: str, repairs: list[str]) -> Any:
    number = finite_number(value)
    if number is None:
        return BAD
    if not isinstance(value, int) or number != int(number):
        repairs.append(f"{path}: {value!r} read as an integer")
    return int(_bounded(float(int(number)), t, path, repairs))


def _repair_bool(value: Any, t: mi.Type, path: str, repairs: list[str]) -> Any:
    if isinstance(value, bool):
        return value
    truth = {"true": True, "false": False, "1": True, "0": False, 1: True, 0: False}
    key = value.strip().lower() if isinstance(value, str) else value
    if isinstance(key, (str, int)) and key in truth:
        repairs.append(f"{path}: {value!r} read as a boolean")
        return truth[key]
    return BAD


def _repair_str(value: Any, t: mi.Type, path: str, repairs: list[str]) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        repairs.append(f"{path}: {value!r} read as a string")
        return str(value)
    return BAD


def _repair_choice(value: Any, t: mi.EnumType | mi.LiteralType, path: str, repairs: list[str]) -> Any:
    allowed = [m.value for m in t.cls] if isinstance(t, mi.EnumType) else list(t.values)
    return value if value in allowed and not isinstance(value, bool) else BAD


def repair_any(value: Any, t: mi.Type, path: str, repairs: list[str]) -> Any:
    if isinstance(value, NonFinite) or (isinstance(value, float) and not math.isfinite(value)):
        repairs.append(f"{path}: {show(value)} replaced with null")
        return None
    if isinstance(value, dict):
        return {k: repair_any(v, t, f"{path}.{k}", repairs) for k, v in value.items()}
    if isinstance(value, list):
        return [repair_any(v, t, f"{path}[{i}]", repairs) for i, v in enumerate(value)]
    return value


def _repair_union(value: Any, t: mi.UnionType, path: str, repairs: list[str]) -> Any:
    if value is None and t.includes_none:
        return None
    for member in t.types:
        if isinstance(member, mi.NoneType):
            continue
        fixed = repair(value, member, path, repairs)
        if fixed is not BAD:
            return fixed
    if t.includes_none:
        repairs.append(f"{path}: unusable {show(value)} replaced with null")
        return None
    return BAD


def _repair_sequence(value: Any, t: mi.ListType | mi.VarTupleType, path: str, repairs: list[str]) -> Any:
    if not isinstance(value, list):
        return BAD
    items = []
    for i, item in enumerate(value):
        fixed = repair(item, t.item_type, f"{path}[{i}]", repairs)
        if fixed is BAD:
            repairs.append(f"{path}[{i}]: unreadable entry {show(item)} dropped")
        else:
            items.append(fixed)
    return items


def _repair_mapping(value: Any, t: mi.DictType, path: str, repairs: list[str]) -> Any:
    if not isinstance(value, dict):
        return BAD
    result = {}
    for key, item in value.items():
        fixed = repair(item, t.value_type, f"{path}.{key}", repairs)
        if fixed is BAD:
            repairs.append(f"{path}.{key}: unreadable entry {show(item)} dropped")
        else:
            result[key] = fixed
    return result


def _repair_struct(value: Any, t: mi.StructType, path: str, repairs: list[str]) -> Any:
    if not isinstance(value, dict):
        return BAD
    result = {}
    for f in t.fields:
        name = f.encode_name
        if name not in value:
            if f.required:
                return BAD
            continue
        fixed = repair(value[name], f.type, f"{path}.{name}", repairs)
        if fixed is not BAD:
            result[name] = fixed
        elif f.required:
            return BAD
        else:
            repairs.append(f"{path}.{name}: unusable {show(value[name])} replaced with the default")
    return result


_REPAIRERS: Final[dict[type[mi.Type], Callable[[Any, Any, str, list[str]], Any]]] = {
    mi.AnyType: repair_any,
    mi.FloatType: _repair_float,
    mi.IntType: _repair_int,
    mi.BoolType: _repair_bool,
    mi.StrType: _repair_str,
    mi.EnumType: _repair_choice,
    mi.LiteralType: _repair_choice,
    mi.UnionType: _repair_union,
    mi.ListType: _repair_sequence,
    mi.VarTupleType: _repair_sequence,
    mi.DictType: _repair_mapping,
    mi.StructType: _repair_struct,
}


def repair(value: Any, t: mi.Type, path: str, repairs: list[str]) -> Any:
    if isinstance(value, NonFinite) and not isinstance(t, mi.AnyType):
        return BAD
    if isinstance(t, mi.NoneType):
        return None if value is None else BAD
    return _REPAIRERS[type(t)](value, t, path, repairs)


def _token(number: float) -> str:
    """How JSON spells a non-finite float, so dict and bytes input report alike."""
    return "NaN" if math.isnan(number) else "Infinity" if number > 0 else "-Infinity"


def show(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return _token(value)
    text = value.token if isinstance(value, NonFinite) else repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
