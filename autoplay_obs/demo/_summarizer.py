"""A deterministic stand-in for the host's LLM summarizer: no network, same answer every time.

It does what a real one does up to the model call: fills the shipped
``ONBOARDING_SUMMARY_PROMPT`` from ``build_onboarding_summary_input``. Then,
instead of calling a model, it writes the note the prompt asks for from the
same facts, after a short simulated latency. A seeded share of calls fails
the ways LLM clients fail (rate limited, provider error, too slow), decided
per session id so the same seed fails the same sessions.
"""

from __future__ import annotations

import asyncio
import json
import random

from autoplay_obs.prompts import ONBOARDING_SUMMARY_PROMPT
from autoplay_obs.user_adoption_state import SessionSnapshot, build_onboarding_summary_input

__all__ = ["ProviderError", "RateLimitError", "StandInSummarizer"]


class RateLimitError(Exception):
    """The simulated model provider said 429."""


class ProviderError(Exception):
    """The simulated model provider answered 5xx."""


class StandInSummarizer:
    """``await summarizer(snapshot) -> str``, the shape ``end_session(summarizer=...)`` takes."""

    def __init__(self, *, failure_rate: float = 0.0, timeout: float = 0.5, seed: int = 0) -> None:
        self.failure_rate = failure_rate
        self.timeout = timeout
        self.seed = seed
        self.calls = 0
        self.prompt_chars = 0

    async def __call__(self, snapshot: SessionSnapshot) -> str:
        self.calls += 1
        facts = build_onboarding_summary_input(snapshot)
        prompt = ONBOARDING_SUMMARY_PROMPT["content"].format(**facts)
        self.prompt_chars += len(prompt)
        rng = random.Random(f"summarizer:{self.seed}:{snapshot.session_id}")
        await asyncio.sleep(rng.uniform(0.002, 0.02))  # a (very fast) model
        if rng.random() < self.failure_rate:
            kind = rng.random()
            if kind < 0.5:
                raise RateLimitError("429 Too Many Requests")
            if kind < 0.8:
                raise ProviderError("503 Service Unavailable")
            await asyncio.sleep(self.timeout * 2)  # the lifecycle gives up first: TimeoutError
        return write_note(facts)


def write_note(facts: dict[str, object]) -> str:
    """The hand-over note the prompt asks for, written from the same facts."""
    completed = json.loads(str(facts["completed_workflow_ids_json"]))
    in_progress = json.loads(str(facts["in_progress_workflow_ids_json"]))
    untouched = json.loads(str(facts["untouched_workflow_ids_json"]))
    done = f"completed {', '.join(completed)}" if completed else "completed no workflow yet"
    where = f"stopped partway through {in_progress[0]}" if in_progress else "left nothing half-done"
    offer = in_progress[0] if in_progress else (untouched[0] if untouched else None)
    nxt = f"Next time, offer help with {offer}." if offer else "Next time, suggest advanced features."
    return (
        f"Session {facts['session_number']} lasted {facts['duration_minutes']} minutes and the user {done}. "
        f"They {where} and are rated {facts['mastery_rating']}/10 ({facts['mastery_level']}). {nxt}"
    )
