"""Operator tools on a real Redis: audit a product with broken writes, erase a user for good,
list every session, pin the onboarding snapshot -- through the library and the CLI.

Why: the audit must tell exactly the broken users from the healthy ones, and
the erasure must hold against what really races it on a server (a session end
reading before the erase, freezing after it, a retry later). Key scans with
glob characters and prefixes only mean something against Redis's own SCAN.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from opentelemetry.sdk.trace import TracerProvider

from autoplay_obs.cli import run
from autoplay_obs.errors import UserErasedError
from autoplay_obs.storage import (
    RedisStorageAdapter,
    StorageManager,
    end_session,
    session_key,
    start_session,
    user_state_key,
)
from autoplay_obs.storage._outbox import Outbox
from autoplay_obs.storage._outbox_types import OutboxItem
from autoplay_obs.storage._tombstone import is_tombstone
from autoplay_obs.user_adoption_state import SessionSnapshot, encode

pytestmark = pytest.mark.redis_server

P = "shop"
MakeSnapshot = Callable[..., SessionSnapshot]
NEIGHBOURS = ("u10", "u1*", "u[1]", "u1:session:x")


@pytest.fixture
async def manager(redis_url: str) -> AsyncIterator[StorageManager]:
    m = StorageManager([RedisStorageAdapter(redis_url=redis_url)])
    try:
        yield m
    finally:
        await m.aclose()


async def cli(*argv: str, stdin: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run(list(argv), out=out, err=err, stdin=stdin or io.StringIO())
    return code, out.getvalue(), err.getvalue()


async def sessions(manager: StorageManager, user: str, n: int, make: MakeSnapshot, first: int = 1) -> None:
    for number in range(first, first + n):
        result = await end_session(
            P, user, make(f"s{number}", number=number, user_id=user), manager, summary="s"
        )
        assert result.persisted and result.error is None


async def user_keys(raw: redis.asyncio.Redis, user: str) -> set[bytes]:
    return {k for k in await raw.keys("*") if k.split(b":")[3] == user.replace(":", "%3A").encode()}


# ------------------------------------------------------------------ audit


async def seed_broken_product(manager: StorageManager, raw: redis.asyncio.Redis, make: MakeSnapshot) -> str:
    """Healthy users, and one user per kind of broken write; returns the lost merge's trace id."""
    await sessions(manager, "healthy", 3, make)
    await sessions(manager, "long", 60, make)  # a full index, 10 sessions beyond it: all fine
    await sessions(manager, "merge_lost", 2, make)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("session end that crashed before its merge") as span:
        lost = make("s3", number=3, user_id="merge_lost")
        assert await manager.create_snapshot(P, "merge_lost", "s3", _stamped(lost))
        trace_id = format(span.get_span_context().trace_id, "032x")
    await sessions(manager, "first_lost", 0, make)
    assert await manager.create_snapshot(P, "first_lost", "s1", _stamped(make("s1", user_id="first_lost")))
    await sessions(manager, "freeze_lost", 3, make)
    await raw.delete(session_key(P, "freeze_lost", "s2"))
    await sessions(manager, "corrupt", 1, make)
    await raw.set(user_state_key(P, "corrupt"), b'{"_v":1,"user_id": "corrupt", "sessions": ')
    await sessions(manager, "future", 1, make)
    doc = json.loads(await raw.get(user_state_key(P, "future")))
    await raw.set(user_state_key(P, "future"), json.dumps({**doc, "_v": 2}))
    await sessions(manager, "undercount", 2, make)
    doc = json.loads(await raw.get(user_state_key(P, "undercount")))
    doc["sessions"]["count"] = 1
    await raw.set(user_state_key(P, "undercount"), json.dumps(doc))
    await raw.set(session_key(P, "bad_snapshot", "s1"), b"[1, 2]")
    manager.forget_user(P, "corrupt")
    return trace_id


def _stamped(snapshot: SessionSnapshot) -> bytes:
    from autoplay_obs.storage._doc_trace import stamped
    from autoplay_obs.storage._protocol import headed

    return stamped(headed(encode(snapshot)))


def kinds(findings: list[dict[str, Any]]) -> set[tuple[str, str, str | None]]:
    return {(f["user_id"], f["kind"], f["session_id"]) for f in findings}


BROKEN = {
    ("merge_lost", "lost_merge", "s3"),
    ("first_lost", "lost_merge", "s1"),
    ("freeze_lost", "lost_freeze", "s2"),
    ("corrupt", "unreadable", None),
    ("future", "unknown_version", None),
    ("undercount", "count_below_index", None),
    ("bad_snapshot", "unreadable", "s1"),
}


async def test_audit_finds_exactly_the_broken_writes_and_repair_merges_the_lost_ones(
    manager: StorageManager, raw: redis.asyncio.Redis, redis_url: str, make_snapshot: MakeSnapshot
) -> None:
    trace_id = await seed_broken_product(manager, raw, make_snapshot)

    code, out, _ = await cli("audit", "--redis-url", redis_url, "--product", P, "--json")
    report = json.loads(out)
    assert code == 1
    assert kinds(report["findings"]) == BROKEN
    assert set(report["findings"][0]) >= {"user_id", "kind", "session_id", "trace_id"}
    [lost] = [f for f in report["findings"] if f["user_id"] == "merge_lost"]
    assert lost["trace_id"] == trace_id
    assert report["users_checked"] == 9

    code, out, _ = await cli("audit", "--redis-url", redis_url, "--product", P, "--user", "healthy", "--json")
    assert (code, json.loads(out)["findings"]) == (0, [])

    code, out, _ = await cli("audit", "--redis-url", redis_url, "--product", P, "--repair", "--json")
    repaired = json.loads(out)
    assert code == 1  # the unrepairable ones remain
    assert kinds(repaired["repaired"]) == {
        ("merge_lost", "lost_merge", "s3"),
        ("first_lost", "lost_merge", "s1"),
    }
    state = json.loads(await raw.get(user_state_key(P, "merge_lost")))
    assert (state["sessions"]["count"], [e["session_id"] for e in state["sessions"]["index"]]) == (
        3,
        ["s1", "s2", "s3"],
    )
    assert json.loads(await raw.get(user_state_key(P, "first_lost")))["sessions"]["count"] == 1

    code, out, _ = await cli("audit", "--redis-url", redis_url, "--product", P, "--json")
    assert kinds(json.loads(out)["findings"]) == BROKEN - {
        ("merge_lost", "lost_merge", "s3"),
        ("first_lost", "lost_merge", "s1"),
    }
    code, out, _ = await cli("audit", "--redis-url", redis_url, "--product", P, "--user", "merge_lost")
    assert code == 0 and "0 findings" in out


async def test_audit_reports_what_waits_in_the_outbox(
    manager: StorageManager, redis_url: str, make_snapshot: MakeSnapshot, tmp_path: Path
) -> None:
    await sessions(manager, "queued", 1, make_snapshot)
    path = tmp_path / "outbox.sqlite"
    async with Outbox(path) as outbox:
        item = OutboxItem(P, "queued", "s2", encode(make_snapshot("s2", number=2, user_id="queued")))
        assert (await outbox.put(item)).queued
    code, out, _ = await cli(
        "audit", "--redis-url", redis_url, "--product", P, "--outbox", str(path), "--json"
    )
    assert code == 1
    assert kinds(json.loads(out)["findings"]) == {("queued", "outbox_pending", "s2")}

    code, out, _ = await cli(
        "erase",
        "--redis-url",
        redis_url,
        "--product",
        P,
        "--user",
        "queued",
        "--outbox",
        str(path),
        "--yes",
        "--json",
    )
    assert (code, json.loads(out)["outbox_purged"]) == (0, 1)
    async with Outbox(path) as outbox:
        assert await outbox.pending_for(P, "queued") == []


async def test_an_outbox_replay_does_not_bring_an_erased_user_back(
    raw: redis.asyncio.Redis, redis_url: str, make_snapshot: MakeSnapshot, tmp_path: Path
) -> None:
    adapter = RedisStorageAdapter(redis_url=redis_url)
    async with StorageManager([adapter], outbox=tmp_path / "outbox.sqlite") as manager:
        await sessions(manager, "u1", 2, make_snapshot)
        assert (await manager.delete_user(P, "u1")).keys_deleted == 3
        assert manager.outbox is not None
        late = make_snapshot("s3", number=3, user_id="u1")  # queued by a process that missed the erase
        assert (await manager.outbox.put(OutboxItem(P, "u1", "s3", _stamped(late)))).queued
        await manager.flush_outbox()
        assert await manager.outbox.pending_for(P, "u1") == []  # dropped, not retried forever
    assert await user_keys(raw, "u1") == {user_state_key(P, "u1").encode()}
    assert is_tombstone(await raw.get(user_state_key(P, "u1")))


# ------------------------------------------------------------------ history, inspect, erase


async def test_history_inspect_and_an_erasure_that_nothing_brings_back(
    manager: StorageManager, raw: redis.asyncio.Redis, redis_url: str, make_snapshot: MakeSnapshot
) -> None:
    await sessions(manager, "u1", 120, make_snapshot)
    for neighbour in NEIGHBOURS:
        await sessions(manager, neighbour, 2, make_snapshot)
    before = {n: await user_keys(raw, n) for n in NEIGHBOURS}
    assert all(len(keys) == 3 for keys in before.values())
    base = ("--redis-url", redis_url, "--product", P, "--user", "u1")

    code, out, _ = await cli("history", *base, "--json")
    listed = json.loads(out)["sessions"]
    assert code == 0
    assert [s["session_id"] for s in listed] == [f"s{n}" for n in range(1, 121)]
    assert [s["in_index"] for s in listed] == [False] * 70 + [True] * 50
    assert set(listed[0]) >= {"session_id", "session_number", "started_at", "captured_at", "in_index"}

    code, out, _ = await cli("inspect", *base, "--json")
    stored = json.loads(await raw.get(user_state_key(P, "u1")))
    del stored["_rev"]
    assert (code, json.loads(out)) == (0, stored)
    code, out, _ = await cli("inspect", *base)
    assert code == 0 and "120 counted, 50 in the index" in out

    code, out, _ = await cli("erase", *base, "--dry-run", "--json")
    assert (code, json.loads(out)["keys_found"], json.loads(out)["keys_deleted"]) == (0, 121, 0)
    assert len(await user_keys(raw, "u1")) == 121

    stale = StorageManager([RedisStorageAdapter(redis_url=redis_url)])  # knows u1's state from before
    try:
        assert (await start_session(P, "u1", "s200", stale)).persisted
        code, out, _ = await cli("erase", *base, "--yes", "--json")
        receipt = json.loads(out)
        assert code == 0
        assert (receipt["keys_found"], receipt["keys_deleted"], receipt["dry_run"]) == (121, 121, False)
        assert {place["where"] for place in receipt["not_erased"]} >= {"posthog", "amplitude"}
        assert await user_keys(raw, "u1") == {user_state_key(P, "u1").encode()}
        assert is_tombstone(await raw.get(user_state_key(P, "u1")))
        assert {n: await user_keys(raw, n) for n in NEIGHBOURS} == before

        # A session end that read the state before the erase freezes after it: its merge meets the tombstone.
        late = await end_session(P, "u1", make_snapshot("s200", number=121, user_id="u1"), stale, summary="x")
        assert not late.persisted and isinstance(late.error, UserErasedError)
    finally:
        await stale.aclose()
    # A retried end, a fresh start, a new end (the summarizer path): none brings the user back.
    retried = await end_session(P, "u1", make_snapshot("s5", number=5, user_id="u1"), manager, summary="x")
    assert isinstance(retried.error, UserErasedError)
    started = await start_session(P, "u1", "s300", manager)
    assert started.degraded and not started.persisted
    fresh = await end_session(
        P, "u1", make_snapshot("s300", number=122, user_id="u1"), manager, summarizer=lambda _: "sum"
    )
    assert isinstance(fresh.error, UserErasedError)
    assert await user_keys(raw, "u1") == {user_state_key(P, "u1").encode()}
    assert is_tombstone(await raw.get(user_state_key(P, "u1")))
    assert 0 < await raw.ttl(user_state_key(P, "u1")) <= 30 * 24 * 3600

    code, out, _ = await cli("inspect", *base, "--json")
    assert (code, json.loads(out)["_tombstone"]) == (0, True)
    code, out, _ = await cli("audit", "--redis-url", redis_url, "--product", P, "--json")
    assert (code, json.loads(out)["findings"], json.loads(out)["erased_users"]) == (0, [], 1)


class EraseBetweenReadAndFreeze(RedisStorageAdapter):
    """A primary on which the erase lands right after a session end has read the state."""

    eraser: StorageManager | None = None

    async def load_state(self, product_id: str, user_id: str) -> Any:
        found = await super().load_state(product_id, user_id)
        if self.eraser is not None:
            eraser, self.eraser = self.eraser, None
            await eraser.delete_user(product_id, user_id)
        return found


async def test_an_erase_between_the_read_and_the_freeze_leaves_no_snapshot(
    manager: StorageManager, raw: redis.asyncio.Redis, redis_url: str, make_snapshot: MakeSnapshot
) -> None:
    await sessions(manager, "u1", 2, make_snapshot)
    racing = StorageManager([EraseBetweenReadAndFreeze(redis_url=redis_url)], cache_size=0)
    try:
        racing.primary.eraser = manager  # type: ignore[attr-defined]
        result = await end_session(P, "u1", make_snapshot("s3", number=3, user_id="u1"), racing, summary="x")
    finally:
        await racing.aclose()
    assert isinstance(result.error, UserErasedError)
    assert await user_keys(raw, "u1") == {user_state_key(P, "u1").encode()}


async def test_an_erase_while_the_summarizer_runs_leaves_no_snapshot(
    manager: StorageManager, raw: redis.asyncio.Redis, redis_url: str, make_snapshot: MakeSnapshot
) -> None:
    await sessions(manager, "u1", 2, make_snapshot)
    eraser = StorageManager([RedisStorageAdapter(redis_url=redis_url)])

    async def summarizer(_: SessionSnapshot) -> str:
        receipt = await eraser.delete_user(P, "u1")  # the snapshot s3 is frozen by now
        assert receipt.keys_deleted == 4
        return "summary"

    try:
        result = await end_session(
            P, "u1", make_snapshot("s3", number=3, user_id="u1"), manager, summarizer=summarizer
        )
    finally:
        await eraser.aclose()
    assert isinstance(result.error, UserErasedError)
    assert await user_keys(raw, "u1") == {user_state_key(P, "u1").encode()}


# ------------------------------------------------------------------ retention, trace ids, CLI


async def test_snapshots_expire_and_the_onboarding_one_is_pinned(
    raw: redis.asyncio.Redis, redis_url: str, make_snapshot: MakeSnapshot
) -> None:
    adapter = RedisStorageAdapter(redis_url=redis_url, snapshot_ttl=600, state_ttl=900)
    async with StorageManager([adapter]) as m:
        await sessions(m, "u1", 3, make_snapshot)
    assert await raw.ttl(session_key(P, "u1", "s1")) == -1
    assert 0 < await raw.ttl(session_key(P, "u1", "s2")) <= 600
    assert 0 < await raw.ttl(session_key(P, "u1", "s3")) <= 600
    assert 600 < await raw.ttl(user_state_key(P, "u1")) <= 900


async def test_documents_carry_the_trace_id_of_their_writer(
    manager: StorageManager, raw: redis.asyncio.Redis, redis_url: str, make_snapshot: MakeSnapshot
) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("host request") as span:
        await end_session(P, "u1", make_snapshot("s1", user_id="u1"), manager, summary="x")
        trace_id = format(span.get_span_context().trace_id, "032x")
    assert json.loads(await raw.get(user_state_key(P, "u1")))["_trace_id"] == trace_id
    await end_session(P, "u1", make_snapshot("s2", number=2, user_id="u1"), manager, summary="x")
    assert json.loads(await raw.get(session_key(P, "u1", "s1")))["_trace_id"] == trace_id
    assert "_trace_id" not in json.loads(await raw.get(session_key(P, "u1", "s2")))  # no span recording
    assert "_trace_id" not in json.loads(await raw.get(user_state_key(P, "u1")))
    code, out, _ = await cli("history", "--redis-url", redis_url, "--product", P, "--user", "u1", "--json")
    assert code == 0
    assert [s["trace_id"] for s in json.loads(out)["sessions"]] == [trace_id, None]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_cli_exit_codes(
    manager: StorageManager, raw: redis.asyncio.Redis, redis_url: str, make_snapshot: MakeSnapshot
) -> None:
    await sessions(manager, "u1", 1, make_snapshot)
    base = ("--redis-url", redis_url, "--product", P, "--user", "u1")
    assert (await cli("inspect", "--redis-url", redis_url, "--user", "u1"))[0] == 2  # no --product
    assert (await cli("erase", "--redis-url", redis_url, "--product", P))[0] == 2  # no --user
    code, _, err = await cli(
        "inspect", "--redis-url", "redis://127.0.0.1:1/0", "--product", P, "--user", "u1"
    )
    assert code == 2 and "StorageUnavailable" not in err and err
    code, out, _ = await cli(
        "inspect", "--redis-url", redis_url, "--product", P, "--user", "nobody", "--json"
    )
    assert (code, json.loads(out)) == (1, None)
    code, _, err = await cli("erase", *base)  # stdin is not a terminal and there is no --yes
    assert code == 2 and "--yes" in err
    code, _, err = await cli("erase", *base, stdin=Terminal("n\n"))
    assert code == 1 and "[y/N]" in err
    assert len(await user_keys(raw, "u1")) == 2
    code, out, _ = await cli("erase", *base, stdin=Terminal("y\n"))
    assert code == 0 and "deleted 2" in out and "posthog" in out
    assert await user_keys(raw, "u1") == {user_state_key(P, "u1").encode()}


def test_the_console_script_runs_the_operator_commands(redis_url: str) -> None:
    """``python -m autoplay_obs`` in a process of its own: $REDIS_URL, exit codes, --help."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "REDIS_URL": redis_url}

    def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "autoplay_obs", *argv]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)

    clean = run_cli("audit", "--product", P, "--json")
    assert (clean.returncode, json.loads(clean.stdout)["findings"]) == (0, [])
    helped = run_cli("audit", "--help")
    assert helped.returncode == 0 and "2  usage error" in helped.stdout
    assert run_cli("history", "--product", P).returncode == 2  # --user is required
    assert "inspect" in run_cli("--help").stdout
