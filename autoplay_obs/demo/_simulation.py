"""Simulated users and sessions through the real lifecycle.

Each session is what an agent does: ``start_session`` (a returning user's
agent gets ``build_agent_context`` with the onboarding session), in-session
progress on the product's workflows and steps, discovered features and
mastery changes on the state it was given, ``SessionSnapshot.from_adoption_state``
and ``end_session`` with the stand-in summarizer. Sessions are spread over
``replicas`` agent processes (one ``StorageManager`` each, one shared
store), so a user whose sessions land on different replicas produces real
compare-and-set conflicts, each retried by the library.

A user has one session at a time (a worker skips to another user while one
is busy). Every per-session choice (replica, activity, retried end, summarizer
failure) comes from a generator seeded by (seed, session id), and the users
are drawn from a seeded sequence, so a seed gives the same mix of users,
activity and faults; which session lands on which user can vary with timing,
and the primary-outage windows follow the run's progress.

A ``--duration`` run keeps a pace (``DemoConfig.session_rate``): session n
starts no earlier than (n - 1) / rate seconds into the run, so a long run
costs a steady share of a core and the embedded store grows by a known
amount a second.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Final

from autoplay_obs.demo._activity import CATALOG, act
from autoplay_obs.demo._cleanup import count_keys, remove_keys
from autoplay_obs.demo._config import DemoConfig
from autoplay_obs.demo._edge_cases import check_counts, plant_documents
from autoplay_obs.demo._progress import ProgressBar
from autoplay_obs.demo._scenario import FlappingOutage, uses_flapping_outage
from autoplay_obs.demo._stats import CallTally, DemoStats
from autoplay_obs.demo._storage import DemoStorage, build_storage
from autoplay_obs.demo._summarizer import StandInSummarizer
from autoplay_obs.errors import AutoplayError
from autoplay_obs.storage import build_agent_context, end_session, start_session
from autoplay_obs.user_adoption_state import SessionSnapshot

__all__ = ["run_demo"]

_WAIT: Final = (0, "")


def _plan(config: DemoConfig, users: list[str], edge: dict[str, str]) -> Iterator[str]:
    """The user of each successive session (endless; the caller stops it).

    The planted users come first, so a short run still meets them. The
    newer-version user (planted only in the incident) keeps coming back like
    any user, as such a user would: each of its sessions is refused again, so
    the refusals go on while Prometheus watches.
    """
    rng = random.Random(f"plan:{config.seed}")
    regular = list(users)
    weights = [1 / (rank + 1) ** 0.8 for rank in range(len(regular))]  # a few heavy users, a long tail
    yield from (edge[k] for k in ("newer", "repaired", "power") if k in edge)
    while True:
        yield rng.choices(regular, weights)[0]


class _Run:
    def __init__(self, config: DemoConfig, bar: ProgressBar) -> None:
        self.config = config
        self.bar = bar
        self.stats = DemoStats()
        self.started = 0
        self.finished = 0
        self.t0 = time.monotonic()
        self.deadline = None if config.duration is None else self.t0 + config.duration
        self.summarizer = StandInSummarizer(
            failure_rate=config.summarizer_failure_rate, timeout=config.summarizer_timeout, seed=config.seed
        )
        self.users = [f"user_{i:04d}" for i in range(config.users)]
        self.edge: dict[str, str] = {}
        if config.edge_cases and config.users >= 4:
            self.edge = {"power": self.users[0], "repaired": self.users[1]}
            if config.scenario == "incident":  # a real fault: see _scenario
                self.edge["newer"] = self.users[-1]
        elif config.edge_cases:
            self.stats.notes.append("edge cases skipped: they need --users >= 4")
        self.plan = _plan(config, self.users, self.edge)
        self.busy: set[str] = set()
        self.deferred: list[str] = []
        self.storage: DemoStorage
        self.tally: CallTally
        self.flapping: FlappingOutage | None = None

    def attach(self, storage: DemoStorage) -> None:
        """Adopt the built storage: the incident's flapping primary, the call tally's window."""
        self.storage = storage
        if storage.outbox is not None:
            self.stats.outbox_label = storage.outbox.label
        if uses_flapping_outage(self.config):
            self.flapping = FlappingOutage()
            storage.schedule = self.flapping
            for primary in storage.primaries:
                primary.schedule = self.flapping
        # The demo's sink writes take at most 1.5x the injected latency (the SDK sinks only
        # enqueue), so they are over by then; the manager's sink timeout bounds it anyway.
        timeout = max(manager.sink_timeout for manager in storage.managers)
        self.tally = CallTally(self.stats, min(timeout, 2 * self.config.sink_latency) + 1.0)

    def begin(self) -> None:
        """The clock of the run starts (after the planted documents)."""
        self.t0 = time.monotonic()
        if self.config.duration is not None:
            self.deadline = self.t0 + self.config.duration
        if self.flapping is not None:
            self.flapping.start()

    def progress(self) -> float:
        if self.deadline is not None:
            return min(1.0, (time.monotonic() - self.t0) / (self.deadline - self.t0))
        return self.started / self.config.sessions

    def done(self) -> float:
        """Share of the run finished, for the progress bar."""
        if self.deadline is not None:
            return self.progress()
        return self.finished / self.config.sessions

    def _next(self) -> tuple[int, str] | None:
        """The next session, for a user not already in one (a user has one session at a time).

        ``_WAIT`` when every user drawn is busy (more workers than free users).
        """
        if self.deadline is not None:
            if max(time.monotonic(), self._slot(self.started + 1)) >= self.deadline:
                return None
        elif self.started >= self.config.sessions:
            return None
        user = next((u for u in self.deferred if u not in self.busy), None)
        if user is not None:
            self.deferred.remove(user)
        else:
            for _ in range(20):
                if len(self.deferred) > 4 * len(self.users):
                    return _WAIT
                drawn = next(self.plan)
                if drawn not in self.busy:
                    user = drawn
                    break
                self.deferred.append(drawn)
            else:
                return _WAIT
        self.busy.add(user)
        self.started += 1
        return self.started, user

    def _slot(self, number: int) -> float:
        """When session ``number`` may start at the configured pace (the run's start if unpaced)."""
        rate = self.config.session_rate
        return self.t0 + (number - 1) / rate if rate else self.t0

    async def plant_documents(self) -> None:
        await plant_documents(self.storage.raw_primary, self.storage.product_id, self.edge)

    async def worker(self) -> None:
        while (item := self._next()) is not None:
            if item is _WAIT:
                await asyncio.sleep(0.001)
                continue
            delay = self._slot(item[0]) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self.session(*item)
            finally:
                self.busy.discard(item[1])
            self.finished += 1
            self.bar.update(self.done(), self._status())

    def _status(self) -> str:
        s = self.stats
        text = f"{self.finished} sessions, {len(s.users_seen)} users"
        if s.not_persisted:
            text += f", {s.not_persisted} not persisted"
        if s.queued_ends:
            text += f" ({s.queued_ends} queued)"
        if s.summarizer_failed:
            text += f", {s.summarizer_failed} summarizer failures"
        if self.storage.schedule.down():
            text += "  [primary DOWN]"
        return text

    async def session(self, number: int, user_id: str) -> None:
        config, storage, stats = self.config, self.storage, self.stats
        session_id = f"sess_{number:06d}"
        rng = random.Random(f"session:{config.seed}:{session_id}")
        managers = storage.managers
        replica = rng.randrange(len(managers))
        clock = time.perf_counter()
        start = await start_session(storage.product_id, user_id, session_id, managers[replica])
        stats.record_start(user_id, start, time.perf_counter() - clock)
        self.tally.add(start, time.monotonic())
        if start.state.sessions_count > 0:  # what the agent's prompt gets for a returning user
            build_agent_context(start.state, start.onboarding_session)
        state = start.state
        act(state, rng)
        snapshot = SessionSnapshot.from_adoption_state(
            state,
            session_id=session_id,
            session_number=state.sessions_count + 1,
            started_at=time.time() - rng.uniform(120, 1800),
            catalog_workflow_ids=list(CATALOG),
        )
        await asyncio.sleep(0)  # let other sessions interleave, as real users do
        clock = time.perf_counter()
        end = await end_session(
            storage.product_id,
            user_id,
            snapshot,
            managers[replica],
            summarizer=self.summarizer,
            summarizer_timeout=config.summarizer_timeout,
        )
        stats.record_end(user_id, end, time.perf_counter() - clock, retry=False)
        self.tally.add(end, time.monotonic())
        ends = [end]
        if rng.random() < config.retry_rate:  # the reply was lost: the host ends it again elsewhere
            other = managers[(replica + 1) % len(managers)]
            clock = time.perf_counter()
            again = await end_session(
                storage.product_id,
                user_id,
                snapshot,
                other,
                summarizer=self.summarizer,
                summarizer_timeout=config.summarizer_timeout,
            )
            stats.record_end(user_id, again, time.perf_counter() - clock, retry=True)
            self.tally.add(again, time.monotonic())
            ends.append(again)
        stats.record_session(user_id, ends)

    async def flush_outbox(self) -> None:
        """After the run: replay what the outbox holds until it is empty (see ``_outbox``)."""
        if self.storage.outbox is not None:
            self.bar.update(1.0, self._status() + "; replaying the outbox")
            await self.storage.outbox.finish(self.storage.managers, self.stats)

    async def check_counts(self) -> None:
        await check_counts(self.storage.raw_primary, self.storage.product_id, self.edge, self.stats)

    async def account_keys(self) -> None:
        """On Redis: delete the run's keys (``--cleanup``) or count them for the closing line."""
        url, product = self.config.redis_url, self.storage.product_id
        if url is None:
            return
        try:
            if self.config.cleanup:
                self.stats.keys_removed = await remove_keys(url, product)
            else:
                self.stats.keys_left = await count_keys(url, product)
        except Exception as exc:  # the run's results stand; say what could not be done
            self.stats.notes.append(
                f"keys not {'removed' if self.config.cleanup else 'counted'}: {type(exc).__name__}"
            )


async def run_demo(config: DemoConfig, *, bar: ProgressBar | None = None) -> DemoStats:
    """Run the simulation and return what happened (telemetry is the caller's: see ``_cli``)."""
    bar = bar or ProgressBar(enabled=config.progress)
    run = _Run(config, bar)
    run.attach(await build_storage(config, run.progress))
    stats = run.stats
    try:
        await run.plant_documents()
        run.begin()
        await asyncio.gather(*(run.worker() for _ in range(config.concurrency)))
        await run.storage.drain()
        run.tally.settle_all()
        stats.elapsed_s = time.monotonic() - run.t0
        await run.flush_outbox()
        await run.storage.drain()  # the replayed sessions' sink writes
        bar.update(1.0, run._status())
        bar.close()
        try:
            await run.check_counts()
        except AutoplayError as exc:
            stats.notes.append(f"stored counts not checked: {type(exc).__name__}: {exc}")
        await run.account_keys()
    finally:
        bar.close()
        await run.storage.aclose()  # flushes the analytics sinks
    stats.injected = {
        "primary outage errors": sum(p.injected_errors for p in run.storage.primaries),
        "sink errors": sum(s.injected_errors for s in run.storage.sinks),
    }
    stats.summarizer_calls = run.summarizer.calls
    for sink in run.storage.sinks:
        delivery = getattr(sink.inner, "delivery", None)
        if delivery is not None:
            stats.sink_delivery[sink.name] = delivery.totals()
    if run.flapping is not None:
        stats.outage_label = run.flapping.describe()
    elif config.primary_outage:
        stats.outage_label = f"primary outage ({config.primary_outage:.0%} of the run, in three windows)"
    stats.primary_label = run.storage.primary_label
    stats.product_id = run.storage.product_id
    stats.sink_names = run.storage.sink_names
    return stats
