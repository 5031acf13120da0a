"""Plain aligned text for people: tables, times, a few words per value."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

__all__ = ["table", "when"]


def when(timestamp: float | None) -> str:
    """Unix seconds as a UTC time a person reads at a glance ("-" for none)."""
    if timestamp is None:
        return "-"
    try:
        moment = dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return repr(timestamp)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell, the last one left ragged."""
    cells = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths[:-1], strict=True)] + [row[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines) + "\n"
