"""Broken documents from the wild: each is repaired (and the repair reported) or refused.

Every case is read twice, as stored bytes and as the plain dict a custom
adapter returns. A read may only ever raise ``UnreadableDocumentError`` or
``UnsupportedVersionError``; anything else would crash the host agent.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoplay_obs.errors import UnreadableDocumentError, UnsupportedVersionError
from autoplay_obs.user_adoption_state import (
    Decoded,
    JourneyState,
    Mastery,
    MasteryLevel,
    SessionIndexEntry,
    SessionSnapshot,
    UserAdoptionState,
    WorkflowStatus,
    decode_session_snapshot,
    decode_user_state,
    encode,
)

T0 = 1_700_000_000.0
TYPED_ERRORS = (UnreadableDocumentError, UnsupportedVersionError)


def valid_state_doc() -> dict[str, Any]:
    return {
        "_v": 1,
        "user_id": "u1",
        "metadata": {"role": "admin", "score": 1.5},
        "journey_state": "onboarded",
        "mastery": {"rating": 6, "level": "intermediate", "description": "ok"},
        "discovered_features": ["export", "filters"],
        "onboarding": {
            "welcomed": True,
            "exploration_started_at": T0,
            "distinct_features_seen": 2,
            "explore_gate_passed": True,
            "workflow_progress": {
                "w1": {
                    "workflow_id": "w1",
                    "status": "completed",
                    "confidence": 0.9,
                    "evidence": "saved",
                    "source": "tour",
                    "first_detected_at": T0,
                    "completed_at": T0 + 5,
                    "last_evaluated_at": T0 + 5,
                    "steps": {
                        "s1": {
                            "step_id": "s1",
                            "status": "completed",
                            "confidence": 1.0,
                            "evidence": "clicked",
                            "completed_at": T0 + 1,
                            "last_evaluated_at": T0 + 1,
                        }
                    },
                },
                "w2": {
                    "workflow_id": "w2",
                    "status": "in_progress",
                    "confidence": 0.3,
                    "evidence": "",
                    "source": "activity",
                    "first_detected_at": T0,
                    "completed_at": None,
                    "last_evaluated_at": T0 + 7,
                    "steps": {},
                },
            },
            "last_step_in": {
                "decided_at": T0 + 8,
                "should_step_in": False,
                "timing_assessment": "busy",
                "reason": "typing",
                "suggested_workflow_ids": ["w2"],
            },
            "last_reasoned_at": T0 + 8,
            "last_welcome_at": T0 + 2,
            "proactive_support_count": 1,
            "onboarding_completed_at": None,
            "summary": "Finished w1.",
            "completion_rate": 0.5,
        },
        "first_seen_at": T0,
        "last_updated_at": T0 + 9,
        "last_judged_at": T0 + 9,
        "sessions": {
            "count": 2,
            "current_session_id": "s3",
            "index": [
                {"session_id": "s1", "session_number": 1, "started_at": T0, "captured_at": T0 + 60},
                {
                    "session_id": "s2",
                    "session_number": 2,
                    "started_at": T0 + 100,
                    "captured_at": T0 + 160,
                },
            ],
        },
    }


def valid_snapshot_doc() -> dict[str, Any]:
    state = valid_state_doc()
    return {
        "_v": 1,
        "_frozen": True,
        "session_id": "s3",
        "session_number": 3,
        "user_id": "u1",
        "started_at": T0 + 200,
        "captured_at": T0 + 260,
        "duration_s": 60.0,
        "journey_state": "onboarded",
        "mastery": state["mastery"],
        "proactive_support_count": 1,
        "distinct_features_seen": 2,
        "discovered_features": ["export"],
        "reached_onboarding_complete": False,
        "completion_rate": 0.5,
        "completion_rate_denominator": "assigned_workflows",
        "total_catalog_workflows": 2,
        "completed_workflow_ids": ["w1"],
        "in_progress_workflow_ids": ["w2"],
        "untouched_workflow_ids": [],
        "workflow_progress": state["onboarding"]["workflow_progress"],
    }


def as_bytes(doc: Any) -> bytes:
    # The standard library writes NaN / Infinity / -Infinity tokens, as a hand edit would.
    return json.dumps(doc, allow_nan=True).encode()


def read_both(
    decode: Callable[..., Decoded[Any]], doc: Any, *, clock_field: str | None = None, **kw: Any
) -> list[Decoded[Any]]:
    """Decode ``doc`` as bytes and as a dict; the two readings must agree.

    ``clock_field`` is a field whose repair takes the time of reading, so it
    differs between the two reads and is left out of the comparison.
    """
    results = [decode(as_bytes(doc), **kw), decode(copy.deepcopy(doc), **kw)]
    if clock_field is None:
        assert results[0].value == results[1].value
    else:
        dicts = [r.value.to_dict() for r in results]
        for d in dicts:
            set_path(d, clock_field, None)
        assert dicts[0] == dicts[1]
    assert results[0].repairs == results[1].repairs
    return results


def at(doc: dict[str, Any], path: str) -> tuple[Any, str]:
    """The container holding ``path`` (dotted, ``[i]`` for list items) and the last key."""
    parts = path.replace("[", ".[").split(".")
    node: Any = doc
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    last = parts[-1]
    return node, last


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    node, last = at(doc, path)
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value


def del_path(doc: dict[str, Any], path: str) -> None:
    node, last = at(doc, path)
    del node[last]


def get_attr_path(value: Any, path: str) -> Any:
    for part in path.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


# --- repaired: (document path, stored value, model path, expected value) ---------------

MISSING = object()
NOW = object()  # the field's default is the time of reading

STATE_REPAIRS: list[tuple[str, Any, str, Any]] = [
    # strings for numbers
    ("mastery.rating", "7", "mastery.rating", 7),
    ("mastery.rating", " 7.0 ", "mastery.rating", 7),
    ("first_seen_at", "1700000000.5", "first_seen_at", 1_700_000_000.5),
    (
        "onboarding.workflow_progress.w1.confidence",
        "0.75",
        "onboarding.workflow_progress.w1.confidence",
        0.75,
    ),
    ("onboarding.distinct_features_seen", "4", "onboarding.distinct_features_seen", 4),
    ("onboarding.completion_rate", "1.5", "onboarding.completion_rate", 1.0),
    ("sessions.count", "5", "sessions.count", 5),
    ("onboarding.welcomed", "false", "onboarding.welcomed", False),
    # out of range: clamped
    ("mastery.rating", 42, "mastery.rating", 10),
    ("mastery.rating", -3, "mastery.rating", 0),
    ("onboarding.workflow_progress.w1.confidence", 7, "onboarding.workflow_progress.w1.confidence", 1.0),
    (
        "onboarding.workflow_progress.w1.steps.s1.confidence",
        -0.5,
        "onboarding.workflow_progress.w1.steps.s1.confidence",
        0.0,
    ),
    ("onboarding.proactive_support_count", -1, "onboarding.proactive_support_count", 0),
    ("last_judged_at", 1e13, "last_judged_at", 1e11),
    # NaN / Infinity / -Infinity
    ("first_seen_at", math.nan, "first_seen_at", NOW),
    ("last_updated_at", math.inf, "last_updated_at", NOW),
    ("mastery.rating", math.inf, "mastery.rating", 0),
    (
        "onboarding.workflow_progress.w1.confidence",
        -math.inf,
        "onboarding.workflow_progress.w1.confidence",
        0.0,
    ),
    ("onboarding.completion_rate", math.nan, "onboarding.completion_rate", 0.0),
    ("last_judged_at", math.nan, "last_judged_at", None),
    ("onboarding.last_welcome_at", -math.inf, "onboarding.last_welcome_at", None),
    ("metadata.score", math.nan, "metadata.score", None),
    ("metadata.score", math.inf, "metadata.score", None),
    # nulls where a value is required
    ("journey_state", None, "journey_state", JourneyState.ONBOARDING),
    ("mastery", None, "mastery", Mastery()),
    ("mastery.level", None, "mastery.level", MasteryLevel.NOVICE),
    ("discovered_features", None, "discovered_features", []),
    ("metadata", None, "metadata", {}),
    ("onboarding.welcomed", None, "onboarding.welcomed", False),
    (
        "onboarding.workflow_progress.w1.status",
        None,
        "onboarding.workflow_progress.w1.status",
        WorkflowStatus.NOT_STARTED,
    ),
    (
        "onboarding.workflow_progress.w1.steps.s1.evidence",
        None,
        "onboarding.workflow_progress.w1.steps.s1.evidence",
        "",
    ),
    ("onboarding.exploration_started_at", None, "onboarding.exploration_started_at", NOW),
    # unknown enums
    ("journey_state", "graduated", "journey_state", JourneyState.ONBOARDING),
    ("journey_state", "ONBOARDED", "journey_state", JourneyState.ONBOARDING),
    ("mastery.level", "wizard", "mastery.level", MasteryLevel.NOVICE),
    (
        "onboarding.workflow_progress.w1.status",
        "done",
        "onboarding.workflow_progress.w1.status",
        WorkflowStatus.NOT_STARTED,
    ),
    (
        "onboarding.workflow_progress.w1.steps.s1.status",
        3,
        "onboarding.workflow_progress.w1.steps.s1.status",
        WorkflowStatus.NOT_STARTED,
    ),
    # wrong container types
    ("mastery", [], "mastery", Mastery()),
    ("metadata", [1, 2], "metadata", {}),
    ("metadata", "role=admin", "metadata", {}),
    ("discovered_features", {"export": True}, "discovered_features", []),
    ("discovered_features", "export", "discovered_features", []),
    ("onboarding.workflow_progress", [], "onboarding.workflow_progress", {}),
    ("onboarding.workflow_progress.w1.steps", ["s1"], "onboarding.workflow_progress.w1.steps", {}),
    ("onboarding.last_step_in", [], "onboarding.last_step_in", None),
    (
        "onboarding.last_step_in.suggested_workflow_ids",
        "w2",
        "onboarding.last_step_in.suggested_workflow_ids",
        (),
    ),
    ("sessions.index", {"s1": {}}, "sessions.index", []),
    # required fields that are missing or unusable: the entry is dropped
    ("onboarding.workflow_progress.w1.workflow_id", MISSING, "onboarding.workflow_progress", "drop w1"),
    ("onboarding.workflow_progress.w1.workflow_id", None, "onboarding.workflow_progress", "drop w1"),
    (
        "onboarding.workflow_progress.w1.steps.s1.step_id",
        MISSING,
        "onboarding.workflow_progress.w1.steps",
        {},
    ),
    ("onboarding.workflow_progress.w1", "completed", "onboarding.workflow_progress", "drop w1"),
    ("sessions.index[0].session_id", MISSING, "sessions.index", "drop s1"),
    ("sessions.index[0].captured_at", math.nan, "sessions.index", "drop s1"),
    ("sessions.index[0]", None, "sessions.index", "drop s1"),
    # entries of a list read one by one
    ("discovered_features", ["export", 5, None, "export"], "discovered_features", ["export", "5"]),
    (
        "discovered_features",
        ["export", " export ", "  ", "filters"],
        "discovered_features",
        ["export", "filters"],
    ),
    # rules a type cannot express
    ("onboarding.workflow_progress.w2.source", "", "onboarding.workflow_progress.w2.source", "unknown"),
    ("sessions.count", 0, "sessions.count", 2),
]


def reports(result: Decoded[Any], doc_path: str) -> bool:
    """Whether a repair names the damaged place: the field itself, its entry, or an item in it."""
    damaged = "$." + doc_path
    for repair in result.repairs:
        where = repair.split(": ", 1)[0]
        related = where == damaged or any(
            longer.startswith((shorter + ".", shorter + "["))
            for shorter, longer in ((where, damaged), (damaged, where))
        )
        if related and where != "$" and where.count(".") >= damaged.count(".") - 1:
            return True
    return False


@pytest.mark.parametrize(
    ("doc_path", "stored", "model_path", "expected"),
    STATE_REPAIRS,
    ids=[f"{p}={v!r}" for p, v, _, _ in STATE_REPAIRS],
)
def test_damaged_state_is_repaired_and_reported(doc_path, stored, model_path, expected):
    doc = valid_state_doc()
    if stored is MISSING:
        del_path(doc, doc_path)
    else:
        set_path(doc, doc_path, stored)
    before = time.time()
    clock = model_path if expected is NOW else None
    for result in read_both(decode_user_state, doc, clock_field=clock):
        got = get_attr_path(result.value, model_path)
        if expected is NOW:
            assert before <= got <= time.time()
        elif expected == "drop w1":
            assert list(got) == ["w2"]
        elif expected == "drop s1":
            assert [e.session_id for e in got] == ["s2"]
            assert result.value.sessions.count == 2  # the lifetime count is not lowered
        else:
            assert got == expected
            assert type(got) is type(expected)
        assert reports(result, doc_path)
        # Everything else survives the repair untouched.
        assert result.value.user_id == "u1"
        if model_path != "first_seen_at":
            assert result.value.first_seen_at == T0
        # A repaired document is a valid one: writing it back reads cleanly.
        again = decode_user_state(encode(result.value))
        assert again.repairs == ()
        assert again.value == result.value


def test_reported_paths_are_exact_for_scalar_repairs():
    doc = valid_state_doc()
    doc["mastery"]["rating"] = "7"
    doc["onboarding"]["workflow_progress"]["w1"]["steps"]["s1"]["confidence"] = math.nan
    doc["journey_state"] = "graduated"
    (result, _) = read_both(decode_user_state, doc)
    assert len(result.repairs) == 3
    assert any(r.startswith("$.mastery.rating:") for r in result.repairs)
    assert any(r.startswith("$.onboarding.workflow_progress.w1.steps.s1.confidence:") for r in result.repairs)
    assert any(r.startswith("$.journey_state:") for r in result.repairs)


SNAPSHOT_REPAIRS: list[tuple[str, Any, str, Any]] = [
    ("completion_rate_denominator", "per_team", "completion_rate_denominator", "all_catalog_workflows"),
    ("completion_rate_denominator", None, "completion_rate_denominator", "all_catalog_workflows"),
    ("completion_rate", "0.25", "completion_rate", 0.25),
    ("completion_rate", 3, "completion_rate", 1.0),
    ("duration_s", -5, "duration_s", 0.0),
    ("duration_s", math.inf, "duration_s", 0.0),
    ("session_number", -3, "session_number", 0),
    ("session_number", "3", "session_number", 3),
    ("captured_at", math.nan, "captured_at", NOW),
    ("journey_state", "graduated", "journey_state", JourneyState.ONBOARDING),
    ("mastery.level", "wizard", "mastery.level", MasteryLevel.NOVICE),
    ("_frozen", "true", "frozen_", True),
    ("completed_workflow_ids", "w1", "completed_workflow_ids", ()),
    ("completed_workflow_ids", ["w1", None], "completed_workflow_ids", ("w1",)),
    ("workflow_progress", [], "workflow_progress", {}),
    ("workflow_progress.w1.status", "done", "workflow_progress.w1.status", WorkflowStatus.NOT_STARTED),
    ("total_catalog_workflows", None, "total_catalog_workflows", 0),
]


@pytest.mark.parametrize(
    ("doc_path", "stored", "model_path", "expected"),
    SNAPSHOT_REPAIRS,
    ids=[f"{p}={v!r}" for p, v, _, _ in SNAPSHOT_REPAIRS],
)
def test_damaged_snapshot_is_repaired_and_reported(doc_path, stored, model_path, expected):
    doc = valid_snapshot_doc()
    set_path(doc, doc_path, stored)
    before = time.time()
    clock = model_path if expected is NOW else None
    for result in read_both(decode_session_snapshot, doc, clock_field=clock):
        got = get_attr_path(result.value, model_path)
        if expected is NOW:
            assert before <= got <= time.time()
        else:
            assert got == expected
            assert type(got) is type(expected)
        assert reports(result, doc_path), result.repairs
        assert result.value.session_id == "s3"
        again = decode_session_snapshot(encode(result.value))
        assert (again.repairs, again.value) == ((), result.value)


@pytest.mark.parametrize("field", ["session_id", "user_id", "started_at", "session_number"])
@pytest.mark.parametrize("stored", [MISSING, None, ["x"]])
def test_snapshot_without_a_required_field_is_refused(field, stored):
    doc = valid_snapshot_doc()
    if stored is MISSING:
        del doc[field]
    else:
        doc[field] = stored
    for raw in (as_bytes(doc), doc):
        with pytest.raises(UnreadableDocumentError):
            decode_session_snapshot(raw)


def test_missing_optional_fields_take_defaults_without_a_report():
    """An older writer's document is not damaged: new fields get their defaults."""
    doc = {"_v": 1, "user_id": "u1", "first_seen_at": T0, "last_updated_at": T0}
    doc_onboarding = {"welcomed": True, "exploration_started_at": T0}
    doc["onboarding"] = doc_onboarding
    for result in read_both(decode_user_state, doc):
        assert result.repairs == ()
        assert result.value.sessions_count == 0
        assert result.value.onboarding.welcomed is True
        assert result.value.onboarding.summary is None
        assert result.value.mastery == Mastery()
    wp = {"workflow_id": "w1", "status": "completed", "last_evaluated_at": T0}
    doc_onboarding["workflow_progress"] = {"w1": wp}
    (result, _) = read_both(decode_user_state, doc)
    assert result.value.onboarding.workflow_progress["w1"].source == "unknown"
    assert result.repairs == ()


# --- the session index -----------------------------------------------------------------------


def index_of(n: int) -> list[dict[str, Any]]:
    return [
        {"session_id": f"s{i}", "session_number": i, "started_at": T0 + i, "captured_at": T0 + i}
        for i in range(n)
    ]


@pytest.mark.parametrize(("count", "expected_count"), [(3, 500), (1000, 1000)])
def test_an_index_of_500_keeps_the_newest_50_and_a_count_of_at_least_500(count, expected_count):
    doc = valid_state_doc()
    doc["sessions"] = {"count": count, "current_session_id": None, "index": index_of(500)}
    for result in read_both(decode_user_state, doc):
        sessions = result.value.sessions
        assert sessions.count == expected_count
        assert [e.session_id for e in sessions.index] == [f"s{i}" for i in range(450, 500)]
        assert any(r.startswith("$.sessions.index:") and "450" in r for r in result.repairs)
        assert (count >= 500) != any(r.startswith("$.sessions.count:") for r in result.repairs)


def test_index_entries_read_as_our_type():
    (result, _) = read_both(decode_user_state, valid_state_doc())
    assert result.repairs == ()
    assert result.value.sessions_index[1] == SessionIndexEntry(
        session_id="s2", session_number=2, started_at=T0 + 100, captured_at=T0 + 160
    )


# --- big, odd and undecodable input -------------------------------------------------------------


def test_a_5mb_metadata_blob_reads_and_round_trips():
    doc = valid_state_doc()
    doc["metadata"]["blob"] = {
        f"k{i}": {"note": "x" * 60, "n": i * 0.5, "tags": ["a", "b"]} for i in range(50_000)
    }
    raw = encode(decode_user_state(json.dumps(doc).encode()).value)
    assert len(raw) > 5_000_000
    result = decode_user_state(raw)
    assert result.repairs == ()
    assert result.value.metadata == doc["metadata"]
    assert encode(result.value) == raw


def test_invalid_utf8_inside_a_string_is_replaced_and_reported():
    raw = as_bytes(valid_state_doc()).replace(b'"saved"', b'"sav\xffed"', 1)
    result = decode_user_state(raw)
    assert result.value.onboarding.workflow_progress["w1"].evidence == "sav\ufffded"
    assert any(r.startswith("$:") and "UTF-8" in r for r in result.repairs)


def test_a_lone_surrogate_escape_reads_and_writes_back_unchanged():
    raw = as_bytes(valid_state_doc()).replace(b'"saved"', b'"sav\\ud800ed"', 1)
    result = decode_user_state(raw)
    evidence = result.value.onboarding.workflow_progress["w1"].evidence
    assert evidence == "sav\ud800ed"
    assert result.repairs == ()
    again = decode_user_state(encode(result.value))
    assert again.value == result.value
    assert result.value.to_dict()["onboarding"]["workflow_progress"]["w1"]["evidence"] == evidence


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe\x00\x01",
        b"",
        b"   ",
        b"{",
        b"not json",
        b"{'_v': 1}",
        b'{"_v": 1, "user_id": "u1",}',
        b"[]",
        b"[1, 2]",
        b"3",
        b"-1.5",
        b"null",
        b"true",
        b'"a string"',
        b"NaN",
        "[]",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"_v":1,"user_id":"u","metadata":{"a":' + b"[" * 5_000 + b"]" * 5_000 + b"}}",
    ],
    ids=lambda raw: repr(raw[:20]),
)
def test_what_is_not_a_json_object_is_refused(raw):
    with pytest.raises(UnreadableDocumentError):
        decode_user_state(raw)
    with pytest.raises(UnreadableDocumentError):
        decode_session_snapshot(raw)


@pytest.mark.parametrize("value", [None, 3, [], ["_v", 1], 1.5])
def test_input_of_the_wrong_python_type_is_refused(value):
    with pytest.raises(UnreadableDocumentError):
        decode_user_state(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [2, "2", None, True, False, 0, -1, 1.5, "one", [1], {"v": 1}])
def test_an_unknown_version_is_refused(version):
    for decode, doc in (
        (decode_user_state, valid_state_doc()),
        (decode_session_snapshot, valid_snapshot_doc()),
    ):
        doc["_v"] = version
        for raw in (as_bytes(doc), doc):
            with pytest.raises(UnsupportedVersionError) as info:
                decode(raw)
            assert info.value.version == version


@pytest.mark.parametrize("version", [MISSING, "1", 1.0, " 1 "])
def test_a_missing_or_spelled_out_version_reads_as_1_and_is_reported(version):
    for decode, doc in (
        (decode_user_state, valid_state_doc()),
        (decode_session_snapshot, valid_snapshot_doc()),
    ):
        if version is MISSING:
            del doc["_v"]
        else:
            doc["_v"] = version
        for result in read_both(decode, doc):
            assert result.value.version == 1
            assert [r for r in result.repairs if r.startswith("$._v:")], result.repairs


@pytest.mark.parametrize("user_id", [MISSING, "", "   ", None, True, [], {}])
def test_a_state_without_a_usable_user_id_is_refused(user_id):
    doc = valid_state_doc()
    if user_id is MISSING:
        del doc["user_id"]
    else:
        doc["user_id"] = user_id
    for raw in (as_bytes(doc), doc):
        with pytest.raises(UnreadableDocumentError):
            decode_user_state(raw)
    for result in read_both(decode_user_state, doc, user_id="fallback"):
        assert result.value.user_id == "fallback"
        assert any(r.startswith("$.user_id:") for r in result.repairs)
        assert result.value.onboarding.workflow_progress["w1"].status is WorkflowStatus.COMPLETED


def test_a_stored_user_id_wins_over_the_fallback():
    (result, _) = read_both(decode_user_state, valid_state_doc(), user_id="fallback")
    assert result.value.user_id == "u1"
    assert result.repairs == ()


def test_a_numeric_user_id_is_read_as_a_string():
    doc = valid_state_doc()
    doc["user_id"] = 12345
    (result, _) = read_both(decode_user_state, doc)
    assert result.value.user_id == "12345"
    assert any(r.startswith("$.user_id:") for r in result.repairs)


def test_dict_keys_that_are_not_strings_are_read_as_strings():
    doc = valid_state_doc()
    doc["metadata"] = {1: "one", "two": 2}
    result = decode_user_state(doc)
    assert result.value.metadata == {"1": "one", "two": 2}
    assert any(r.startswith("$.metadata:") for r in result.repairs)


def test_huge_numbers_are_repaired_not_refused():
    raw = as_bytes(valid_state_doc())
    raw = raw.replace(b'"rating": 6', b'"rating": ' + b"9" * 5_000, 1)
    raw = raw.replace(b'"score": 1.5', b'"score": 1e400', 1)
    result = decode_user_state(raw)
    assert result.value.mastery.rating == 0
    assert result.value.metadata["score"] is None
    assert any(r.startswith("$.mastery.rating:") for r in result.repairs)
    assert any(r.startswith("$.metadata.score:") for r in result.repairs)


def test_model_from_dict_is_strict_and_the_decoders_repair():
    doc = valid_state_doc()
    doc["mastery"]["rating"] = "99"
    with pytest.raises(UnreadableDocumentError, match=r"mastery\.rating"):
        UserAdoptionState.from_dict(doc)
    assert decode_user_state(doc).value.mastery.rating == 10
    snap = valid_snapshot_doc()
    snap["completion_rate"] = math.nan
    assert decode_session_snapshot(snap).value.completion_rate == 0.0
    assert (
        SessionSnapshot.from_dict(valid_snapshot_doc()) == decode_session_snapshot(valid_snapshot_doc()).value
    )
    doc["_v"] = 2
    with pytest.raises(UnsupportedVersionError):
        decode_user_state(doc)


# --- fuzz: arbitrary JSON at arbitrary places ---------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and both infinities included
    | st.text(max_size=8)
    | st.sampled_from(["", "1", "-2.5", "NaN", "completed", "onboarded", "\ud800", "1e400"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def container_paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in ``doc`` where a value can be put (existing or new key)."""
    paths = []
    if isinstance(doc, dict):
        for key, child in doc.items():
            paths.append((*prefix, key))
            paths.extend(container_paths(child, (*prefix, key)))
        paths.append((*prefix, "_new"))
    elif isinstance(doc, list):
        for i, child in enumerate(doc):
            paths.append((*prefix, i))
            paths.extend(container_paths(child, (*prefix, i)))
    return paths


STATE_PATHS = container_paths(valid_state_doc())
SNAPSHOT_PATHS = container_paths(valid_snapshot_doc())


def put(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), snapshot=st.booleans(), as_dict=st.booleans())
def test_fuzz_decode_never_raises_anything_but_the_typed_errors(data, snapshot, as_dict):
    doc = valid_snapshot_doc() if snapshot else valid_state_doc()
    paths = SNAPSHOT_PATHS if snapshot else STATE_PATHS
    for _ in range(data.draw(st.integers(1, 4))):
        path = data.draw(st.sampled_from(paths))
        # An earlier insertion may have replaced a container this path goes through.
        with contextlib.suppress(KeyError, IndexError, TypeError):
            put(doc, path, data.draw(json_values))
    raw: Any = doc if as_dict else as_bytes(doc)
    decode = decode_session_snapshot if snapshot else decode_user_state
    try:
        result = decode(raw)
    except TYPED_ERRORS:
        return
    # Whatever was read is a valid document that writes and reads back cleanly.
    again = decode(encode(result.value))
    assert again.repairs == ()
    assert again.value == result.value


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=64) | st.text(max_size=64) | json_values.map(as_bytes))
def test_fuzz_arbitrary_input_is_read_or_refused_with_a_typed_error(raw):
    for decode in (decode_user_state, decode_session_snapshot):
        with contextlib.suppress(TYPED_ERRORS):
            decode(raw)
