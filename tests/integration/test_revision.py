"""The compare-and-set token on a real Redis: our revision head, and the exact fallback.

A state written through a manager starts with ``{"_rev":"<32 hex>"``, so the
swap script reads 42 bytes instead of the document. Any document without that
head -- written by the reference package, by hand, or with a damaged head --
is compared by SHA-1 of its bytes, so a change by another writer is never
overwritten.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
import redis.asyncio

from autoplay_obs.storage import RedisStorageAdapter, StorageManager, end_session, start_session
from autoplay_obs.storage._keys import user_state_key
from autoplay_obs.user_adoption_state import SessionSnapshot

pytestmark = pytest.mark.redis_server

P, U = "prod_rev", "user_rev"
KEY = user_state_key(P, U)


async def test_a_state_written_by_a_manager_starts_with_a_fresh_revision(
    adapter: RedisStorageAdapter, raw: redis.asyncio.Redis
) -> None:
    storage = StorageManager([adapter])
    await start_session(P, U, "s1", storage)
    first = await raw.get(KEY)
    await start_session(P, U, "s2", storage)
    second = await raw.get(KEY)
    head = re.compile(rb'\{"_rev":"([0-9a-f]{32})",')
    m1, m2 = head.match(first), head.match(second)
    assert m1 and m2 and m1.group(1) != m2.group(1)
    assert json.loads(second)["sessions"]["current_session_id"] == "s2"


@pytest.mark.parametrize(
    "foreign_head",
    [
        pytest.param("", id="no-revision (reference package / hand edit)"),
        pytest.param('"_rev":"short",', id="damaged-revision"),
    ],
)
async def test_a_foreign_write_between_read_and_swap_is_detected_and_kept(
    adapter: RedisStorageAdapter,
    raw: redis.asyncio.Redis,
    make_snapshot: Callable[..., SessionSnapshot],
    foreign_head: str,
) -> None:
    storage = StorageManager([adapter])  # caches the state it writes at start
    started = await start_session(P, U, "s1", storage)
    # Another writer replaces the document: same shape, a summary only it knows, no (valid) revision.
    doc = json.loads(await raw.get(KEY))
    doc.pop("_rev")
    doc["onboarding"]["summary"] = "written elsewhere"
    body = json.dumps(doc, separators=(",", ":"))
    await raw.set(KEY, "{" + foreign_head + body[1:])

    snapshot = make_snapshot("s1", number=1, state=started.state)
    ended = await end_session(P, U, snapshot, storage)

    assert ended.persisted and ended.conflicts == 1  # the stale cached token lost
    stored = json.loads(await raw.get(KEY))
    assert stored["onboarding"]["summary"] == "written elsewhere"  # not overwritten
    assert stored["sessions"]["count"] == 1
    assert re.fullmatch(r"[0-9a-f]{32}", stored["_rev"])
