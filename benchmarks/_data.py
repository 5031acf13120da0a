"""A deterministic, realistic user state and session snapshot for the benchmarks.

The default state is what a long-time user's document looks like in a real
store: 20 workflows of 5 steps each with evidence the agent wrote, 50 index
entries (the cap), 30 discovered features and a few metadata keys, about 30 KB
as JSON. It is built with this package's own mutation API (fixed clock, seeded
RNG, so every run measures the same bytes) and handed to the reference
package through its ``from_dict``, so both sides hold the same document.

Decisions:
- Other sizes scale the same shape (``shape_for``): workflows and features in
  proportion to the nominal size, the index too but never past its cap of 50.
  So ~5 KB is a newer user (3 workflows, 8 sessions) and ~300 KB a customer
  with a large catalog (200 workflows); the 30 KB shape is exactly the
  historical default, so its bytes match earlier runs.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import msgspec

from autoplay_obs.user_adoption_state import (
    JourneyState,
    MasteryLevel,
    SessionIndexEntry,
    SessionSnapshot,
    UserAdoptionState,
    WorkflowStatus,
    encode,
)

__all__ = [
    "DEFAULT_SIZE_KB",
    "SESSION_ID",
    "T0",
    "BenchData",
    "Shape",
    "build",
    "build_reference",
    "build_snapshot",
    "build_state",
    "shape_for",
]

T0 = 1_760_000_000.0  # the fixed clock every timestamp is derived from
SESSION_ID = "sess_0051"  # the default snapshot's session
DEFAULT_SIZE_KB = 30
_SOURCES = ("tour", "activity", "judge", "followup", "manual")
_VERBS = ("opened", "filled in", "submitted", "dismissed", "revisited", "saved")
_PLACES = ("settings panel", "project board", "invite dialog", "column editor", "billing page")


@dataclass(frozen=True)
class Shape:
    """How many of each repeated part a state has; the bytes follow from it."""

    workflows: int = 20
    sessions: int = 50
    features: int = 30


def shape_for(size_kb: float) -> Shape:
    """The default shape scaled to about ``size_kb`` KB (1000 bytes) of state JSON.

    Index and features scale in proportion; the workflow count is then fitted
    to the size from one trial build (a workflow is most of the bytes).
    """
    default = Shape()
    if size_kb == DEFAULT_SIZE_KB:
        return default
    scale = size_kb / DEFAULT_SIZE_KB
    sessions = min(default.sessions, max(2, round(default.sessions * scale)))
    features = max(1, round(default.features * scale))
    base = len(encode(build_state(shape=Shape(0, sessions, features))))
    trial = Shape(max(1, round(default.workflows * scale)), sessions, features)
    per_workflow = (len(encode(build_state(shape=trial))) - base) / trial.workflows
    workflows = max(1, round((size_kb * 1000 - base) / per_workflow))
    return Shape(workflows, sessions, features)


@dataclass(frozen=True)
class BenchData:
    """One benchmark fixture, as our models, as stored bytes, and as the reference's objects."""

    size_kb: float  # the nominal size it was built for
    state: UserAdoptionState
    snapshot: SessionSnapshot
    state_bytes: bytes
    snapshot_bytes: bytes
    reference_state: Any  # autoplay_sdk objects, or None when it is not installed
    reference_snapshot: Any


def _evidence(rng: random.Random, n_events: int) -> str:
    events = [
        f"{rng.choice(_VERBS)} the {rng.choice(_PLACES)} at +{rng.randint(5, 900)}s" for _ in range(n_events)
    ]
    return "User " + "; then ".join(events) + "."


def build_state(seed: int = 7, shape: Shape | None = None) -> UserAdoptionState:
    """The state of ``shape`` (default: the ~30 KB one), identical on every call with the same seed."""
    shape = shape or Shape()
    rng = random.Random(seed)
    state = UserAdoptionState(
        user_id="u_7f3a9c21",
        metadata={
            "role": "admin",
            "email": "dana.lee@example.com",
            "team": "growth",
            "plan": "enterprise",
            "signup_source": "invite",
            "locale": "en-GB",
        },
        first_seen_at=T0,
        last_updated_at=T0,
    )
    state.onboarding.exploration_started_at = T0 + 12.5
    state.onboarding.distinct_features_seen = shape.features
    state.onboarding.explore_gate_passed = True
    state.mark_welcomed(now=T0 + 30.0)
    state.record_discovered_features(f"feature_{i:02d}_{rng.choice(_PLACES)}" for i in range(shape.features))
    now = T0 + 60.0
    for w in range(shape.workflows):
        wid = f"workflow_{w:02d}"
        state.onboarding.upsert_workflow_progress(
            wid,
            status=WorkflowStatus.IN_PROGRESS,
            confidence=round(rng.uniform(0.2, 0.6), 3),
            evidence=_evidence(rng, 2),
            source=rng.choice(_SOURCES),
            now=now,
        )
        for s in range(5):
            now += rng.uniform(5.0, 120.0)
            state.onboarding.upsert_step_progress(
                wid,
                f"step_{s}",
                status=WorkflowStatus.COMPLETED if s < w % 6 else WorkflowStatus.IN_PROGRESS,
                confidence=round(rng.uniform(0.5, 1.0), 3),
                evidence=_evidence(rng, 1),
                now=now,
            )
        if w % 3 == 0:
            state.onboarding.upsert_workflow_progress(
                wid, status=WorkflowStatus.COMPLETED, confidence=0.95, now=now
            )
    for n in range(1, shape.sessions + 1):
        started = T0 + n * 86_400.0
        state.record_session(
            SessionIndexEntry(
                session_id=f"sess_{n:04d}",
                session_number=n,
                started_at=started,
                captured_at=started + rng.uniform(300.0, 3_600.0),
            )
        )
    state.set_mastery(
        rating=6,
        level=MasteryLevel.INTERMEDIATE,
        description="Completes core workflows unaided; still asks about column setup.",
    )
    state.set_journey_state(JourneyState.ONBOARDED)
    state.onboarding.completion_rate = 0.35
    state.onboarding.summary = _evidence(rng, 6)
    state.mark_judged(now=T0 + (shape.sessions + 1) * 86_400.0)
    state.last_updated_at = T0 + (shape.sessions + 1) * 86_400.0  # the mutations above stamp wall-clock time
    # A document both packages round-trip: without the onboarding pointer only this package
    # writes (the reference drops it), so every contender reads and writes the same bytes.
    state.sessions.onboarding_session_id = msgspec.UNSET
    return state


def build_snapshot(state: UserAdoptionState) -> SessionSnapshot:
    """The next session's snapshot (51 by default); the catalog has four workflows never touched."""
    number = state.sessions_count + 1
    known = len(state.onboarding.workflow_progress)
    catalog = [*state.onboarding.workflow_progress, *(f"workflow_{w:02d}" for w in range(known, known + 4))]
    started = T0 + number * 86_400.0
    return SessionSnapshot.from_adoption_state(
        state,
        session_id=f"sess_{number:04d}",
        session_number=number,
        started_at=started,
        catalog_workflow_ids=catalog,
        now=started + 1_234.567,
    )


def build_reference(state_doc: dict[str, Any], snapshot_doc: dict[str, Any]) -> tuple[Any, Any]:
    """The same two documents as reference-package objects, or ``(None, None)``."""
    try:
        from autoplay_sdk.user_adoption_state import models as ref
    except ImportError:
        return None, None
    return ref.UserAdoptionState.from_dict(state_doc), ref.SessionSnapshot.from_dict(snapshot_doc)


def build(seed: int = 7, size_kb: float = DEFAULT_SIZE_KB) -> BenchData:
    """The fixture of about ``size_kb`` KB of state (the default is the historical ~30 KB one)."""
    state = build_state(seed, shape_for(size_kb))
    snapshot = build_snapshot(state)
    ref_state, ref_snapshot = build_reference(json.loads(encode(state)), json.loads(encode(snapshot)))
    return BenchData(
        size_kb=size_kb,
        state=state,
        snapshot=snapshot,
        state_bytes=encode(state),
        snapshot_bytes=encode(snapshot),
        reference_state=ref_state,
        reference_snapshot=ref_snapshot,
    )
