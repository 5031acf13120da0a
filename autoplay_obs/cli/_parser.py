"""The ``autoplay-obs`` command line: the demo and the operator commands, one parser.

Decisions:
- Every operator command takes ``--redis-url`` (default ``$REDIS_URL``),
  ``--product``, ``--user`` and ``--json``; ``--json`` output is a contract
  for scripts (README, "Operator tools").
- Exit status: 0 clean, 1 findings (or nothing to show), 2 usage or
  connection error -- argparse's own usage errors are 2 already.
"""

from __future__ import annotations

import argparse
import os

from autoplay_obs import __version__
from autoplay_obs.demo._cli import DESCRIPTION as DEMO_DESCRIPTION
from autoplay_obs.demo._cli import EPILOG as DEMO_EPILOG
from autoplay_obs.demo._cli import _HelpFormatter, add_demo_arguments

__all__ = ["OPERATOR_COMMANDS", "build_parser"]

EXIT_STATUS = """\
exit status:
  0  clean: done, nothing found
  1  findings: audit found lost or broken writes (after --repair: some are left),
     history met an unreadable snapshot, inspect found no readable state,
     erase was declined at the prompt
  2  usage error, or the store could not be reached
"""

HELP = {
    "inspect": "the user's state summarised (journey, mastery, counts, onboarding, index)",
    "history": "every stored session of the user, oldest first, and whether the index holds it",
    "audit": "find lost merges, lost freezes, broken documents and pending outbox entries",
    "erase": "delete the user's state and every snapshot for good, leaving a tombstone",
}
DESCRIPTIONS = {
    "inspect": HELP["inspect"] + ". --raw prints the stored document; --json prints it without _rev.",
    "history": HELP["history"] + ", beyond the 50 entries the index keeps.",
    "audit": HELP["audit"]
    + ", for one user (--user) or every user of the product. --repair merges lost merges again "
    "through the normal idempotent merge.",
    "erase": HELP["erase"]
    + " (see README: erasure). Asks for confirmation on a terminal unless --yes; --dry-run only "
    "reports. The analytics vendors' copies are not erased: the receipt says how to ask them.",
}
OPERATOR_COMMANDS = tuple(HELP)


def _common(parser: argparse.ArgumentParser, *, user_required: bool) -> None:
    env = os.environ.get("REDIS_URL")
    parser.add_argument(
        "--redis-url",
        default=env,
        required=env is None,
        help="the Redis primary (default: $REDIS_URL)",
    )
    parser.add_argument("--cluster", action="store_true", help="the URL names a Redis Cluster node")
    parser.add_argument("--product", required=True, help="product id")
    parser.add_argument("--user", required=user_required, help="user id")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts (a stable contract)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoplay-obs",
        description="Cross-session memory for in-product AI agents, observable to the last write.",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"autoplay-obs {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="simulate users and sessions through the real lifecycle and print what happened",
        description=DEMO_DESCRIPTION,
        epilog=DEMO_EPILOG,
        formatter_class=_HelpFormatter,
    )
    add_demo_arguments(demo)
    for name in OPERATOR_COMMANDS:
        sub = commands.add_parser(
            name,
            help=HELP[name],
            description=DESCRIPTIONS[name],
            epilog=EXIT_STATUS,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _common(sub, user_required=name != "audit")
        if name == "inspect":
            sub.add_argument("--raw", action="store_true", help="print the stored document as it is")
        if name == "audit":
            sub.add_argument("--repair", action="store_true", help="merge lost merges again")
        if name in ("audit", "erase"):
            sub.add_argument(
                "--outbox", metavar="PATH", help="the host's outbox file, to see (purge) its entries"
            )
        if name == "erase":
            sub.add_argument(
                "--dry-run", action="store_true", help="report what would be deleted, delete nothing"
            )
            sub.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return parser
