"""A deterministic, realistic user state and session snapshot for the benchmarks.

The state is what a long-time user's document looks like in a real store:
20 workflows of 5 steps each with evidence the agent wrote, 50 index entries
(the cap), 30 discovered features and a few metadata keys, about 30 KB as
JSON. It is built with this package's own mutation API (fixed clock, seeded
RNG, so every run measures the same bytes) and handed to the reference
package through its ``from_dict``, so both sides hold the same document.
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
    "SESSION_ID",
    "T0",
    "BenchData",
    "build",
    "build_reference",
    "build_snapshot",
    "build_state",
]

T0 = 1_760_000_000.0  # the fixed clock every timestamp is derived from
SESSION_ID = "sess_0051"
_SOURCES = ("tour", "activity", "judge", "followup", "manual")
_VERBS = ("opened", "filled in", "submitted", "dismissed", "revisited", "saved")
_PLACES = ("settings panel", "project board", "invite dialog", "column editor", "billing page")


@dataclass(frozen=True)
class BenchData:
    """One benchmark fixture, as our models, as stored bytes, and as the reference's objects."""

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


def build_state(seed: int = 7) -> UserAdoptionState:
    """The ~30 KB state, identical on every call with the same seed."""
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
    state.onboarding.distinct_features_seen = 30
    state.onboarding.explore_gate_passed = True
    state.mark_welcomed(now=T0 + 30.0)
    state.record_discovered_features(f"feature_{i:02d}_{rng.choice(_PLACES)}" for i in range(30))
    now = T0 + 60.0
    for w in range(20):
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
    for n in range(1, 51):
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
    state.mark_judged(now=T0 + 51 * 86_400.0)
    state.last_updated_at = T0 + 51 * 86_400.0  # the mutations above stamp wall-clock time
    # A document both packages round-trip: without the onboarding pointer only this package
    # writes (the reference drops it), so every contender reads and writes the same bytes.
    state.sessions.onboarding_session_id = msgspec.UNSET
    return state


def build_snapshot(state: UserAdoptionState) -> SessionSnapshot:
    """Session 51's snapshot; the catalog has four workflows the user never touched."""
    catalog = [*state.onboarding.workflow_progress, *(f"workflow_{w:02d}" for w in range(20, 24))]
    started = T0 + 51 * 86_400.0
    return SessionSnapshot.from_adoption_state(
        state,
        session_id=SESSION_ID,
        session_number=51,
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


def build(seed: int = 7) -> BenchData:
    state = build_state(seed)
    snapshot = build_snapshot(state)
    ref_state, ref_snapshot = build_reference(json.loads(encode(state)), json.loads(encode(snapshot)))
    return BenchData(
        state=state,
        snapshot=snapshot,
        state_bytes=encode(state),
        snapshot_bytes=encode(snapshot),
        reference_state=ref_state,
        reference_snapshot=ref_snapshot,
    )
