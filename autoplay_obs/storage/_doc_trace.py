"""The writer's trace id inside a stored document (``_trace_id``), so a document leads to its trace.

Decisions:
- Only when a span is recording: with no OpenTelemetry SDK configured this
  is one call returning a non-recording span, and documents stay as they were.
- The id goes right after the head revision, where it is found without a
  decode (``trace_id_of``) and where it cannot disturb the revision a
  compare-and-set reads (the first 42 bytes).
- The id of a trace, never of a user. Readers of the documents, the
  reference package included, ignore the extra field; a state decoded and
  written again carries its new writer's id, or none.
"""

from __future__ import annotations

from typing import Final

from opentelemetry import trace

from autoplay_obs.storage._protocol import REVISION_END, REVISION_PREFIX

__all__ = ["current_trace_id", "stamped", "trace_id_of"]

_FIELD: Final = b',"_trace_id":"'
_HEAD: Final = REVISION_END + 1


def current_trace_id() -> str | None:
    """The recording span's trace id as 32 hex digits, or None."""
    span = trace.get_current_span()
    if not span.is_recording():
        return None
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def _headed(raw: bytes) -> bool:
    return raw.startswith(REVISION_PREFIX) and raw[REVISION_END:_HEAD] == b'"'


def stamped(raw: bytes) -> bytes:
    """``raw`` with the current trace id after its revision (unchanged when there is none)."""
    trace_id = current_trace_id()
    if trace_id is None or not _headed(raw):
        return raw
    return b"".join((raw[:_HEAD], _FIELD, trace_id.encode("ascii"), b'"', raw[_HEAD:]))


def trace_id_of(raw: bytes) -> str | None:
    """The trace id a document carries at its head, or None."""
    if not _headed(raw) or raw[_HEAD : _HEAD + len(_FIELD)] != _FIELD:
        return None
    start = _HEAD + len(_FIELD)
    found = raw[start : start + 32]
    return found.decode("ascii") if len(found) == 32 and raw[start + 32 : start + 33] == b'"' else None
