"""Deep copies of documents share nothing mutable, and the manager's kept copies stay its own.

Why: the storage layer hands every caller an object of its own and keeps a
copy of the state it last wrote (``_copy.deep_copy`` instead of decoding
again). A copy that shared one list with the caller's object would let an
unsaved change in the host leak into the next write. These tests walk copies
generically (every Struct field, dict, list, tuple), so a field added to a
document later is checked without touching this file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any

import msgspec
import msgspec.inspect as mi
from hypothesis import HealthCheck, given, settings
from test_codec_properties import DOCUMENT_STRUCT_NAMES, document_structs, snapshots, states

from autoplay_obs.storage import InMemoryStorageAdapter, StorageManager, end_session, start_session
from autoplay_obs.user_adoption_state import (
    SessionIndexEntry,
    SessionSnapshot,
    StepInAssessment,
    UserAdoptionState,
    WorkflowProgress,
    WorkflowStatus,
    _copy,
    decode_user_state,
    encode,
)
from autoplay_obs.user_adoption_state._copy import copier, deep_copy

if TYPE_CHECKING:
    from conftest import Backend

P, U = "prod_1", "u_1"
T0 = 1_600_000_000.0
MakeSnapshot = Callable[..., SessionSnapshot]
PROPERTY_SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IMMUTABLE_LEAVES = (str, int, float, bool, type(None), Enum, bytes, msgspec.UnsetType)


# -- helpers -----------------------------------------------------------------------------------


def rich_state(user_id: str = "u_rich", *, with_sessions: bool = True) -> UserAdoptionState:
    """A state with every part populated: progress with steps, step-in, nested metadata, index."""
    state = UserAdoptionState(
        user_id=user_id,
        metadata={
            "role": "admin",
            "plan": {"tier": "pro", "seats": [1, 2, {"nested": ["x", "y"]}]},
            "tags": ["alpha", "beta"],
            "flags": {"beta": True, "limits": {"max": 3, "none": None}},
            "ratio": 1.5,
        },
        first_seen_at=T0,
        last_updated_at=T0,
    )
    onboarding = state.onboarding
    onboarding.exploration_started_at = T0
    onboarding.distinct_features_seen = 4
    create = onboarding.upsert_workflow_progress(
        "create_project",
        status="in_progress",
        confidence=0.5,
        evidence="opened the form",
        source="agent",
        now=T0 + 1,
    )
    create.upsert_step_progress("open_form", status="completed", confidence=0.9, evidence="seen", now=T0 + 2)
    create.upsert_step_progress("submit", status="in_progress", confidence=0.3, now=T0 + 3)
    invite = onboarding.upsert_workflow_progress(
        "invite_team", status="completed", confidence=1.0, now=T0 + 4
    )
    invite.upsert_step_progress("send", status="completed", confidence=1.0, now=T0 + 4)
    onboarding.record_step_in(
        StepInAssessment(
            decided_at=T0 + 5,
            should_step_in=True,
            timing_assessment="idle for a while",
            reason="stuck on submit",
            suggested_workflow_ids=["create_project", "invite_team"],
        )
    )
    state.record_discovered_features(["search", "export", "share"])
    state.set_mastery(rating=6, level="intermediate", description="knows the basics")
    state.mark_welcomed(now=T0 + 6)
    state.mark_judged(now=T0 + 7)
    if with_sessions:
        for n in (1, 2, 3):
            state.record_session(
                SessionIndexEntry(
                    session_id=f"s{n}", session_number=n, started_at=T0 + 10 * n, captured_at=T0 + 10 * n + 5
                )
            )
        state.set_current_session("s4")
        onboarding.mark_onboarding_complete(now=T0 + 40)
        state.revision = "r" * 32
    state.last_updated_at = T0 + 8
    return state


def rich_snapshot() -> SessionSnapshot:
    return SessionSnapshot.from_adoption_state(
        rich_state(),
        session_id="s4",
        session_number=4,
        started_at=T0 + 50,
        catalog_workflow_ids=["create_project", "invite_team", "export_report"],
        now=T0 + 90,
    )


def assert_shares_nothing_mutable(copy: Any, original: Any, path: str = "$") -> None:
    """Walk both in parallel: every dict, list and non-frozen Struct of the copy is a new object."""
    assert type(copy) is type(original), f"{path}: {type(copy).__name__} != {type(original).__name__}"
    if isinstance(original, msgspec.Struct):
        if not type(original).__struct_config__.frozen:
            assert copy is not original, f"{path}: the {type(original).__name__} is shared"
        for name in original.__struct_fields__:
            assert_shares_nothing_mutable(getattr(copy, name), getattr(original, name), f"{path}.{name}")
    elif isinstance(original, dict):
        assert copy is not original, f"{path}: the dict is shared"
        assert list(copy) == list(original), f"{path}: keys or their order differ"
        for key, value in original.items():
            assert_shares_nothing_mutable(copy[key], value, f"{path}[{key!r}]")
    elif isinstance(original, list):
        assert copy is not original, f"{path}: the list is shared"
        assert len(copy) == len(original), f"{path}: lengths differ"
        for i, (mine, theirs) in enumerate(zip(copy, original, strict=True)):
            assert_shares_nothing_mutable(mine, theirs, f"{path}[{i}]")
    elif isinstance(original, tuple):  # may be shared when it holds only immutable values
        assert len(copy) == len(original), f"{path}: lengths differ"
        for i, (mine, theirs) in enumerate(zip(copy, original, strict=True)):
            assert_shares_nothing_mutable(mine, theirs, f"{path}[{i}]")
    else:
        assert isinstance(original, IMMUTABLE_LEAVES), f"{path}: unexpected mutable leaf {original!r}"
        assert copy == original, f"{path}: {copy!r} != {original!r}"


def _other(value: Any) -> Any:
    """A different scalar of the same kind; a container is returned as is (mutated in place)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, Enum):
        return next((m for m in type(value) if m is not value), value)
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "~"
    if value is None:
        return "was None"
    return value


def scramble(value: Any) -> None:
    """Change, in place, every mutable part of ``value`` (children first, then the container)."""
    if isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            scramble(getattr(value, name))
        if not type(value).__struct_config__.frozen:
            for name in value.__struct_fields__:
                setattr(value, name, _other(getattr(value, name)))
    elif isinstance(value, dict):
        for item in value.values():
            scramble(item)
        value["~scrambled"] = ["junk"]
    elif isinstance(value, list):
        for item in value:
            scramble(item)
        value.append("junk")
        value.reverse()
    elif isinstance(value, tuple):
        for item in value:
            scramble(item)


def assert_copies_are_independent(original: msgspec.Struct) -> None:
    """Scrambling a copy leaves the original's bytes alone, and the other way round.

    The original is scrambled in the second half: callers pass a document of their own.
    """
    before = encode(original)
    copy = deep_copy(original)
    scramble(copy)
    assert copy != original  # the scramble reached something: the check is not vacuous
    assert encode(original) == before

    copy = deep_copy(original)
    scramble(original)
    assert encode(copy) == before


# -- 1. a copy shares nothing mutable ------------------------------------------------------------


def test_a_rich_state_copy_is_equal_and_shares_nothing_mutable() -> None:
    state = rich_state()
    copy = deep_copy(state)
    assert copy == state
    assert encode(copy) == encode(state)
    assert_shares_nothing_mutable(copy, state)


def test_a_snapshot_copy_is_equal_and_shares_nothing_mutable() -> None:
    snapshot = rich_snapshot()
    assert snapshot.workflow_progress and snapshot.workflow_progress["create_project"].steps
    copy = deep_copy(snapshot)
    assert copy == snapshot
    assert_shares_nothing_mutable(copy, snapshot)


def test_metadata_of_json_shapes_and_structs_is_copied_all_the_way_down() -> None:
    """``metadata`` is free-form: decoded JSON, or a Struct or tuple a host put there."""
    state = UserAdoptionState(
        user_id="u",
        metadata={
            "deep": [[{"a": [{"b": {"c": []}}]}]],
            "struct": StepInAssessment(decided_at=T0, suggested_workflow_ids=["w"]),
            "tuple": ({"in": ["tuple"]}, "x"),
        },
    )
    copy = deep_copy(state)
    assert copy == state
    assert_shares_nothing_mutable(copy, state)


def test_metadata_a_host_filled_with_non_json_containers_is_copied_too() -> None:
    """A set, a bytearray or a dataclass a host put in ``metadata`` is not shared with the copy."""

    @dataclasses.dataclass
    class Tags:
        names: list[str]

    state = UserAdoptionState(
        user_id="u", metadata={"set": {"a"}, "bytes": bytearray(b"x"), "tags": Tags(["t"]), "n": 1}
    )
    copy = deep_copy(state)
    assert copy == state
    for key in ("set", "bytes", "tags"):
        assert copy.metadata[key] is not state.metadata[key]
    copy.metadata["set"].add("b")
    copy.metadata["tags"].names.append("u")
    assert state.metadata["set"] == {"a"} and state.metadata["tags"].names == ["t"]


@PROPERTY_SETTINGS
@given(state=states)
def test_generated_state_copies_share_nothing_mutable(state: UserAdoptionState) -> None:
    copy = deep_copy(state)
    assert copy == state
    assert encode(copy) == encode(state)
    assert_shares_nothing_mutable(copy, state)


@PROPERTY_SETTINGS
@given(snapshot=snapshots)
def test_generated_snapshot_copies_share_nothing_mutable(snapshot: SessionSnapshot) -> None:
    copy = deep_copy(snapshot)
    assert copy == snapshot
    assert_shares_nothing_mutable(copy, snapshot)


# -- 2. changing a copy never changes the original -------------------------------------------------


def test_changing_every_mutable_part_of_a_state_copy_leaves_the_original_bytes() -> None:
    assert_copies_are_independent(rich_state())


def test_changing_a_state_copy_by_its_own_methods_leaves_the_original_bytes() -> None:
    """The mutations a host makes in practice, spelled out."""
    state = rich_state()
    before = encode(state)
    copy = deep_copy(state)
    copy.metadata["plan"]["seats"][2]["nested"].append("z")
    copy.metadata["flags"]["limits"]["max"] = 99
    copy.metadata["tags"].clear()
    copy.onboarding.workflow_progress["create_project"].upsert_step_progress(
        "submit", status="completed", confidence=1.0, now=T0 + 100
    )
    copy.onboarding.workflow_progress["create_project"].steps["open_form"].evidence = "changed"
    copy.onboarding.upsert_workflow_progress(
        "new_workflow", status="in_progress", confidence=0.1, now=T0 + 100
    )
    assert copy.onboarding.last_step_in is not None
    copy.onboarding.last_step_in.suggested_workflow_ids.append("new_workflow")
    copy.onboarding.last_step_in.reason = "changed"
    copy.record_discovered_features(["new_feature"])
    copy.mastery.rating = 10
    copy.sessions.index[0].captured_at = T0 + 1000
    copy.sessions.index.pop()
    copy.sessions.count = 999
    copy.onboarding.welcomed = False
    assert encode(state) == before


def test_changing_every_mutable_part_of_a_snapshot_copy_leaves_the_original_bytes() -> None:
    assert_copies_are_independent(rich_snapshot())


@PROPERTY_SETTINGS
@given(state=states)
def test_changing_a_generated_state_copy_leaves_the_original_bytes(state: UserAdoptionState) -> None:
    assert_copies_are_independent(state)


@PROPERTY_SETTINGS
@given(snapshot=snapshots)
def test_changing_a_generated_snapshot_copy_leaves_the_original_bytes(snapshot: SessionSnapshot) -> None:
    assert_copies_are_independent(snapshot)


def test_a_snapshot_taken_from_a_state_shares_nothing_with_it() -> None:
    """``from_adoption_state`` copies progress and mastery; the live state changes afterwards."""
    state = rich_state()
    snapshot = SessionSnapshot.from_adoption_state(
        state,
        session_id="s9",
        session_number=9,
        started_at=T0,
        catalog_workflow_ids=["create_project"],
        now=T0 + 1,
    )
    frozen = encode(snapshot)
    assert snapshot.workflow_progress == state.onboarding.workflow_progress
    assert_shares_nothing_mutable(snapshot.workflow_progress, state.onboarding.workflow_progress)
    scramble(state)
    assert encode(snapshot) == frozen


def test_a_state_merged_from_a_snapshot_shares_nothing_with_it() -> None:
    """``apply_session_snapshot`` copies what it takes, so the state never aliases the snapshot."""
    snapshot = rich_snapshot()
    state = UserAdoptionState(user_id="u_rich", first_seen_at=T0, last_updated_at=T0)
    assert state.apply_session_snapshot(snapshot, summary="merged").recorded
    assert state.onboarding.workflow_progress == snapshot.workflow_progress
    assert state.mastery == snapshot.mastery
    assert_shares_nothing_mutable(state.onboarding.workflow_progress, snapshot.workflow_progress)
    assert state.mastery is not snapshot.mastery
    merged = encode(state)
    scramble(snapshot)  # its progress and mastery are mutable Structs inside a frozen one
    assert encode(state) == merged

    snapshot = rich_snapshot()
    state = UserAdoptionState(user_id="u_rich", first_seen_at=T0, last_updated_at=T0)
    state.apply_session_snapshot(snapshot)
    frozen = encode(snapshot)
    scramble(state)
    assert encode(snapshot) == frozen


def test_copier_of_a_progress_mapping_copies_every_workflow_and_step() -> None:
    progress = rich_state().onboarding.workflow_progress
    copy = copier(dict[str, WorkflowProgress])(progress)
    assert copy == progress
    assert_shares_nothing_mutable(copy, progress)


# -- 3. a guard for fields added later ---------------------------------------------------------

# Kinds a copy may share: immutable values. Kinds the copier rebuilds: containers and Structs.
IMMUTABLE_KINDS: tuple[type[mi.Type], ...] = (
    mi.StrType,
    mi.IntType,
    mi.FloatType,
    mi.BoolType,
    mi.NoneType,
    mi.EnumType,
    mi.LiteralType,
    mi.BytesType,
)
# Fields holding free-form values (``Any``): copied by ``_copy_any``, which knows JSON shapes.
FREE_FORM_FIELDS = {(UserAdoptionState, "metadata")}


def not_copyable(t: mi.Type, path: str, *, free_form: bool = False) -> list[str]:
    """The parts of a field type that ``deep_copy`` would share although they are mutable."""
    if isinstance(t, (*IMMUTABLE_KINDS, mi.StructType)):  # a Struct's fields are checked separately
        return []
    if isinstance(t, mi.AnyType):
        return [] if free_form else [f"{path}: Any outside the known free-form fields"]
    if isinstance(t, mi.DictType):
        keys = [] if isinstance(t.key_type, IMMUTABLE_KINDS) else [f"{path}: dict key {t.key_type!r}"]
        return keys + not_copyable(t.value_type, f"{path}[value]", free_form=free_form)
    if isinstance(t, (mi.ListType, mi.VarTupleType)):
        return not_copyable(t.item_type, f"{path}[item]", free_form=free_form)
    if isinstance(t, mi.UnionType):
        return [
            p for m in t.types for p in not_copyable(m, f"{path}|{type(m).__name__}", free_form=free_form)
        ]
    return [f"{path}: {type(t).__name__} is not copied by _copy (a set, bytearray, dataclass...?)"]


def test_every_document_field_is_either_copied_or_immutable() -> None:
    """A field of a kind the copier would share although mutable (a set, say) fails here first."""
    structs = document_structs()
    assert {cls.__name__ for cls in structs} >= DOCUMENT_STRUCT_NAMES
    problems = [
        problem
        for cls, info in structs.items()
        for f in info.fields
        for problem in not_copyable(
            f.type, f"{cls.__name__}.{f.name}", free_form=(cls, f.name) in FREE_FORM_FIELDS
        )
    ]
    assert problems == [], "extend _copy.py (and this guard) for: " + "; ".join(problems)


def test_the_copier_shares_only_kinds_that_are_immutable() -> None:
    """Adding a mutable kind (``ByteArrayType``, ``SetType``) to ``_IMMUTABLE`` fails here."""
    assert set(_copy._IMMUTABLE) <= set(IMMUTABLE_KINDS)


@dataclasses.dataclass
class _Point:
    x: int


class _FutureDocument(msgspec.Struct):
    """Field kinds a model might gain later; all but ``fine`` would be shared by a copy."""

    tags: set[str] = set()
    blob: bytearray = bytearray()
    point: _Point | None = None
    pair: tuple[list[int], str] = ([], "")
    extra: dict[str, Any] = {}
    fine: list[dict[str, tuple[str, ...]]] = []


def test_the_guard_catches_kinds_the_copier_would_share() -> None:
    """Non-vacuous: the kinds a model might gain later are reported."""
    info = mi.type_info(_FutureDocument)
    assert isinstance(info, mi.StructType)
    flagged = {f.name for f in info.fields if not_copyable(f.type, f.name)}
    assert flagged == {"tags", "blob", "point", "pair", "extra"}


# -- 4. frozen snapshots ---------------------------------------------------------------------------


def test_a_frozen_snapshot_copy_is_equal_with_new_progress_and_mastery() -> None:
    snapshot = rich_snapshot()
    copy = deep_copy(snapshot)
    assert copy == snapshot
    assert copy.workflow_progress is not snapshot.workflow_progress
    for wid, progress in snapshot.workflow_progress.items():
        assert copy.workflow_progress[wid] is not progress
        assert copy.workflow_progress[wid].steps is not progress.steps
    assert copy.mastery is not snapshot.mastery
    assert copy.discovered_features == snapshot.discovered_features  # a tuple of str: may be shared


def test_an_empty_snapshot_copy_still_has_its_own_progress_and_mastery() -> None:
    snapshot = SessionSnapshot(session_id="s1", session_number=1, user_id="u", started_at=T0, captured_at=T0)
    copy = deep_copy(snapshot)
    assert copy == snapshot
    assert copy.workflow_progress is not snapshot.workflow_progress
    assert copy.mastery is not snapshot.mastery


# -- B. the manager's kept copies ------------------------------------------------------------------


def comparable(state: UserAdoptionState) -> dict[str, Any]:
    """The document without what differs between two runs anyway (revision, wall-clock touch)."""
    doc = state.to_dict()
    doc.pop("_rev", None)
    doc.pop("last_updated_at")
    return doc


def tamper_state(state: UserAdoptionState) -> None:
    """What a careless host might do to a returned state without saving it."""
    scramble(state)
    state.sessions.count = 999
    state.sessions.index.clear()
    state.sessions.current_session_id = "hijacked"
    state.onboarding.upsert_workflow_progress("bogus", status="completed", confidence=1.0, now=T0)
    state.metadata["injected"] = {"nested": ["leak"]}
    state.discovered_features.append("leaked_feature")


def tamper_snapshot(snapshot: SessionSnapshot) -> None:
    """A returned snapshot is frozen, but its progress and mastery are mutable inside."""
    scramble(snapshot)
    snapshot.mastery.rating = 10
    snapshot.workflow_progress.clear()


def assert_manager_keeps_its_own_copy(storage: StorageManager, handed_out: UserAdoptionState) -> None:
    """White-box: the scenario really exercises the kept copy (else it would prove nothing)."""
    known = storage._states.get((P, U))
    assert known is not None and known.state is not None
    assert known.state is not handed_out


async def lifecycle(
    storage: StorageManager, make_snapshot: MakeSnapshot, *, tamper: bool
) -> list[tuple[Any, ...]]:
    """Four sessions, each ended and retried; with ``tamper``, every returned object is wrecked."""
    seen: list[tuple[Any, ...]] = []
    await storage.save_user_state(P, U, rich_state(U, with_sessions=False).to_dict())
    for n in (1, 2, 3, 4):
        start = await start_session(P, U, f"s{n}", storage)
        assert start.persisted
        onboarding = start.onboarding_session
        seen.append((f"start s{n}", comparable(start.state), onboarding and onboarding.to_dict()))
        # The host's own work happens on a copy made by a JSON round trip, not by deep_copy.
        work = decode_user_state(encode(start.state)).value
        if tamper:
            assert_manager_keeps_its_own_copy(storage, start.state)
            tamper_state(start.state)
            if onboarding is not None:
                tamper_snapshot(onboarding)
        work.onboarding.upsert_workflow_progress(
            f"wf{n}", status="completed", confidence=0.8, now=T0 + 100 * n
        )
        work.record_discovered_features([f"feature{n}"])
        snapshot = make_snapshot(f"s{n}", number=n, user_id=U, state=work)
        end = await end_session(P, U, snapshot, storage, summary=f"summary {n}")
        assert end.persisted and not end.duplicate
        seen.append((f"end s{n}", comparable(end.state)))
        if tamper:
            assert_manager_keeps_its_own_copy(storage, end.state)
            tamper_state(end.state)
        retry = await end_session(P, U, snapshot, storage, summary=f"summary {n}")
        assert retry.duplicate
        seen.append((f"retried end s{n}", comparable(retry.state)))
        if tamper:
            tamper_state(retry.state)
    stored = await storage.get_user_state(P, U)
    assert stored is not None
    stored.pop("last_updated_at")
    seen.append(("stored", stored))
    return seen


async def test_wrecking_returned_states_and_snapshots_never_reaches_the_store(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    """Every later result equals that of a run in which nobody touched the returned objects."""
    control = await lifecycle(StorageManager([InMemoryStorageAdapter()]), make_snapshot, tamper=False)
    tampered = await lifecycle(StorageManager([backend.adapter]), make_snapshot, tamper=True)
    for expected, got in zip(control, tampered, strict=True):
        assert got == expected, f"{got[0]}: differs from the untouched run"

    final = tampered[-1][1]
    seed = rich_state(U, with_sessions=False)
    assert final["sessions"]["count"] == 4
    assert [e["session_id"] for e in final["sessions"]["index"]] == ["s1", "s2", "s3", "s4"]
    assert final["sessions"]["current_session_id"] == "s4"  # the last start opened it
    assert final["metadata"] == seed.metadata
    assert "bogus" not in final["onboarding"]["workflow_progress"]
    assert set(final["onboarding"]["workflow_progress"]) == {
        "create_project",
        "invite_team",
        "wf1",
        "wf2",
        "wf3",
        "wf4",
    }
    assert "leaked_feature" not in final["discovered_features"]
    assert final["onboarding"]["summary"] == "summary 4"


async def test_a_wrecked_onboarding_snapshot_does_not_change_the_next_one_returned(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    """The first start decodes the snapshot, later ones copy the cached one: both stay apart."""
    storage = StorageManager([backend.adapter])
    await storage.save_user_state(P, U, rich_state(U, with_sessions=False).to_dict())
    start = await start_session(P, U, "s1", storage)
    first = make_snapshot("s1", number=1, user_id=U, state=start.state)
    assert first.workflow_progress and first.mastery.rating == 6
    await end_session(P, U, first, storage)
    for n in (2, 3, 4):
        onboarding = (await start_session(P, U, f"s{n}", storage)).onboarding_session
        assert onboarding == first
        assert onboarding is not None
        onboarding.workflow_progress["create_project"].steps.clear()
        onboarding.workflow_progress["create_project"].status = WorkflowStatus.COMPLETED
        onboarding.workflow_progress.pop("invite_team")
        onboarding.mastery.rating = 0
        onboarding.mastery.description = "changed"
    assert await storage.get_session_snapshot(P, U, "s1") == first.to_dict()


async def test_a_change_the_host_never_saved_is_not_written_by_the_next_session_end(
    backend: Backend, make_snapshot: MakeSnapshot
) -> None:
    """The case the kept copy exists for, spelled out: count, index and metadata intact."""
    storage = StorageManager([backend.adapter])
    await storage.save_user_state(P, U, rich_state(U, with_sessions=False).to_dict())
    await start_session(P, U, "s1", storage)
    await end_session(P, U, make_snapshot("s1", number=1, user_id=U), storage)
    start = await start_session(P, U, "s2", storage)
    fresh = decode_user_state(encode(start.state)).value
    assert start.state.sessions.count == 1

    start.state.sessions.count = 999
    start.state.sessions.index.clear()
    start.state.metadata["plan"]["seats"].append("leak")
    start.state.metadata["role"] = "hijacked"
    start.state.onboarding.workflow_progress.clear()
    start.state.onboarding.upsert_workflow_progress("bogus", status="completed", confidence=1.0, now=T0)

    end = await end_session(P, U, make_snapshot("s2", number=2, user_id=U, state=fresh), storage)
    for state in (end.state, decode_user_state(await storage.get_user_state(P, U) or {}).value):
        assert state.sessions.count == 2
        assert [e.session_id for e in state.sessions.index] == ["s1", "s2"]
        assert state.metadata == rich_state(U).metadata
        assert set(state.onboarding.workflow_progress) == {"create_project", "invite_team"}


async def test_the_state_handed_out_for_a_retried_end_is_the_callers_alone(
    make_snapshot: MakeSnapshot,
) -> None:
    """A duplicate end returns a state without writing; wrecking it must not reach the next start."""
    storage = StorageManager([InMemoryStorageAdapter()])
    await start_session(P, U, "s1", storage)
    snapshot = make_snapshot("s1", number=1, user_id=U)
    await end_session(P, U, snapshot, storage)
    retry = await end_session(P, U, snapshot, storage)
    assert retry.duplicate
    tamper_state(retry.state)
    start = await start_session(P, U, "s2", storage)
    assert start.state.sessions.count == 1
    assert [e.session_id for e in start.state.sessions.index] == ["s1"]
    assert start.state.current_session_id == "s2"
    assert "bogus" not in start.state.onboarding.workflow_progress


async def test_a_state_the_manager_cannot_copy_is_still_written_and_read_back(backend: Backend) -> None:
    """A value a host put in metadata that deepcopy refuses costs the kept copy, not the write."""
    storage = StorageManager([backend.adapter])

    def add_view(state: UserAdoptionState) -> bool:
        state.metadata["raw"] = memoryview(b"abc")  # msgspec writes it (base64); deepcopy cannot copy it
        return True

    update = await storage.update_state(
        "p", "u", add_view, create=lambda: UserAdoptionState(user_id="u"), stored=None
    )
    assert update.written
    started = await start_session("p", "u", "s1", storage)  # decodes: no kept copy to start from
    assert started.persisted and started.state.metadata["raw"] == "YWJj"
    assert started.state.sessions.current_session_id == "s1"
