"""The planted edge cases: documents from the wild, and the read-back that checks every count.

A long-time user arrives with a full 50-entry session index (each new session
trims the oldest entry), a document with repairable damage is read and fixed,
and -- in the incident only -- a document from a newer version is refused
and left untouched. At the end every user's stored session count is read
back and compared with the ends the run saw persisted, or queued in the outbox
and replayed since: no lost updates.
"""

from __future__ import annotations

import time
from typing import Any, Final

from autoplay_obs.demo._stats import DemoStats
from autoplay_obs.user_adoption_state import (
    MAX_SESSION_INDEX,
    SessionIndexEntry,
    UserAdoptionState,
    decode_user_state,
)

__all__ = ["POWER_BASE_COUNT", "REPAIRED_BASE_COUNT", "check_counts", "plant_documents"]

REPAIRED_BASE_COUNT: Final = 2
POWER_BASE_COUNT: Final = MAX_SESSION_INDEX
"""The power user arrives with a full session index: each new session trims the oldest entry."""


async def plant_documents(primary: Any, product: str, edge: dict[str, str]) -> None:
    """Documents from the wild: one repairable, one from a newer writer (never overwritten)."""
    if "repaired" in edge:
        await primary.save_user_state(
            product,
            edge["repaired"],
            {
                "_v": 1,
                "user_id": edge["repaired"],
                "mastery": {"rating": "7", "level": "wizard"},  # a string; an unknown band
                "onboarding": {"completion_rate": 1.5},  # out of range
                "sessions": {"count": REPAIRED_BASE_COUNT, "index": []},
            },
        )
    if "newer" in edge:
        newer = edge["newer"]
        await primary.save_user_state(product, newer, {"_v": 2, "user_id": newer, "sessions": {"count": 9}})
    if "power" in edge:
        power = UserAdoptionState(user_id=edge["power"])
        start = time.time() - 86400.0 * POWER_BASE_COUNT
        for n in range(1, POWER_BASE_COUNT + 1):
            at = start + 86400.0 * n
            entry = SessionIndexEntry(
                session_id=f"earlier_{n:03d}", session_number=n, started_at=at - 600, captured_at=at
            )
            power.record_session(entry)
        await primary.save_user_state(product, power.user_id, power.to_dict())


async def check_counts(primary: Any, product: str, edge: dict[str, str], stats: DemoStats) -> None:
    """Read every user's stored state back: its session count must equal the persisted ends."""
    for user_id in sorted(stats.users_seen):
        stored = await primary.load_state(product, user_id)
        if user_id == edge.get("newer"):
            untouched = stored is not None and b'"_v":2' in stored.raw
            stats.notes.append(
                f"{user_id}'s document from a newer writer (_v=2) was "
                + ("left untouched" if untouched else "CHANGED (a bug)")
            )
            continue
        # A session whose end was queued counts once replayed: the outbox was flushed before this.
        expected = stats.persisted_ends_by_user[user_id] + stats.queued_sessions_by_user[user_id]
        expected += REPAIRED_BASE_COUNT if user_id == edge.get("repaired") else 0
        expected += POWER_BASE_COUNT if user_id == edge.get("power") else 0
        actual = 0 if stored is None else decode_user_state(stored.raw, user_id=user_id).value.sessions.count
        stats.checked_users += 1
        if actual != expected:
            stats.count_mismatches.append(f"{user_id}: stored {actual}, persisted ends {expected}")
