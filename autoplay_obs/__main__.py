"""``python -m autoplay_obs`` / ``autoplay-obs``: the command line (demo, operator commands, --version)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run it; returns the process exit code."""
    from autoplay_obs.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
