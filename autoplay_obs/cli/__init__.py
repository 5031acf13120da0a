"""``autoplay-obs`` / ``python -m autoplay_obs``: the demo and the operator commands.

Decisions:
- One console script; ``demo`` keeps its own module (``autoplay_obs.demo``),
  the operator commands live here. One parser lists them all in ``--help``.
- The commands work on the Redis primary named by ``--redis-url`` (or
  ``$REDIS_URL``) through a ``StorageManager``, the same code a host runs;
  ``--outbox`` attaches the host's outbox file so ``audit`` sees, and
  ``erase`` purges, its entries for the user.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TextIO

from autoplay_obs.cli._commands import COMMANDS, Io
from autoplay_obs.cli._parser import build_parser
from autoplay_obs.errors import AutoplayError, ConfigurationError, OutboxError, StorageError

__all__ = ["main"]


async def _run(args: argparse.Namespace, io: Io) -> int:
    from autoplay_obs.storage import RedisStorageAdapter, StorageManager
    from autoplay_obs.storage._outbox import Outbox

    adapter = RedisStorageAdapter(redis_url=args.redis_url, cluster=args.cluster)
    manager = StorageManager([adapter])
    outbox = None
    if getattr(args, "outbox", None):
        outbox = Outbox(args.outbox, create=False)
        setattr(manager, "outbox", outbox)  # noqa: B010 -- the attribute the erasure and audit look for
    try:
        return await COMMANDS[args.command](manager, args, io)
    finally:
        await manager.aclose()
        if outbox is not None:
            await outbox.aclose()


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Parse the command line and run it; returns the exit status (see ``--help``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage error (2) or --help (0)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    if args.command == "demo":
        from autoplay_obs.demo import main as demo_main

        return demo_main(argv, out=out) if out is not None else demo_main(argv)
    io = Io(out or sys.stdout, err or sys.stderr, stdin or sys.stdin)
    try:
        return asyncio.run(_run(args, io))
    except (ConfigurationError, StorageError, OutboxError) as exc:
        io.err.write(f"autoplay-obs {args.command}: {exc}\n")
        return 2
    except AutoplayError as exc:  # a bad id, or a document nothing could read
        io.err.write(f"autoplay-obs {args.command}: {type(exc).__name__}: {exc}\n")
        return 2
    except KeyboardInterrupt:
        io.err.write(f"autoplay-obs {args.command}: interrupted\n")
        return 130
