"""The demo's outbox: an outage run queues the ends it could not persist, replays them, loses none.

On by default in a temporary directory removed at the end; ``--outbox PATH``
keeps the file (its counters show the replays), ``--no-outbox`` loses the
ends as before. The end-of-run flush retries a primary still down, within
its bound, and what it could not replay is reported as lost.
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import pytest

from autoplay_obs.demo import DemoConfig, DemoStats, main, run_demo
from autoplay_obs.demo._faults import FlakyPrimary, OutageSchedule
from autoplay_obs.demo._outbox import flush_until_empty, open_outbox
from autoplay_obs.demo._report import format_summary
from autoplay_obs.errors import ConfigurationError
from autoplay_obs.storage import InMemoryStorageAdapter, Outbox, StorageManager, end_session
from autoplay_obs.storage._outbox_types import OutboxItem
from autoplay_obs.user_adoption_state import SessionSnapshot, UserAdoptionState

SMALL = {"sessions": 200, "users": 10, "concurrency": 8, "progress": False, "primary_outage": 0.2}


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where ``tempfile`` makes the demo's temporary directory, to see it made and removed."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def assert_replayed_and_none_lost(stats: DemoStats) -> None:
    assert stats.not_persisted > 0 and stats.queued_ends >= stats.not_persisted
    assert stats.outbox_queued > 0
    assert stats.outbox_replayed == stats.outbox_queued
    assert stats.outbox_parked == stats.outbox_dropped == stats.outbox_left == 0
    assert stats.lost == 0 and not stats.outbox_errors
    # The count check counts the replayed sessions as persisted, and still matches exactly.
    assert sum(stats.queued_sessions_by_user.values()) > 0
    assert not stats.count_mismatches, stats.count_mismatches
    assert stats.checked_users == len(stats.users_seen)


async def test_an_outage_run_queues_its_ends_replays_them_all_and_removes_the_temp_dir(
    temp_root: Path,
) -> None:
    config = DemoConfig(**SMALL)  # type: ignore[arg-type]
    stats = await run_demo(config)
    assert_replayed_and_none_lost(stats)
    assert stats.outbox_label.startswith("a temporary file")
    assert not any(temp_root.iterdir())  # noqa: ASYNC240 -- made (the ends were queued in it), then removed
    text = format_summary(config, stats)
    assert f"outbox                 {stats.outbox_queued:6d}   session ends queued" in text
    assert f"replayed {stats.outbox_replayed}," in text and "lost 0" in text
    assert "match the persisted ends (no lost updates)" in text
    assert f"{sum(stats.queued_sessions_by_user.values())} of those sessions were queued" in text


def test_the_command_line_outage_run_loses_nothing(temp_root: Path) -> None:
    out = io.StringIO()
    args = ["demo", "--primary-outage", "0.2", "--sessions", "200", "--users", "10", "--no-progress"]
    assert main(args, out=out) == 0
    text = out.getvalue()
    assert "outbox a temporary file (removed at the end)" in text
    assert "lost 0" in text and "no lost updates" in text and "DO NOT MATCH" not in text
    assert list(temp_root.iterdir()) == []


def test_without_the_outbox_the_ends_not_persisted_are_lost(temp_root: Path) -> None:
    out = io.StringIO()
    args = ["demo", "--primary-outage", "0.2", "--sessions", "200", "--users", "10", "--no-progress"]
    assert main([*args, "--no-outbox"], out=out) == 0
    text = out.getvalue()
    assert "outbox off" in text and "no outbox" in text and "no lost updates" in text
    lost = int(text.split("outbox                    off   ")[1].split()[0])
    not_persisted = int(text.split("+ not persisted ")[1].split()[0])
    assert 0 < lost <= not_persisted
    assert list(temp_root.iterdir()) == []  # nothing made


async def test_a_given_outbox_file_is_kept_and_its_counters_show_the_replays(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    config = DemoConfig(**SMALL, outbox_path=str(path))  # type: ignore[arg-type]
    first = await run_demo(config)
    assert_replayed_and_none_lost(first)
    assert first.outbox_label == str(path)
    async with Outbox(path) as outbox:
        status = await outbox.status()
    assert status.queued_total == status.replayed_total == first.outbox_queued
    assert status.pending == status.parked == 0
    second = await run_demo(config)  # the same file again: this run's own counts
    assert_replayed_and_none_lost(second)
    async with Outbox(path) as outbox:
        assert (await outbox.status()).replayed_total == first.outbox_replayed + second.outbox_replayed


async def test_entries_an_earlier_run_left_are_refused_for_the_in_memory_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "outbox.db"
    async with Outbox(path) as outbox:
        await outbox.put(OutboxItem("demo", "user_0001", "sess_000001", b"{}"))
    with pytest.raises(ConfigurationError, match="1 session ends of an earlier run"):
        await run_demo(DemoConfig(**SMALL, outbox_path=str(path)))  # type: ignore[arg-type]
    async with Outbox(path) as outbox:
        assert (await outbox.status()).pending == 1  # left as it was


def test_outbox_and_no_outbox_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--outbox", "x.db", "--no-outbox"])
    assert "not allowed with" in capsys.readouterr().err
    with pytest.raises(ValueError, match="outbox off"):
        DemoConfig(outbox=False, outbox_path="x.db")


# ------------------------------------------------------------------------------ the flush


class Switch(OutageSchedule):
    """An outage as long as ``down_for`` more checks (or for ever), whatever the run's progress."""

    def __init__(self, down_for: int | None) -> None:
        super().__init__(0.0, lambda: 0.0)
        self.down_for = down_for

    def down(self) -> bool:
        if self.down_for is None:
            return True
        self.down_for -= 1
        return self.down_for >= 0


async def queued_end(manager: StorageManager, session_id: str) -> None:
    snapshot = SessionSnapshot.from_adoption_state(
        UserAdoptionState(user_id="u1"),
        session_id=session_id,
        session_number=1,
        started_at=time.time() - 60,
        catalog_workflow_ids=[],
    )
    result = await end_session("demo", "u1", snapshot, manager)
    assert result.queued and not result.persisted


async def test_the_flush_retries_while_the_primary_is_still_down(tmp_path: Path) -> None:
    store = InMemoryStorageAdapter()
    switch = Switch(None)
    demo_outbox = await open_outbox(DemoConfig(outbox_path=str(tmp_path / "o.db")), 1, in_memory=True)
    assert demo_outbox is not None
    manager = StorageManager([FlakyPrimary(store, switch)], outbox=demo_outbox.outboxes[0])
    try:
        await queued_end(manager, "s1")
        switch.down_for = 6  # still down for the first replay attempts after the run
        stats = DemoStats()
        await demo_outbox.finish([manager], stats)
        assert switch.down_for < 0  # it tried while down, and went on until it was back
        assert stats.outbox_queued == stats.outbox_replayed == 1 and stats.lost == 0
        stored = await store.load_state("demo", "u1")
        assert stored is not None and b"s1" in stored.raw
    finally:
        await manager.aclose()


async def test_the_flush_gives_up_in_time_and_what_is_left_counts_as_lost(tmp_path: Path) -> None:
    switch = Switch(None)  # never back
    demo_outbox = await open_outbox(DemoConfig(outbox_path=str(tmp_path / "o.db")), 1, in_memory=True)
    assert demo_outbox is not None
    manager = StorageManager([FlakyPrimary(InMemoryStorageAdapter(), switch)], outbox=demo_outbox.outboxes[0])
    try:
        await queued_end(manager, "s1")
        assert not await flush_until_empty([manager], timeout=0.2)
        stats = DemoStats()
        await demo_outbox.account(stats, flushed=False)
        assert stats.outbox_queued == stats.outbox_left == stats.lost == 1
        assert stats.outbox_replayed == 0
        assert any("still held 1 session ends" in note for note in stats.notes)
    finally:
        await manager.aclose()
