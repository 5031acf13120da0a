"""Redis keys for the two tiers, injective for any ids.

Ids made of ordinary characters give exactly the documented keys
(``autoplay:user:{product_id}:{user_id}:state``). Characters that could make
two triples collide or change Redis Cluster slotting -- the ``:`` separator,
``%`` itself, braces (hash tags), whitespace and control characters -- are
percent-encoded as UTF-8 bytes. Because ``%`` is always escaped and encoded ids
never contain ``:``, splitting a key on ``:`` recovers each id uniquely, so no
two distinct (product, user, session) triples share a key.
"""

from __future__ import annotations

import re
from typing import Final

from autoplay_obs.errors import InvalidIdError

__all__ = ["MAX_ID_LENGTH", "encode_id", "session_key", "user_state_key", "validate_id"]

MAX_ID_LENGTH: Final = 512
_UNSAFE: Final = re.compile(r"[:%{}\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")


def validate_id(value: object, what: str) -> str:
    """Refuse ids that cannot address stored data: not str, blank, absurdly long, or not
    text a key can hold (a lone surrogate, which JSON's ``\\ud800`` escape can produce)."""
    if not isinstance(value, str):
        raise InvalidIdError(f"{what} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise InvalidIdError(f"{what} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidIdError(f"{what} is {len(value)} characters; at most {MAX_ID_LENGTH}")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidIdError(f"{what} holds a lone surrogate, which no key can hold") from None
    return value


def encode_id(value: str) -> str:
    if _UNSAFE.search(value) is None:
        return value
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), value)


def user_state_key(product_id: str, user_id: str) -> str:
    product = encode_id(validate_id(product_id, "product_id"))
    user = encode_id(validate_id(user_id, "user_id"))
    return f"autoplay:user:{product}:{user}:state"


def session_key(product_id: str, user_id: str, session_id: str) -> str:
    product = encode_id(validate_id(product_id, "product_id"))
    user = encode_id(validate_id(user_id, "user_id"))
    session = encode_id(validate_id(session_id, "session_id"))
    return f"autoplay:user:{product}:{user}:session:{session}"
