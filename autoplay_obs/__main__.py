"""``python -m autoplay_obs`` / ``autoplay-obs``: the command line (today: ``demo``, and ``--version``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run it; returns the process exit code."""
    from autoplay_obs.demo import main as demo_main

    return demo_main(argv)


if __name__ == "__main__":
    sys.exit(main())
