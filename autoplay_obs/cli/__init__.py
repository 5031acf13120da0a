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

__all__ = ["main", "run"]


async def _run(args: argparse.Namespace, io: Io) -> int:
    from autoplay_obs.storage import RedisStorageAdapter, StorageManager
    from autoplay_obs.storage._outbox import Outbox

    adapter = RedisStorageAdapter(redis_url=args.redis_url, cluster=args.cluster)
    manager = StorageManager([adapter])
    outbox = None
    if getattr(args, "outbox", None):
        outbox = Outbox(args.outbox, create=False)
        manager.outbox = outbox  # read and purged, never replayed here: no replay loop is started
    try:
        return await COMMANDS[args.command](manager, args, io)
    finally:
        await manager.aclose()
        if outbox is not None:
            await outbox.aclose()


async def run(
    argv: Sequence[str],
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """An operator command, on the caller's event loop; returns the exit status (see ``--help``)."""
    io = Io(out or sys.stdout, err or sys.stderr, stdin or sys.stdin)
    args = _parse(argv, io)
    if isinstance(args, int):
        return args
    if args.command == "demo":
        io.err.write("autoplay-obs: run the demo through main(), not on a running event loop\n")
        return 2
    return await _command(args, io)


def _parse(argv: Sequence[str] | None, io: Io) -> argparse.Namespace | int:
    """The parsed command line, or the exit status of a usage error (2) or of ``--help`` (0)."""
    parser = build_parser()
    stderr, sys.stderr = sys.stderr, io.err  # argparse writes its usage errors to sys.stderr
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    finally:
        sys.stderr = stderr


async def _command(args: argparse.Namespace, io: Io) -> int:
    try:
        return await _run(args, io)
    except (ConfigurationError, StorageError, OutboxError) as exc:
        io.err.write(f"autoplay-obs {args.command}: {exc}\n")
        return 2
    except AutoplayError as exc:  # a bad id, or a document nothing could read
        io.err.write(f"autoplay-obs {args.command}: {type(exc).__name__}: {exc}\n")
        return 2


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Parse the command line and run it; returns the exit status (see ``--help``)."""
    io = Io(out or sys.stdout, err or sys.stderr, stdin or sys.stdin)
    args = _parse(argv, io)
    if isinstance(args, int):
        return args
    if args.command == "demo":
        from autoplay_obs.demo import main as demo_main

        return demo_main(argv, out=io.out)
    try:
        return asyncio.run(_command(args, io))
    except KeyboardInterrupt:
        io.err.write(f"autoplay-obs {args.command}: interrupted\n")
        return 130
