"""The outbox on real SQLite files in a tmp dir, one process: queue, lease, bounds, counters.

Ages and leases run on an injected clock, so nothing here sleeps or times.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from autoplay_obs.errors import (
    ConfigurationError,
    InvalidIdError,
    InvalidValueError,
    OutboxCorruptError,
    OutboxError,
    OutboxTimeoutError,
    OutboxWriteError,
)
from autoplay_obs.storage._outbox import Outbox
from autoplay_obs.storage._outbox_types import OutboxItem, format_status


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def item(user: str, session: str, size: int = 10, summary: str | None = None) -> OutboxItem:
    return OutboxItem("prod", user, session, session.encode().ljust(size, b"."), summary)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def outbox(tmp_path: Path, clock: Clock) -> AsyncIterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db", clock=clock)
    yield box
    await box.aclose()


async def test_an_entry_comes_back_as_it_was_put(outbox: Outbox, clock: Clock) -> None:
    result = await outbox.put(OutboxItem("prod", "u1", "s1", b'{"_v":1}', "a summary"))
    assert (result.queued, result.dropped, result.depth, result.total_bytes) == (True, {}, 1, 8 + 9)
    [entry] = await outbox.claim(10, lease_s=30)
    assert (entry.id, entry.product_id, entry.user_id, entry.session_id) == (
        result.entry_id,
        "prod",
        "u1",
        "s1",
    )
    assert (entry.snapshot, entry.summary, entry.queued_at, entry.attempts) == (
        b'{"_v":1}',
        "a summary",
        clock.now,
        0,
    )
    assert (entry.state, entry.claimed_by, entry.lease_until) == ("pending", outbox.owner, clock.now + 30)
    assert entry.traceparent is None and entry.span_context() is None
    assert await outbox.ack([entry.id]) == 1
    status = await outbox.status()
    assert (status.depth, status.queued_total, status.replayed_total) == (0, 1, 1)


async def test_the_queuing_span_travels_with_the_entry(outbox: Outbox) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("session end") as span:
        await outbox.put(item("u1", "s1"))
    [entry] = await outbox.pending_for("prod", "u1")
    linked = entry.span_context()
    assert entry.traceparent is not None and linked is not None
    assert (linked.trace_id, linked.span_id) == (
        span.get_span_context().trace_id,
        span.get_span_context().span_id,
    )


async def test_queuing_a_session_again_keeps_one_entry_the_first(outbox: Outbox) -> None:
    first = await outbox.put(item("u1", "s1", summary="first"))
    again = await outbox.put(OutboxItem("prod", "u1", "s1", b"other bytes", "second"))
    assert (again.entry_id, again.queued, again.depth) == (first.entry_id, False, 1)
    [entry] = await outbox.pending_for("prod", "u1")
    assert entry.summary == "first"
    assert (await outbox.status()).queued_total == 1


async def test_a_claim_hands_out_each_users_oldest_entry_one_at_a_time(outbox: Outbox) -> None:
    for user, session in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("a", "a3"), ("b", "b2")]:
        await outbox.put(item(user, session))
    first = await outbox.claim(10, lease_s=30)
    assert [e.session_id for e in first] == ["a1", "b1"]
    assert await outbox.claim(10, lease_s=30) == []  # both users have an entry out
    a1, b1 = first
    await outbox.ack([a1.id])
    assert [e.session_id for e in await outbox.claim(10, lease_s=30)] == ["a2"]
    assert await outbox.release(b1.id, "primary down")
    [b1_again] = await outbox.claim(10, lease_s=30)
    assert (b1_again.session_id, b1_again.attempts, b1_again.last_error) == ("b1", 1, "primary down")


async def test_a_parked_entry_is_set_aside_and_does_not_block_its_user(outbox: Outbox) -> None:
    for session in ("s1", "s2"):
        await outbox.put(item("u", session))
    [s1] = await outbox.claim(10, lease_s=30)
    assert await outbox.park(s1.id, "unsupported _v=9")
    [s2] = await outbox.claim(10, lease_s=30)
    assert s2.session_id == "s2"
    assert await outbox.pending_for("prod", "u") == [s2]
    await outbox.ack([s2.id])
    status = await outbox.status()
    assert (status.pending, status.parked, status.parked_total, status.leased) == (0, 1, 1, 0)
    assert status.oldest_age_s is None  # a parked entry is not waiting for replay


async def test_a_lapsed_lease_lets_another_claimer_take_the_entry(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "shared.db"
    async with Outbox(path, clock=clock) as one, Outbox(path, clock=clock) as two:
        await one.put(item("u", "s1"))
        [held] = await one.claim(10, lease_s=30)
        assert await two.claim(10, lease_s=30) == []
        assert not await two.release(held.id, "not mine")  # held by `one`: left alone
        clock.now += 31
        [taken] = await two.claim(10, lease_s=30)
        assert (taken.id, taken.claimed_by) == (held.id, two.owner)
        assert not await one.park(held.id, "too late")  # `two` holds it now


async def test_release_with_a_delay_holds_the_user_back_until_then(outbox: Outbox, clock: Clock) -> None:
    await outbox.put(item("u", "s1"))
    await outbox.put(item("u", "s2"))
    [s1] = await outbox.claim(10, lease_s=30)
    await outbox.release(s1.id, "timeout", retry_after_s=5)
    assert await outbox.claim(10, lease_s=30) == []
    clock.now += 6
    assert [e.session_id for e in await outbox.claim(10, lease_s=30)] == ["s1"]


async def test_ack_counts_only_entries_still_there(outbox: Outbox) -> None:
    put = await outbox.put(item("u", "s1"))
    assert await outbox.ack([put.entry_id, put.entry_id + 100]) == 1
    assert await outbox.ack([put.entry_id]) == 0
    assert await outbox.ack([]) == 0
    assert (await outbox.status()).replayed_total == 1


async def test_purge_user_removes_that_user_only(outbox: Outbox) -> None:
    for user, session in [("a", "1"), ("a", "2"), ("b", "1")]:
        await outbox.put(item(user, session))
    await outbox.park((await outbox.claim(1, lease_s=30))[0].id, "bad")  # parked entries go too
    assert await outbox.purge_user("prod", "a") == 2
    assert await outbox.pending_for("prod", "a") == []
    assert [e.session_id for e in await outbox.pending_for("prod", "b")] == ["1"]


async def test_a_tiny_outbox_drops_its_oldest_entries_and_counts_them(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "tiny.db", max_entries=3) as box:
        results = [await box.put(item(f"u{i}", f"s{i}")) for i in range(5)]
        assert [r.dropped for r in results] == [{}, {}, {}, {"max_entries": 1}, {"max_entries": 1}]
        assert all(r.queued for r in results) and results[-1].depth == 3
        remaining = [e.session_id for e in await box.claim(10, lease_s=30)]
        assert remaining == ["s2", "s3", "s4"]
        assert (await box.status()).dropped_total == {"max_entries": 2, "max_bytes": 0, "max_age": 0}
        assert box.dropped == {"max_entries": 2}


async def test_the_byte_bound_drops_as_many_oldest_as_needed(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "small.db", max_bytes=250) as box:
        for i in range(2):
            await box.put(item("u", f"s{i}", size=100))
        result = await box.put(item("u", "big", size=200))
        assert (result.dropped, result.depth, result.total_bytes) == ({"max_bytes": 2}, 1, 200)
        with pytest.raises(OutboxWriteError, match="max_bytes"):
            await box.put(item("u", "huge", size=251))
        assert [e.session_id for e in await box.pending_for("prod", "u")] == ["big"]


async def test_entries_past_their_age_are_dropped_by_put_claim_and_expire(
    tmp_path: Path, clock: Clock
) -> None:
    async with Outbox(tmp_path / "aging.db", max_age_s=60, clock=clock) as box:
        await box.put(item("u", "old"))
        clock.now += 61
        assert (await box.put(item("u", "new"))).dropped == {"max_age": 1}
        clock.now += 61
        assert await box.claim(10, lease_s=30) == []
        await box.put(item("u", "newer"))
        clock.now += 61
        assert await box.expire() == 1
        assert (await box.status()).dropped_total["max_age"] == 3
        assert box.dropped == {"max_age": 3}


async def test_counters_survive_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "kept.db"
    async with Outbox(path, max_entries=1) as box:
        await box.put(item("u", "s1"))
        await box.put(item("u", "s2"))
        [entry] = await box.claim(1, lease_s=30)
        await box.ack([entry.id])
        before = (await box.status()).as_dict()
    async with Outbox(path, max_entries=1) as reopened:
        after = (await reopened.status()).as_dict()
    assert after == before | {"oldest_age_s": None}
    assert (after["queued_total"], after["replayed_total"], after["dropped_total"]["max_entries"]) == (
        2,
        1,
        1,
    )


async def test_status_prints_an_aligned_table_and_plain_json(outbox: Outbox) -> None:
    await outbox.put(item("u", "s1", size=2048))
    status = await outbox.status()
    text = format_status(status)
    lines = text.splitlines()
    rows = [re.match(r"^( *\S(?:.*?\S)?) {2,}(\S.*)$", line) for line in lines]
    assert all(rows) and len({row.start(2) for row in rows if row}) == 1  # one column for every value
    assert "2.0 KiB of 64.0 MiB" in text and "dropped: max_bytes" in text
    assert json.loads(json.dumps(status.as_dict()))["depth"] == 1


async def test_bad_arguments_fail_before_any_file_is_made(tmp_path: Path) -> None:
    path = tmp_path / "never.db"
    box = Outbox(path)
    with pytest.raises(InvalidIdError):
        await box.put(OutboxItem("prod", "", "s1", b"x"))
    with pytest.raises(InvalidValueError):
        await box.put(OutboxItem("prod", "u", "s1", "not bytes"))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Outbox(path, synchronous="OFF")
    with pytest.raises(ConfigurationError):
        Outbox(path, max_entries=0)
    assert not path.exists()


async def test_a_missing_file_is_refused_when_create_is_off(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "absent.db", create=False)
    with pytest.raises(OutboxWriteError, match="cannot open outbox"):
        await box.status()
    assert not (tmp_path / "absent.db").exists()


async def test_a_closed_outbox_refuses_calls(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "closed.db")
    await box.put(item("u", "s1"))
    box.close()
    with pytest.raises(OutboxError, match="closed"):
        await box.put(item("u", "s2"))


async def test_a_foreign_sqlite_file_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE notes (body TEXT)")
    before = path.read_bytes()
    with pytest.raises(OutboxCorruptError, match="not an autoplay outbox"):
        await Outbox(path).open()
    assert path.read_bytes() == before


async def test_a_lock_held_past_the_timeout_is_a_timeout_error_and_the_loop_keeps_running(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.db"
    async with Outbox(path, timeout_s=30) as box:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        waiting = asyncio.ensure_future(box.put(item("u", "s1")))
        for _ in range(20):
            await asyncio.sleep(0)  # the loop runs while the put waits on the file's lock
        assert not waiting.done()
        holder.execute("COMMIT")
        assert (await waiting).queued
        holder.execute("BEGIN IMMEDIATE")
        quick = Outbox(path, timeout_s=0.2)
        with pytest.raises(OutboxTimeoutError):
            await quick.put(item("u", "s2"))
        holder.execute("ROLLBACK")
        holder.close()
        assert (await quick.put(item("u", "s2"))).queued
        await quick.aclose()


async def test_the_files_are_readable_by_their_owner_only(outbox: Outbox) -> None:
    await outbox.put(item("u", "s1"))
    files = sorted(Path(outbox.path).parent.iterdir())
    assert [f.name for f in files] == ["outbox.db", "outbox.db-shm", "outbox.db-wal"]
    assert {f.stat().st_mode & 0o777 for f in files} == {0o600}


async def test_a_status_read_elsewhere_reports_the_writers_bounds(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    async with Outbox(path, max_entries=50, max_bytes=4096, max_age_s=600, synchronous="NORMAL") as writer:
        await writer.put(item("u", "s1"))
    async with Outbox(path, create=False) as reader:
        status = await reader.status()
    assert (status.max_entries, status.max_bytes, status.max_age_s, status.synchronous) == (
        50,
        4096,
        600,
        "NORMAL",
    )
