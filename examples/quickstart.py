"""Three sessions of one user on the embedded in-memory store, start to end.

Shows the seed's integration steps and what this library adds: the outcome
of every call (persisted? duplicate? which adapter did what?).
Run: python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
import time

from autoplay_obs.prompts import ONBOARDING_SUMMARY_PROMPT
from autoplay_obs.storage import (
    InMemoryStorageAdapter,
    StorageManager,
    build_agent_context,
    end_session,
    on_session_start,
)
from autoplay_obs.user_adoption_state import (
    MasteryLevel,
    SessionSnapshot,
    WorkflowStatus,
    build_onboarding_summary_input,
)

CATALOG = ["create_project", "invite_team", "configure_columns"]


async def summarize(snapshot: SessionSnapshot) -> str:
    """A stand-in for your LLM call: fills the shipped prompt, returns a fixed-shape note."""
    prompt = ONBOARDING_SUMMARY_PROMPT["content"].format(**build_onboarding_summary_input(snapshot))
    done = ", ".join(snapshot.completed_workflow_ids) or "nothing yet"
    return f"Session {snapshot.session_number}: completed {done} ({len(prompt)}-char prompt)."


async def main() -> None:
    async with StorageManager([InMemoryStorageAdapter()]) as storage:
        for number, workflow in enumerate(CATALOG, start=1):
            session_id = f"sess_{number}"
            started_at = time.time()
            state, onboarding = await on_session_start("prod_1", "u_123", session_id, storage)
            print(f"start {session_id}: context = {build_agent_context(state, onboarding)}")

            state.onboarding.upsert_workflow_progress(
                workflow, status=WorkflowStatus.COMPLETED, confidence=0.9, source="activity"
            )
            state.record_discovered_features([f"{workflow}_button"])
            state.set_mastery(rating=2 * number + 1, level=MasteryLevel.BEGINNER, description="learning")

            snapshot = SessionSnapshot.from_adoption_state(
                state,
                session_id=session_id,
                session_number=state.sessions_count + 1,
                started_at=started_at,
                catalog_workflow_ids=CATALOG,
            )
            result = await end_session("prod_1", "u_123", snapshot, storage, summarizer=summarize)
            print(
                f"end   {session_id}: persisted={result.persisted} "
                f"snapshot_created={result.snapshot_created} sessions={result.state.sessions_count} "
                f"completion={result.state.onboarding.completion_rate}"
            )

        retry = await end_session("prod_1", "u_123", snapshot, storage, summarizer=summarize)
        count = retry.state.sessions_count
        print(f"retry of {snapshot.session_id}: duplicate={retry.duplicate}, count stays {count}")


if __name__ == "__main__":
    asyncio.run(main())
