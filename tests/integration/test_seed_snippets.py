"""The seed's code samples (seed/storage-docs.txt) run as written, with the package name swapped.

The samples are copied here verbatim, still spelled ``autoplay_sdk``; the test
swaps the name at run time, as DESIGN.md promises a user can. They run once on
``InMemoryStorageAdapter`` (the seed's "for tests and local dev" swap) and once
on the real Redis the suite starts. The analytics-sink sample is not included:
those adapters are not part of this issue.
"""

from __future__ import annotations

import ast
import time
from typing import Any

import pytest
import redis.asyncio

from autoplay_obs.prompts import ONBOARDING_SUMMARY_PROMPT
from autoplay_obs.storage import AutoplayStorageAdapter, StorageManager

CONFIGURE = """\
import os
from autoplay_sdk.storage import StorageManager, RedisStorageAdapter

# Redis must be first — it is the readable primary.
storage = StorageManager([
    RedisStorageAdapter(redis_url=os.environ["REDIS_URL"]),
])
"""

SESSION_START = """\
from autoplay_sdk.storage import on_session_start, build_agent_context

state, onboarding_session = await on_session_start(
    product_id="prod_1",
    user_id="u_123",
    session_id="sess_abc",
    storage=storage,
)

# Project into ProactiveTriggerContext.context_extra
context_extra = build_agent_context(state, onboarding_session)
"""

SESSION_END = """\
from autoplay_sdk.user_adoption_state import SessionSnapshot
from autoplay_sdk.storage import on_session_end

snapshot = SessionSnapshot.from_adoption_state(
    state,
    session_id="sess_abc",
    session_number=state.sessions_count + 1,
    started_at=session_started_at,          # unix ts you captured at start
    catalog_workflow_ids=["create_project", "invite_team", "configure_columns"],
)

updated = await on_session_end(
    product_id="prod_1",
    user_id="u_123",
    session_snapshot=snapshot,
    storage=storage,
    summarizer=my_summarizer,   # optional; see below
)
"""

SUMMARIZER = """\
from autoplay_sdk.prompts import ONBOARDING_SUMMARY_PROMPT
from autoplay_sdk.user_adoption_state import build_onboarding_summary_input
from autoplay_sdk.user_adoption_state import SessionSnapshot

async def my_summarizer(snapshot: SessionSnapshot) -> str:
    prompt_input = build_onboarding_summary_input(snapshot)
    content = ONBOARDING_SUMMARY_PROMPT["content"].format(**prompt_input)
    # Run via your standardized acall_llm with prompt metadata:
    text, _meta = await acall_llm(
        model=YOUR_SUMMARY_MODEL,
        messages=[{"role": "system", "content": content}],
        prompt_meta=ONBOARDING_SUMMARY_PROMPT,
    )
    return text
"""

CUSTOM_ADAPTER = """\
from typing import Any

class MyWarehouseAdapter:
    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None: ...
    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None: ...
    async def save_session_snapshot(self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]) -> None: ...
    async def get_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> dict[str, Any] | None: ...
"""  # noqa: E501 -- verbatim

IN_MEMORY_SWAP = (
    ('RedisStorageAdapter(redis_url=os.environ["REDIS_URL"])', "InMemoryStorageAdapter()"),
    ("StorageManager, RedisStorageAdapter", "StorageManager, InMemoryStorageAdapter"),
)


class FakeLLM:
    """The host's ``acall_llm``: records each call and answers with a numbered summary."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, *, model: str, messages: list[dict[str, str]], prompt_meta: Any) -> Any:
        self.calls.append({"model": model, "messages": messages, "prompt_meta": prompt_meta})
        return f"LLM summary #{len(self.calls)}", {"model": model, "tokens": 42}


async def run(source: str, namespace: dict[str, Any], *, swaps: tuple[tuple[str, str], ...] = ()) -> None:
    """Execute a sample (top-level await allowed) with ``autoplay_sdk`` swapped for ``autoplay_obs``."""
    assert "autoplay_obs" not in source
    source = source.replace("autoplay_sdk", "autoplay_obs")
    for old, new in swaps:
        assert old in source
        source = source.replace(old, new)
    code = compile(source, "<seed sample>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)  # the sample is the test subject
    if result is not None:
        await result


async def run_the_three_steps(swaps: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    llm = FakeLLM()
    ns: dict[str, Any] = {
        "acall_llm": llm,
        "YOUR_SUMMARY_MODEL": "summary-model-v1",
        "session_started_at": time.time() - 120,
        "llm": llm,
    }
    await run(SUMMARIZER, ns)
    await run(CONFIGURE, ns, swaps=swaps)
    try:
        assert isinstance(ns["storage"], StorageManager)

        # 2. first session start: a brand-new user
        await run(SESSION_START, ns)
        assert ns["state"].user_id == "u_123"
        assert ns["state"].sessions_count == 0
        assert ns["state"].current_session_id == "sess_abc"
        assert ns["onboarding_session"] is None
        assert ns["context_extra"]["session_count"] == 0
        assert ns["context_extra"]["is_returning_user"] is False

        # 3. session end with the injected summarizer
        await run(SESSION_END, ns)
        updated = ns["updated"]
        assert updated.sessions_count == 1
        assert updated.onboarding.summary == "LLM summary #1"
        assert [e.session_id for e in updated.sessions_index] == ["sess_abc"]
        assert ns["snapshot"].untouched_workflow_ids == ("create_project", "invite_team", "configure_columns")
        [call] = llm.calls
        assert call["model"] == "summary-model-v1"
        assert call["prompt_meta"] is ONBOARDING_SUMMARY_PROMPT
        content = call["messages"][0]["content"]
        assert '["create_project", "invite_team", "configure_columns"]' in content
        assert "{" not in content and "}" not in content

        stored = await ns["storage"].get_user_state("prod_1", "u_123")
        assert stored["sessions"]["count"] == 1
        assert stored["onboarding"]["summary"] == "LLM summary #1"
        frozen = await ns["storage"].get_session_snapshot("prod_1", "u_123", "sess_abc")
        assert frozen == ns["snapshot"].to_dict()

        # the user comes back: step 2 again now returns the onboarding session
        await run(SESSION_START, ns)
        assert ns["state"].sessions_count == 1
        assert ns["onboarding_session"] is not None
        assert ns["onboarding_session"].session_id == "sess_abc"
        assert ns["context_extra"]["is_returning_user"] is True
        assert ns["context_extra"]["onboarding_summary"] == "LLM summary #1"

        # step 3 re-run for the same session is a retry: counted once, snapshot untouched
        await run(SESSION_END, ns)
        assert ns["updated"].sessions_count == 1
        assert await ns["storage"].get_session_snapshot("prod_1", "u_123", "sess_abc") == frozen
        assert (await ns["storage"].get_user_state("prod_1", "u_123"))["sessions"]["count"] == 1
        return ns
    finally:
        await ns["storage"].aclose()


async def test_the_three_steps_run_on_the_in_memory_adapter() -> None:
    ns = await run_the_three_steps(IN_MEMORY_SWAP)
    assert type(ns["storage"].primary).__name__ == "InMemoryStorageAdapter"


@pytest.mark.redis_server
async def test_the_three_steps_run_on_redis(
    redis_url: str, raw: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    ns = await run_the_three_steps()
    assert type(ns["storage"].primary).__name__ == "RedisStorageAdapter"
    keys = sorted(k.decode() for k in await raw.keys("*"))
    assert keys == ["autoplay:user:prod_1:u_123:session:sess_abc", "autoplay:user:prod_1:u_123:state"]


async def test_the_custom_adapter_sample_is_an_adapter_and_a_valid_sink() -> None:
    ns: dict[str, Any] = {}
    await run(CUSTOM_ADAPTER, ns)
    warehouse = ns["MyWarehouseAdapter"]()
    assert isinstance(warehouse, AutoplayStorageAdapter)
    await run(SUMMARIZER, ns)
    ns.update(acall_llm=FakeLLM(), YOUR_SUMMARY_MODEL="m", session_started_at=time.time() - 5)
    await run(CONFIGURE, ns, swaps=IN_MEMORY_SWAP)
    ns["storage"] = StorageManager([ns["storage"].primary, warehouse])
    await run(SESSION_START, ns)
    await run(SESSION_END, ns)
    await ns["storage"].drain()
    assert ns["updated"].sessions_count == 1
    assert (await ns["storage"].get_user_state("prod_1", "u_123"))["sessions"]["count"] == 1
    await ns["storage"].aclose()

    # as the only adapter it stores nothing, yet the host keeps running
    ns["storage"] = StorageManager([warehouse])
    await run(SESSION_START, ns)
    assert ns["state"].current_session_id == "sess_abc"
    await run(SESSION_END, ns)
    assert ns["updated"].sessions_count == 1
