"""Deep copies of documents without a JSON round trip.

Why: the storage layer gives every caller objects of its own, and keeps its
own copy of what it last wrote; copying a 30 KB state this way costs about
half of decoding it again. One copier per type is built once from
``msgspec.inspect``: immutable values (strings, numbers, enums, tuples of
those) are shared, every container and Struct is copied -- so a field added
to a document later is covered without touching this module.
"""

from __future__ import annotations

import copy
import enum
import functools
from collections.abc import Callable, Hashable
from typing import Any, Final, TypeVar, cast

import msgspec
import msgspec.inspect as mi

__all__ = ["copier", "deep_copy"]

T = TypeVar("T")
Copier = Callable[[Any], Any]

_shallow: Final = cast(Copier, msgspec.Struct.__copy__)  # type: ignore[attr-defined]
_SHARED: Final = (str, int, float, type(None), bytes, enum.Enum)
"""Free-form values that are immutable (bool is an int)."""
_IMMUTABLE: Final = (
    mi.StrType,
    mi.IntType,
    mi.FloatType,
    mi.BoolType,
    mi.NoneType,
    mi.EnumType,
    mi.LiteralType,
    mi.BytesType,
)


def deep_copy(value: T) -> T:
    """A copy of a document (a Struct) that shares nothing mutable with it."""
    return cast(T, copier(cast(Hashable, type(value)))(value))


@functools.cache
def copier(hint: Hashable) -> Copier:
    """The deep-copy function for values of the type ``hint`` (built on first use)."""
    return _build(mi.type_info(hint), set()) or _shallow


def _build(t: mi.Type, building: set[type[Any]]) -> Copier | None:
    """How to copy a value of type ``t``; None when it is immutable (shared as is)."""
    if isinstance(t, _IMMUTABLE):
        return None
    if isinstance(t, mi.StructType):
        if t.cls in building:  # a recursive type: copied by what each value turns out to be
            return _copy_any
        return _struct(t, building | {t.cls})
    if isinstance(t, mi.DictType):
        return _dict_of(_build(t.value_type, building))
    if isinstance(t, mi.ListType):
        return _list_of(_build(t.item_type, building))
    if isinstance(t, mi.VarTupleType):
        return _tuple_of(_build(t.item_type, building))
    if isinstance(t, mi.UnionType) and all(_build(m, building) is None for m in t.types):
        return None
    return _copy_any  # Any, a union holding a container, or a type not used in documents


def _dict_of(value: Copier | None) -> Copier:
    return dict if value is None else lambda d: {k: value(v) for k, v in d.items()}


def _list_of(item: Copier | None) -> Copier:
    return list if item is None else lambda xs: list(map(item, xs))


def _tuple_of(item: Copier | None) -> Copier | None:
    return None if item is None else lambda xs: tuple(map(item, xs))


def _struct(t: mi.StructType, building: set[type[Any]]) -> Copier | None:
    fields = [(f.name, c) for f in t.fields if (c := _build(f.type, building)) is not None]
    if t.cls.__struct_config__.frozen:
        if not fields:
            return None
        return lambda obj: msgspec.structs.replace(obj, **{n: c(getattr(obj, n)) for n, c in fields})
    if not fields:
        return _shallow

    def copy(obj: Any) -> Any:
        twin = _shallow(obj)
        for name, field_copy in fields:
            setattr(twin, name, field_copy(getattr(obj, name)))
        return twin

    return copy


def _copy_any(value: Any) -> Any:
    """Free-form values (``metadata``): decoded JSON, or whatever the host put there."""
    if isinstance(value, dict):
        return {k: _copy_any(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_any(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_copy_any(v) for v in value)
    if isinstance(value, _SHARED):
        return value
    if isinstance(value, msgspec.Struct):
        return deep_copy(value)
    return copy.deepcopy(value)  # anything else a host put there: a set, a dataclass...
