"""The demo's outbox: one SQLite file its replicas share, flushed until empty at the end of the run.

Decisions:

- On by default, as a host that cares about its sessions would run: the file
  is in a temporary directory removed at the end, unless ``--outbox PATH``
  names one (then it is kept); ``--no-outbox`` turns it off, to see what an
  outage costs without it.
- One file, one ``Outbox`` per replica: the replicas stand for processes of
  one host, each with its own connection and claimer id, sharing the file as
  such processes would.
- An in-memory store ends with its run, so entries an earlier run left in
  ``--outbox PATH`` would be replayed into a store that never had their
  users: refused at start-up. On Redis they are replayed where they belong.
- The replay goes through the managers, so through the demo's flaky primary:
  after the run the outbox is flushed until empty, retrying (with a growing
  pause) while the primary is still down -- the incident's flapping primary
  is down up to ``FLAP_DOWN`` seconds at a time -- and giving up after
  ``FLUSH_TIMEOUT`` seconds; what is left then is reported as lost.
- Counted from the file's own lifetime counters, as the difference from their
  values at the start: what the background replay did during the run is in
  them too, and nothing is kept per session end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from autoplay_obs.demo._config import DemoConfig
from autoplay_obs.demo._stats import DemoStats
from autoplay_obs.errors import ConfigurationError, OutboxError
from autoplay_obs.storage import Outbox, OutboxStatus, StorageManager

__all__ = ["FLUSH_TIMEOUT", "DemoOutbox", "flush_until_empty", "open_outbox"]

FLUSH_TIMEOUT: Final = 30.0
"""Seconds the end-of-run flush keeps retrying a primary that is still down."""
_FIRST_PAUSE: Final = 0.05
_MAX_PAUSE: Final = 1.0


@dataclass
class DemoOutbox:
    """The file the replicas share, one ``Outbox`` object per replica, and the counters at the start."""

    path: str
    temp_dir: str | None
    """The temporary directory holding the file (removed at the end); None for ``--outbox PATH``."""
    outboxes: list[Outbox]
    baseline: OutboxStatus

    @property
    def label(self) -> str:
        """Where the outbox is, for the summary."""
        return self.path if self.temp_dir is None else "a temporary file (removed at the end)"

    async def finish(self, managers: Sequence[StorageManager], stats: DemoStats) -> None:
        """After the run: flush until empty (bounded), then count what the outbox did."""
        clock = time.monotonic()
        flushed = await flush_until_empty(managers)
        stats.flush_s = time.monotonic() - clock
        await self.account(stats, flushed=flushed)

    async def account(self, stats: DemoStats, *, flushed: bool) -> None:
        """This run's queued, replayed, parked, dropped and left entries, from the file's counters."""
        status = await self.outboxes[0].status()
        before = self.baseline
        stats.outbox_queued = status.queued_total - before.queued_total
        stats.outbox_replayed = status.replayed_total - before.replayed_total
        stats.outbox_parked = status.parked_total - before.parked_total
        stats.outbox_dropped = sum(status.dropped_total.values()) - sum(before.dropped_total.values())
        stats.outbox_left = status.pending
        if before.pending:
            stats.notes.append(
                f"the outbox held {before.pending} session ends of an earlier run: replayed too "
                "(counted in replayed)"
            )
        if not flushed and status.pending:
            stats.notes.append(
                f"the outbox still held {status.pending} session ends after {FLUSH_TIMEOUT:g} s of "
                "retrying: the primary did not come back in time"
                + ("" if self.temp_dir is None else " (counted lost: the temporary file is removed)")
            )

    def remove(self) -> None:
        """Remove the temporary directory (after every outbox is closed); a given path is kept."""
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


async def open_outbox(config: DemoConfig, replicas: int, *, in_memory: bool) -> DemoOutbox | None:
    """The run's outbox file, opened (a bad path shows here, as ``ConfigurationError``); None if off."""
    if not config.outbox:
        return None
    path, temp_dir = _location(config.outbox_path)
    outboxes = [Outbox(path) for _ in range(replicas)]
    try:
        await outboxes[0].open()
        baseline = await outboxes[0].status()
    except OutboxError as exc:
        await _close(outboxes, temp_dir)
        raise ConfigurationError(f"--outbox {path}: {exc}") from exc
    if in_memory and baseline.pending:
        await _close(outboxes, temp_dir)
        raise ConfigurationError(
            f"--outbox {path} holds {baseline.pending} session ends of an earlier run; the in-memory "
            "store they were meant for ended with it: move the file aside or give another path"
        )
    return DemoOutbox(path, temp_dir, outboxes, baseline)


def _location(given: str | None) -> tuple[str, str | None]:
    """The file's path, and the temporary directory made for it when none was given."""
    if given is not None:
        return os.path.abspath(given), None
    temp_dir = tempfile.mkdtemp(prefix="autoplay-obs-demo-")
    return os.path.join(temp_dir, "outbox.db"), temp_dir


async def _close(outboxes: Sequence[Outbox], temp_dir: str | None) -> None:
    for outbox in outboxes:
        await outbox.aclose()
    if temp_dir is not None:
        shutil.rmtree(temp_dir, ignore_errors=True)


async def flush_until_empty(managers: Sequence[StorageManager], timeout: float = FLUSH_TIMEOUT) -> bool:
    """Replay the shared outbox through every replica until it is empty; False if still not after ``timeout``.

    A flush stops at the first failure of the primary (still down) and counts
    as left what another replica holds leased at that moment, so the loop
    pauses and tries again, every replica in turn.
    """
    deadline = time.monotonic() + timeout
    pause = _FIRST_PAUSE
    while True:
        for manager in managers:
            try:
                left = (await manager.flush_outbox()).remaining
            except OutboxError:  # the file busy past its timeout: the next turn retries
                continue
            if not left:
                return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(pause, remaining))
        pause = min(2 * pause, _MAX_PAUSE)
