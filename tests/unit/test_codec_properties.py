"""Property-based round trips: any valid document survives encode/decode unchanged.

The strategies are derived from the Structs' own type information
(``msgspec.inspect``), so a field added to a model is generated without
touching this file. A few rules no type can express (unique features, the
index cap, a non-blank source) are given as per-field overrides.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoplay_obs.user_adoption_state import (
    MAX_SESSION_INDEX,
    SessionIndexEntry,
    Sessions,
    SessionSnapshot,
    UserAdoptionState,
    WorkflowProgress,
    decode_session_snapshot,
    decode_user_state,
    encode,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.text(min_size=1, max_size=12).filter(lambda s: s.strip() != "")
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


def _sessions() -> st.SearchStrategy[Sessions]:
    """The index holds at most 50 entries and the lifetime count is at least its length."""
    return st.builds(
        lambda index, extra, current: Sessions(
            count=len(index) + extra, current_session_id=current, index=index
        ),
        st.lists(struct_strategy(SessionIndexEntry), max_size=MAX_SESSION_INDEX),
        st.integers(min_value=0, max_value=10_000),
        st.none() | st.text(max_size=12),
    )


# Rules outside the type system, keyed by (Struct, field name).
OVERRIDES: dict[tuple[type[Any], str], st.SearchStrategy[Any]] = {
    (UserAdoptionState, "user_id"): names,
    (UserAdoptionState, "discovered_features"): st.lists(names, unique=True, max_size=6),
    (WorkflowProgress, "source"): names,
}


def strategy_for(t: mi.Type) -> st.SearchStrategy[Any]:
    """A strategy of valid Python values for one msgspec type."""
    if isinstance(t, mi.FloatType):
        low = t.ge if t.ge is not None else -1e15
        high = t.le if t.le is not None else 1e15
        return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
    if isinstance(t, mi.IntType):
        low = t.ge if t.ge is not None else -(2**31)
        high = t.le if t.le is not None else 2**31
        return st.integers(min_value=low, max_value=high)
    if isinstance(t, mi.StrType):
        return st.text(max_size=16)
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.EnumType):
        return st.sampled_from(list(t.cls))
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.UnionType):
        return st.one_of([strategy_for(member) for member in t.types])
    if isinstance(t, mi.ListType):
        return st.lists(strategy_for(t.item_type), max_size=3)
    if isinstance(t, mi.VarTupleType):
        return st.lists(strategy_for(t.item_type), max_size=3).map(tuple)
    if isinstance(t, mi.DictType):
        return st.dictionaries(strategy_for(t.key_type), strategy_for(t.value_type), max_size=3)
    if isinstance(t, mi.AnyType):
        return json_values
    if isinstance(t, mi.StructType):
        return struct_strategy(t.cls)
    raise NotImplementedError(f"no strategy for {t!r}; extend strategy_for")


def struct_strategy(cls: type[Any]) -> st.SearchStrategy[Any]:
    if cls is Sessions:
        return st.deferred(_sessions)
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    fields = {
        f.name: OVERRIDES[(cls, f.name)]
        if (cls, f.name) in OVERRIDES
        else st.deferred(lambda t=f.type: strategy_for(t))
        for f in info.fields
    }
    return st.builds(cls, **fields)


states = struct_strategy(UserAdoptionState)
snapshots = struct_strategy(SessionSnapshot)


def document_structs() -> dict[type[Any], mi.StructType]:
    """Every Struct type reachable from the two stored documents."""
    found: dict[type[Any], mi.StructType] = {}

    def walk(t: mi.Type) -> None:
        if isinstance(t, mi.StructType):
            if t.cls in found:
                return
            found[t.cls] = t
            for f in t.fields:
                walk(f.type)
        for child in ("item_type", "key_type", "value_type"):
            if hasattr(t, child):
                walk(getattr(t, child))
        for member in getattr(t, "types", ()):
            walk(member)

    walk(mi.type_info(UserAdoptionState))
    walk(mi.type_info(SessionSnapshot))
    return found


DOCUMENT_STRUCT_NAMES = {
    "UserAdoptionState",
    "SessionSnapshot",
    "OnboardingState",
    "WorkflowProgress",
    "StepProgress",
    "StepInAssessment",
    "Sessions",
    "SessionIndexEntry",
    "Mastery",
}


def test_the_strategies_cover_every_field_of_the_stored_documents():
    """A model field of a type the strategies do not know fails here first."""
    structs = document_structs()
    for info in structs.values():
        for f in info.fields:
            strategy_for(f.type)  # raises NotImplementedError for an unknown type
    assert {c.__name__ for c in structs} >= DOCUMENT_STRUCT_NAMES


@SETTINGS
@given(state=states)
def test_state_round_trips_through_bytes_and_dict(state):
    raw = encode(state)
    result = decode_user_state(raw)
    assert result.repairs == ()
    assert result.value == state
    assert encode(result.value) == raw
    from_dict = decode_user_state(state.to_dict())
    assert from_dict.repairs == ()
    assert from_dict.value == state
    assert UserAdoptionState.from_dict(state.to_dict()) == state


@SETTINGS
@given(snapshot=snapshots)
def test_snapshot_round_trips_through_bytes_and_dict(snapshot):
    raw = encode(snapshot)
    result = decode_session_snapshot(raw)
    assert result.repairs == ()
    assert result.value == snapshot
    assert encode(result.value) == raw
    from_dict = decode_session_snapshot(snapshot.to_dict())
    assert from_dict.repairs == ()
    assert from_dict.value == snapshot
    assert SessionSnapshot.from_dict(snapshot.to_dict()) == snapshot


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=states)
def test_generated_values_respect_the_stored_ranges(state):
    """Guards the strategies themselves: a lax strategy would make the tests above vacuous."""
    doc = msgspec.json.decode(encode(state))
    assert 0 <= doc["mastery"]["rating"] <= 10
    assert 0.0 <= doc["onboarding"]["completion_rate"] <= 1.0
    assert 0.0 <= doc["first_seen_at"] <= 1e11
    assert len(doc["sessions"]["index"]) <= MAX_SESSION_INDEX <= 50
    assert doc["sessions"]["count"] >= len(doc["sessions"]["index"])
    for wp in doc["onboarding"]["workflow_progress"].values():
        assert 0.0 <= wp["confidence"] <= 1.0
        assert math.isfinite(wp["last_evaluated_at"])
