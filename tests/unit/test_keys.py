"""Keys: exactly the documented strings for plain ids, injective for any ids (invariant 4)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoplay_obs.errors import InvalidIdError
from autoplay_obs.storage import (
    InMemoryStorageAdapter,
    on_session_end,
    on_session_start,
    session_key,
    user_state_key,
)
from autoplay_obs.storage._keys import MAX_ID_LENGTH
from autoplay_obs.user_adoption_state import SessionSnapshot, UserAdoptionState


@pytest.mark.parametrize(
    ("product", "user", "session"),
    [
        ("prod_1", "u_123", "sess_abc"),
        ("acme-co", "user.42@example.com", "2024-01-01T00-00-00"),
        ("P", "U", "S"),
        ("prod/with/slashes", "u+plus", "s=eq"),
    ],
)
def test_plain_ids_give_the_documented_keys(product: str, user: str, session: str) -> None:
    assert user_state_key(product, user) == f"autoplay:user:{product}:{user}:state"
    assert session_key(product, user, session) == f"autoplay:user:{product}:{user}:session:{session}"


def test_plain_keys_match_the_reference_package() -> None:
    from autoplay_sdk.storage import session_key as ref_session_key
    from autoplay_sdk.storage import user_state_key as ref_user_state_key

    assert user_state_key("prod_1", "u_123") == ref_user_state_key("prod_1", "u_123")
    assert session_key("prod_1", "u_123", "sess_abc") == ref_session_key("prod_1", "u_123", "sess_abc")


HAND_PICKED_COLLISIONS = [
    (("a:b", "c", "s"), ("a", "b:c", "s")),
    (("a", "b:c", "s"), ("a", "b", "c:s")),
    (("a", "b", "session:x"), ("a", "b:session", "x")),
    (("a", "b", "s:state"), ("a", "b", "s")),
    (("a%3Ab", "c", "s"), ("a:b", "c", "s")),
    (("a%25", "c", "s"), ("a%", "c", "s")),
    (("{a}", "b", "s"), ("a", "b", "s")),
    (("a b", "c", "s"), ("a%20b", "c", "s")),
    (("a\nb", "c", "s"), ("a%0Ab", "c", "s")),
    (("a\x00", "c", "s"), ("a", "c", "s")),
    (("é", "c", "s"), ("%C3%A9", "c", "s")),
    (("a\u200bb", "c", "s"), ("ab", "c", "s")),
    (("x", "state", "s"), ("x:state", "state", "s")),
]


@pytest.mark.parametrize(("one", "other"), HAND_PICKED_COLLISIONS)
def test_hand_picked_triples_never_share_a_key(
    one: tuple[str, str, str], other: tuple[str, str, str]
) -> None:
    assert one != other
    assert session_key(*one) != session_key(*other)
    if one[:2] != other[:2]:
        assert user_state_key(*one[:2]) != user_state_key(*other[:2])
    # a state key is never a session key
    keys = {user_state_key(*one[:2]), user_state_key(*other[:2])}
    assert not keys & {session_key(*one), session_key(*other)}


def test_state_keys_and_session_keys_never_collide() -> None:
    # "u:session:s" as a user id must not address user "u"'s snapshot "s" nor vice versa
    assert user_state_key("p", "u:session:s") != session_key("p", "u", "s:state")
    assert user_state_key("p", "u") != session_key("p", "u", "state")
    assert session_key("p", "u", "x") != user_state_key("p", "u:session:x")


def test_braces_cannot_become_a_cluster_hash_tag() -> None:
    # Two users of one product whose ids contain "{...}" must not be pinned to a chosen slot.
    key = user_state_key("p", "{tag}")
    assert "{" not in key and "}" not in key


def test_unsafe_characters_are_escaped_and_keys_stay_single_line() -> None:
    key = session_key("p\r\n", "u\t x", "s\x00\x7f")
    assert not any(c in key for c in "\r\n\t \x00\x7f")
    assert key.count(":") == 5


# A small alphabet of separators, escapes and their encodings makes near-collisions likely.
TRICKY = st.sampled_from(list("ab3A2:%{} \t\n\x00\x7fé\u200b\u2028"))
tricky_id = st.text(TRICKY, min_size=1, max_size=8).filter(lambda s: bool(s.strip()))
valid_id = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30).filter(lambda s: bool(s.strip()))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(tricky_id, tricky_id, tricky_id), min_size=2, max_size=6, unique=True))
def test_distinct_triples_never_share_a_key(triples: list[tuple[str, str, str]]) -> None:
    session_keys = {session_key(*t) for t in triples}
    assert len(session_keys) == len(triples)
    pairs = {t[:2] for t in triples}
    state_keys = {user_state_key(*pair) for pair in pairs}
    assert len(state_keys) == len(pairs)
    assert not state_keys & session_keys


@settings(max_examples=100, deadline=None)
@given(valid_id, valid_id, valid_id)
def test_keys_split_back_into_exactly_three_ids(product: str, user: str, session: str) -> None:
    parts = session_key(product, user, session).split(":")
    assert parts[:2] == ["autoplay", "user"]
    assert parts[4] == "session"
    assert len(parts) == 6
    state_parts = user_state_key(product, user).split(":")
    assert len(state_parts) == 5 and state_parts[-1] == "state"
    assert state_parts[2:4] == parts[2:4]


def test_ids_of_exactly_max_length_are_accepted_and_distinct() -> None:
    a = "a" * MAX_ID_LENGTH
    b = ":" * MAX_ID_LENGTH
    assert MAX_ID_LENGTH == 512
    assert session_key(a, a, a).endswith(a)
    assert session_key(b, b, b) != session_key(b, b, b[:-1] + "%")
    assert len({session_key(a, b, a), session_key(b, a, a), session_key(a, a, b)}) == 3


BAD_IDS: list[Any] = [
    "",
    " ",
    "\t\n",
    "\u3000",
    "x" * (MAX_ID_LENGTH + 1),
    None,
    5,
    b"bytes",
    ["u"],
    "a\ud800b",
]


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_bad_ids_raise_invalid_id_error(bad: Any) -> None:
    with pytest.raises(InvalidIdError):
        user_state_key(bad, "u")
    with pytest.raises(InvalidIdError):
        user_state_key("p", bad)
    with pytest.raises(InvalidIdError):
        session_key("p", "u", bad)
    with pytest.raises(ValueError):  # InvalidIdError is also a ValueError
        session_key(bad, "u", "s")


class _CountingAdapter(InMemoryStorageAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def load_state(self, product_id: str, user_id: str) -> Any:
        self.calls += 1
        return await super().load_state(product_id, user_id)

    async def create_snapshot(self, product_id: str, user_id: str, session_id: str, raw: bytes) -> bool:
        self.calls += 1
        return await super().create_snapshot(product_id, user_id, session_id, raw)


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
@pytest.mark.parametrize("position", [0, 1, 2])
async def test_bad_ids_raise_from_on_session_start_before_any_io(bad: Any, position: int) -> None:
    storage = _CountingAdapter()
    ids = ["prod_1", "u_1", "sess_1"]
    ids[position] = bad
    with pytest.raises(InvalidIdError):
        await on_session_start(ids[0], ids[1], ids[2], storage=storage)
    assert storage.calls == 0


def _snapshot_with_session_id(session_id: Any) -> SessionSnapshot:
    # The constructor does not validate; the lifecycle must.
    return SessionSnapshot(session_id=session_id, session_number=1, user_id="u_1", started_at=1.0)


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
@pytest.mark.parametrize("position", [0, 1, 2])
async def test_bad_ids_raise_from_on_session_end_before_any_io(bad: Any, position: int) -> None:
    storage = _CountingAdapter()
    ids = ["prod_1", "u_1", "sess_1"]
    ids[position] = bad
    snapshot = (
        _snapshot_with_session_id(bad)
        if position == 2
        else SessionSnapshot.from_adoption_state(
            UserAdoptionState(user_id="u_1"),
            session_id="sess_1",
            session_number=1,
            started_at=1.0,
            catalog_workflow_ids=[],
            now=2.0,
        )
    )
    with pytest.raises(InvalidIdError):
        await on_session_end(ids[0], ids[1], snapshot, storage=storage, summary="s")
    assert storage.calls == 0


async def test_ids_with_separators_are_isolated_in_a_real_store() -> None:
    storage = InMemoryStorageAdapter()
    pairs = [("a:b", "c"), ("a", "b:c"), ("a%3Ab", "c"), ("a", "b%3Ac"), ("a", "b c"), ("a", "b%20c")]
    for i, (p, u) in enumerate(pairs):
        await on_session_start(p, u, f"s{i}", storage=storage)
    for i, (p, u) in enumerate(pairs):
        stored = await storage.get_user_state(p, u)
        assert stored is not None
        assert (stored["user_id"], stored["sessions"]["current_session_id"]) == (u, f"s{i}")
