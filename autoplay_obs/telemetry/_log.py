"""Rate-limited warnings on the ``autoplay_obs`` logger, tied to the span they are about.

Decisions:
- At most one WARNING per kind of failure every ``LOG_INTERVAL_S`` seconds,
  with the number held back meanwhile: a dead Redis on the hot path gives one
  line per interval, not one per call.
- ``trace_id`` / ``span_id`` and the labels are record fields; the message
  holds error types only, never exception messages (they can hold keys).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Final

from opentelemetry import trace

__all__ = ["LOG_INTERVAL_S", "RateLimitedLog", "log", "logger"]

LOG_INTERVAL_S: Final = 10.0
logger = logging.getLogger("autoplay_obs")


class RateLimitedLog:
    """At most one WARNING per key per interval; the next one says how many were held back."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._last: dict[tuple[str, ...], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def warning(self, key: tuple[str, ...], message: str, span: Any = None, **fields: Any) -> None:
        if not logger.isEnabledFor(logging.WARNING):
            return
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last.get(key, (float("-inf"), 0))
            if now - last < self.interval_s:
                self._last[key] = (last, suppressed + 1)
                return
            self._last[key] = (now, 0)
        ctx = (span if span is not None else trace.get_current_span()).get_span_context()
        fields["trace_id"] = format(ctx.trace_id, "032x") if ctx.is_valid else None
        fields["span_id"] = format(ctx.span_id, "016x") if ctx.is_valid else None
        fields["suppressed"] = suppressed
        tail = f" ({suppressed} similar suppressed)" if suppressed else ""
        logger.warning("%s%s", message, tail, extra=fields)

    def reset(self) -> None:
        with self._lock:
            self._last.clear()


log = RateLimitedLog()
