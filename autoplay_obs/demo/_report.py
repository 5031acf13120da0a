"""The summary printed at the end of a run: what happened, how fast, and what was degraded."""

from __future__ import annotations

import math

from autoplay_obs.demo._cleanup import shell_command
from autoplay_obs.demo._config import DemoConfig
from autoplay_obs.demo._stats import DemoStats, LatencyStats

__all__ = ["closing_lines", "format_summary"]


def _ms(value: float) -> str:
    return "     -" if math.isnan(value) else f"{value * 1000:6.2f}"


def _latency_row(label: str, values: LatencyStats) -> str:
    cells = " ".join(_ms(values.percentile(q)) for q in (50, 95, 99))
    return f"  {label:<24}{cells} {_ms(values.percentile(100))}"


def _types(counter: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items())) or "none"


def format_summary(config: DemoConfig, stats: DemoStats) -> str:
    s = stats
    replicas = f"{config.replicas} agent replica{'s' if config.replicas != 1 else ''}"
    lines = [
        "",
        f"autoplay-obs demo: {s.ended} sessions of {len(s.users_seen)} users in {s.elapsed_s:.1f} s",
        f"  primary {s.primary_label}, product id {s.product_id!r}; sinks: {', '.join(s.sink_names)}; "
        f"{replicas}, concurrency {config.concurrency}, seed {config.seed}; outbox {s.outbox_label}",
        "",
        "Sessions",
        f"  started                {s.started:6d}   persisted {s.start_persisted}, "
        f"degraded {s.degraded_starts} ({_types(s.start_errors)})",
        f"  returning-user starts  {s.returning_starts:6d}   "
        f"{s.onboarding_context} got their onboarding session in the agent context",
        f"  ended                  {s.ended:6d}   persisted {s.persisted} + not persisted {s.not_persisted}"
        + (f" ({_types(s.end_errors)})" if s.end_errors else ""),
        _outbox_row(config, s),
        f"  retried ends           {s.retried_ends:6d}   {s.duplicates} recognised as duplicates "
        "(counted once, snapshot unchanged)",
        f"  snapshots              {s.snapshots_created:6d}   created; {s.snapshots_existing} already there, "
        f"{s.snapshots_failed} not written",
        f"  summarizer calls       {s.summarizer_calls:6d}   "
        f"{s.summarizer_failed} summaries failed ({_types(s.summarizer_failures)}), sessions saved anyway",
        f"  CAS conflicts          {s.conflicts:6d}   replicas racing on one user; each re-applied, "
        "none lost",
        f"  index trimmed          {s.trimmed:6d}   entries (a user past the 50-entry session index)",
        f"  documents              {s.repaired_documents:6d}   repaired on read; "
        f"{s.refused_documents} refused at start (left untouched)",
        "",
        "Latency (ms)                 p50    p95    p99    max",
        _latency_row("session start", s.start_latencies),
        _latency_row("session end", s.end_latencies),
    ]
    for (name, role), adapter in sorted(s.adapters.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        label = f"{name} ({role}) x{adapter.calls}"
        lines.append(_latency_row(label, adapter.durations))
    lines += ["", "Adapters"]
    for (name, role), adapter in sorted(s.adapters.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        failures = f"{adapter.failed} failed" + (
            f" ({_types(adapter.error_types)})" if adapter.failed else ""
        )
        lines.append(f"  {name:<14}{role:<8}{adapter.calls:6d} calls, {failures}")
    for sink, totals in sorted(s.sink_delivery.items()):
        lines.append(
            f"  {sink:<14}delivery: enqueued {totals['enqueued']}, delivered {totals['delivered']}, "
            f"failed {totals['failed']}, dropped {totals['dropped']}, in flight {totals['in_flight']}"
        )
    lines += ["", "What was degraded"]
    degraded = _degraded(config, s)
    lines += [f"  - {item}" for item in degraded] or ["  nothing: every call reached every adapter"]
    lines += ["", "Check"]
    if s.checked_users:
        verdict = (
            "match the persisted ends (no lost updates)"
            if not s.count_mismatches
            else f"DO NOT MATCH for {len(s.count_mismatches)}: " + "; ".join(s.count_mismatches[:5])
        )
        replayed = sum(s.queued_sessions_by_user.values())
        if replayed:
            verdict += f"; {replayed} of those sessions were queued in the outbox and replayed"
        lines.append(f"  stored session counts of {s.checked_users} users {verdict}")
    lines += [f"  {note}" for note in s.notes]
    return "\n".join(lines) + "\n"


def _outbox_row(config: DemoConfig, s: DemoStats) -> str:
    """Session ends queued, replayed, parked, dropped, left -- and the sessions lost."""
    if not config.outbox:
        return (
            f"  outbox                    off   {s.lost} sessions lost: an end the primary did not "
            "acknowledge is not retried (the demo's default outbox would queue and replay it)"
        )
    errors = f", {_types(s.outbox_errors)} not queued" if s.outbox_errors else ""
    return (
        f"  outbox                 {s.outbox_queued:6d}   session ends queued{errors}; replayed "
        f"{s.outbox_replayed}, parked {s.outbox_parked} (document refused), dropped "
        f"{s.outbox_dropped}, left {s.outbox_left}; lost {s.lost}"
        + (f" (flushed in {s.flush_s:.1f} s after the run)" if s.outbox_queued else "")
    )


def _degraded(config: DemoConfig, s: DemoStats) -> list[str]:
    items = []
    outage = s.injected.get("primary outage errors", 0)
    if outage:
        items.append(
            f"{s.outage_label}: {outage} primary calls failed; "
            f"{s.degraded_starts} starts ran on a stand-in state, {s.not_persisted} ends were not persisted"
            + (
                f": {s.outbox_queued} queued in the outbox, {s.outbox_replayed} replayed once it was back, "
                f"{s.lost} lost"
                if config.outbox
                else f" ({s.lost} sessions lost: no outbox)"
            )
        )
    elif s.not_persisted or s.degraded_starts:
        planted = " -- the planted document from a newer version" if s.refused_documents else ""
        items.append(
            f"{s.degraded_starts} starts degraded and {s.not_persisted} ends not persisted "
            f"({_types({**s.start_errors, **s.end_errors})}){planted}"
        )
    for (name, role), adapter in sorted(s.adapters.items()):
        if role == "sink" and adapter.failed:
            items.append(
                f"sink {name}: {adapter.failed} of {adapter.calls} writes failed "
                f"({_types(adapter.error_types)}) -- the sessions were saved on the primary regardless"
            )
    for sink, totals in sorted(s.sink_delivery.items()):
        lost = totals["failed"] + totals["dropped"]
        if lost:
            items.append(f"sink {sink}: {lost} events failed or dropped after the SDK took them")
    if s.summarizer_failed:
        items.append(
            f"summarizer: {s.summarizer_failed} failures ({_types(s.summarizer_failures)}); "
            "those sessions kept the previous summary"
        )
    if config.sink_latency:
        items.append(f"sinks slowed by ~{config.sink_latency * 1000:.0f} ms per write (off the session path)")
    return items


def closing_lines(config: DemoConfig, s: DemoStats) -> list[str]:
    """Where the run's data is now, and how to remove what it left in a user's Redis."""
    if config.redis_url is None:
        if config.cleanup:
            return ["--cleanup: nothing to remove, the in-memory store ended with the run"]
        return []
    if s.keys_removed is not None:
        return [f"removed the {s.keys_removed} keys this run wrote under product id {s.product_id!r}"]
    if s.keys_left is None:
        return []
    return [
        f"this run left {s.keys_left} keys under product id {s.product_id!r} in {config.redis_url}; "
        "remove them with --cleanup next time, or now with:",
        f"  {shell_command(config.redis_url, s.product_id)}",
    ]
