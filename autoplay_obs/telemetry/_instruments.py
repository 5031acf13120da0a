"""The one instrument table: every metric this library records, defined once.

Both the OpenTelemetry meter instruments and the Prometheus exposition are
built from ``INSTRUMENTS``; nothing else names a metric. OpenTelemetry names
are dotted with UCUM units; the Prometheus name is the same with underscores,
``_seconds`` for durations and ``_total`` for counters (added by the client).
Labels are bounded sets (adapter, role, operation, outcome, error type, ...),
never a user or session id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "ADAPTER_BUCKETS",
    "DB_CLIENT_BUCKETS",
    "DB_LABELS",
    "INSTRUMENTS",
    "SUMMARIZER_BUCKETS",
    "Instrument",
]

ADAPTER_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""A Redis round trip (sub-millisecond) through to a slow HTTP sink (seconds)."""
SUMMARIZER_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
"""An LLM call: tenths of a second to the default 30 s timeout."""
DB_CLIENT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
"""The database conventions' advisory buckets for ``db.client.operation.duration``."""
DB_LABELS: Final = (
    "db.system.name",
    "db.operation.name",
    "db.namespace",
    "server.address",
    "server.port",
    "error.type",
)
"""The conventions' attributes of ``db.client.operation.duration`` (each optional in OpenTelemetry)."""


@dataclass(frozen=True, slots=True)
class Instrument:
    """One metric: its OpenTelemetry name, kind, unit, help text and label names."""

    key: str
    name: str
    kind: Literal["counter", "histogram", "observed_counter"]
    """``observed_counter``: a running total read at collection time, never recorded."""
    unit: str
    description: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None

    @property
    def prometheus_name(self) -> str:
        """The exposed family name (counters' samples add ``_total``)."""
        base = self.name.replace(".", "_")
        return f"{base}_seconds" if self.unit == "s" else base

    @property
    def prometheus_labels(self) -> tuple[str, ...]:
        """Label names as Prometheus allows them (``db.namespace`` -> ``db_namespace``)."""
        return tuple(label.replace(".", "_") for label in self.labels)

    @property
    def prometheus_type(self) -> str:
        """The exposed family type (an observed counter is a counter to Prometheus)."""
        return "histogram" if self.kind == "histogram" else "counter"

    @property
    def prometheus_unit(self) -> str:
        return "seconds" if self.unit == "s" else ""


_ADAPTER = ("adapter", "role", "operation")

INSTRUMENTS: Final[dict[str, Instrument]] = {
    i.key: i
    for i in (
        Instrument(
            "adapter_duration",
            "autoplay.adapter.operation.duration",
            "histogram",
            "s",
            "Duration of one adapter call made through the storage manager.",
            (*_ADAPTER, "outcome"),
            ADAPTER_BUCKETS,
        ),
        Instrument(
            "db_operation_duration",
            "db.client.operation.duration",
            "histogram",
            "s",
            "Duration of database client operations on the primary (OpenTelemetry database conventions).",
            DB_LABELS,
            DB_CLIENT_BUCKETS,
        ),
        Instrument(
            "adapter_failures",
            "autoplay.adapter.operation.failures",
            "counter",
            "{failure}",
            "Adapter calls that raised or timed out.",
            (*_ADAPTER, "error_type"),
        ),
        Instrument(
            "snapshot_writes",
            "autoplay.snapshot.writes",
            "counter",
            "{write}",
            "Write-once session snapshot writes on the primary: created, or found already there.",
            ("result",),
        ),
        Instrument(
            "cas_conflicts",
            "autoplay.state.cas.conflicts",
            "counter",
            "{conflict}",
            "User-state compare-and-set attempts lost to a concurrent writer (each one retried).",
        ),
        Instrument(
            "summarizer_duration",
            "autoplay.summarizer.duration",
            "histogram",
            "s",
            "Duration of the host's summarizer call at session end.",
            (),
            SUMMARIZER_BUCKETS,
        ),
        Instrument(
            "summarizer_failures",
            "autoplay.summarizer.failures",
            "counter",
            "{failure}",
            "Summarizer calls that raised, timed out or returned a non-string.",
            ("error_type",),
        ),
        Instrument(
            "index_truncations",
            "autoplay.session_index.truncations",
            "counter",
            "{entry}",
            "Session index entries trimmed to keep the newest 50.",
        ),
        Instrument(
            "summaries_truncated",
            "autoplay.summaries.truncated",
            "counter",
            "{summary}",
            "Onboarding summaries cut to the manager's max_summary_chars before they were stored.",
        ),
        Instrument(
            "documents_repaired",
            "autoplay.documents.repaired",
            "counter",
            "{document}",
            "Stored documents read with repairs (each repaired document counts once).",
            ("document",),
        ),
        Instrument(
            "documents_refused",
            "autoplay.documents.refused",
            "counter",
            "{document}",
            "Stored documents that could not be used and were left untouched.",
            ("document",),
        ),
        Instrument(
            "not_persisted",
            "autoplay.sessions.not_persisted",
            "counter",
            "{session}",
            "Session starts/ends whose state change did not reach the primary.",
            ("phase",),
        ),
        Instrument(
            "fanout_results",
            "autoplay.fanout.results",
            "counter",
            "{call}",
            "Lifecycle calls by how their writes went: all_ok, degraded (a sink or a secondary "
            "primary call failed), primary_failed (the state change was not persisted).",
            ("result",),
        ),
        Instrument(
            "sink_deliveries",
            "autoplay.sink.deliveries",
            "observed_counter",
            "{event}",
            "Analytics sink events by outcome (enqueued, delivered, failed, dropped, late) and "
            "reason, from each SDK's own callbacks; enqueued minus the settled outcomes is in flight.",
            ("sink", "outcome", "reason"),
        ),
    )
}
