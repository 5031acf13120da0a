"""The host's free-form ``metadata``: plain JSON values, and copies of them.

Decisions:
- Whatever a host puts in ``metadata`` is turned into plain JSON values before
  it is stored (``plain_json``), so what the manager keeps is what the store
  holds: tuples and sets become lists, enums their values, non-finite floats
  null, Structs and dataclasses dicts. What JSON cannot hold is refused with
  ``InvalidValueError``. The common case -- already plain -- costs one walk and
  no copy.
"""

from __future__ import annotations

import math
from typing import Any, Final

import msgspec

from autoplay_obs.errors import InvalidValueError

__all__ = ["copy_json", "plain_json"]

_JSON_SCALARS: Final = (str, int, bool, type(None))


def plain_json(value: Any, what: str = "metadata") -> Any:
    """``value`` as plain JSON values (the same object when it already is).

    Tuples and sets become lists, enums their values, non-finite floats null,
    Structs and dataclasses dicts; what JSON cannot hold (non-string keys, an
    arbitrary object) is an ``InvalidValueError``.
    """
    if _is_plain(value):
        return value
    try:
        builtins = msgspec.to_builtins(value, str_keys=False)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"{what} must hold JSON values: {exc}") from exc
    return _finite_json(builtins, what)


def _is_plain(value: Any) -> bool:
    kind = type(value)
    if kind in _JSON_SCALARS:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is dict:
        return all(type(k) is str and _is_plain(v) for k, v in value.items())
    if kind is list:
        return all(_is_plain(v) for v in value)
    return False


def _finite_json(value: Any, what: str) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise InvalidValueError(f"{what} keys must be strings, got {list(value)!r}")
        return {k: _finite_json(v, what) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v, what) for v in value]
    return value


def copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value
