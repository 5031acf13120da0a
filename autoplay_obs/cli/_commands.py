"""The operator commands: ``inspect``, ``history``, ``audit``, ``erase``, each on a manager.

Each returns its exit status (see ``_parser``) and writes its answer to
``io.out`` -- JSON with ``--json``, aligned text otherwise -- and whatever is
for a person only (prompts, the progress bar, errors) to ``io.err``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO

from autoplay_obs import _json
from autoplay_obs.cli._tables import table, when
from autoplay_obs.demo._progress import ProgressBar
from autoplay_obs.errors import DocumentError, UserErasedError
from autoplay_obs.storage._audit import AuditReport
from autoplay_obs.storage._erasure import ErasureReceipt
from autoplay_obs.storage._history import SessionRecord
from autoplay_obs.storage._manager import StorageManager
from autoplay_obs.storage._operator_protocol import operator_store
from autoplay_obs.storage._protocol import without_revision
from autoplay_obs.user_adoption_state import UserAdoptionState, decode_user_state

__all__ = ["COMMANDS", "Io"]


@dataclass(frozen=True)
class Io:
    out: TextIO
    err: TextIO
    stdin: TextIO


def _dump(io: Io, value: Any) -> None:
    io.out.write(json.dumps(value, indent=2) + "\n")


def _summary(state: UserAdoptionState) -> str:
    onboarding, sessions = state.onboarding, state.sessions
    completed = len(onboarding.completed_workflow_ids)
    done_at = when(onboarding.onboarding_completed_at)
    rows = [
        ("user", state.user_id),
        ("journey", state.journey_state.value),
        ("mastery", f"{state.mastery.rating}/10 {state.mastery.level.value} {state.mastery.description}"),
        ("sessions", f"{sessions.count} counted, {len(sessions.index)} in the index"),
        ("current session", sessions.current_session_id),
        (
            "onboarding",
            f"{completed}/{len(onboarding.workflow_progress)} workflows completed, "
            f"completion rate {onboarding.completion_rate:.0%}, completed at {done_at}",
        ),
        ("features", len(state.discovered_features)),
        ("first seen", when(state.first_seen_at)),
        ("last updated", when(state.last_updated_at)),
        ("summary", onboarding.summary),
    ]
    index = [
        (e.session_number, e.session_id, when(e.started_at), when(e.captured_at)) for e in sessions.index
    ]
    return (
        table(("field", "value"), rows)
        + "\nindex (oldest first):\n"
        + table(("#", "session", "started", "captured"), index)
    )


async def inspect(manager: StorageManager, args: argparse.Namespace, io: Io) -> int:
    try:
        stored = await operator_store(manager.primary).load_state(args.product, args.user)
    except UserErasedError as exc:
        if args.json:
            _dump(io, {"_tombstone": True, "erased_at": exc.erased_at})
        else:
            io.out.write(f"erased at {when(exc.erased_at)}: the state is a tombstone\n")
        return 0
    if stored is None:
        if args.json:
            _dump(io, None)
        io.err.write(f"no state stored for user {args.user!r} of product {args.product!r}\n")
        return 1
    try:
        if args.raw and not args.json:
            io.out.write(stored.raw.decode("utf-8", "replace") + "\n")
        elif args.json:
            document = _json.loads_object(stored.raw)
            _dump(io, without_revision(document or {}))
        else:
            io.out.write(_summary(decode_user_state(stored.raw, user_id=args.user).value))
    except DocumentError as exc:
        if args.json:
            _dump(io, None)
        io.err.write(f"the stored state cannot be read: {exc}\n")
        return 1
    return 0


async def _indexed(manager: StorageManager, product_id: str, user_id: str) -> set[str]:
    try:
        stored = await operator_store(manager.primary).load_state(product_id, user_id)
        if stored is None:
            return set()
        state = decode_user_state(stored.raw, user_id=user_id).value
    except (DocumentError, UserErasedError):
        return set()
    return {entry.session_id for entry in state.sessions.index}


def _session_json(record: SessionRecord, in_index: bool) -> dict[str, Any]:
    snapshot = record.snapshot
    return {
        "session_id": record.session_id,
        "session_number": None if snapshot is None else snapshot.session_number,
        "started_at": None if snapshot is None else snapshot.started_at,
        "captured_at": None if snapshot is None else snapshot.captured_at,
        "in_index": in_index,
        "trace_id": record.trace_id,
        "error": None if record.error is None else str(record.error),
    }


async def history(manager: StorageManager, args: argparse.Namespace, io: Io) -> int:
    records = await manager.list_sessions(args.product, args.user)
    indexed = await _indexed(manager, args.product, args.user)
    sessions = [_session_json(record, record.session_id in indexed) for record in records]
    if args.json:
        _dump(io, {"sessions": sessions})
    else:
        rows = [
            (
                s["session_number"],
                s["session_id"],
                when(s["started_at"]),
                when(s["captured_at"]),
                "yes" if s["in_index"] else "no",
                s["error"] or s["trace_id"],
            )
            for s in sessions
        ]
        io.out.write(table(("#", "session", "started", "captured", "in index", "trace / error"), rows))
        io.out.write(f"{len(sessions)} sessions, {sum(bool(s['in_index']) for s in sessions)} in the index\n")
    return 1 if any(record.error is not None for record in records) else 0


def _audit_text(report: AuditReport) -> str:
    repaired = set(report.repaired)
    rows = [
        (f.user_id, f.kind, f.session_id, f.trace_id, "repaired" if f in repaired else "")
        for f in report.findings
    ]
    text = table(("user", "kind", "session", "trace", ""), rows) if rows else ""
    return text + (
        f"{len(report.findings)} findings ({len(report.repaired)} repaired) in {report.users_checked} users"
        + (f"; {report.erased_users} erased users skipped" if report.erased_users else "")
        + "\n"
    )


async def audit(manager: StorageManager, args: argparse.Namespace, io: Io) -> int:
    tty = bool(getattr(io.err, "isatty", lambda: False)())
    bar = ProgressBar(io.err, enabled=tty and args.user is None)

    def progress(done: int, total: int) -> None:
        bar.update(done / total, f"{done}/{total} users")

    try:
        report = await manager.audit(args.product, args.user, repair=args.repair, progress=progress)
    finally:
        bar.close()
    if args.json:
        _dump(io, report.to_json())
    else:
        io.out.write(_audit_text(report))
    return 1 if report.unrepaired else 0


def _receipt_text(receipt: ErasureReceipt) -> str:
    done = f"would delete {receipt.keys_found}" if receipt.dry_run else f"deleted {receipt.keys_deleted}"
    lines = [
        f"keys found: {receipt.keys_found}, {done}",
        f"outbox entries {'pending' if receipt.dry_run else 'purged'}: {receipt.outbox_purged}",
        "not erased here (ask each of them):",
    ]
    lines += [f"  {place.where}: {place.how}" for place in receipt.not_erased]
    return "\n".join(lines) + "\n"


async def erase(manager: StorageManager, args: argparse.Namespace, io: Io) -> int:
    if not args.dry_run and not args.yes:
        if not bool(getattr(io.stdin, "isatty", lambda: False)()):
            io.err.write("erase: not a terminal, so nobody can confirm: pass --yes (or --dry-run)\n")
            return 2
        preview = await manager.delete_user(args.product, args.user, dry_run=True)
        io.err.write(
            f"erase user {args.user!r} of product {args.product!r}: {preview.keys_found} keys, "
            f"{preview.outbox_purged} outbox entries, for good? [y/N] "
        )
        io.err.flush()
        if io.stdin.readline().strip().lower() not in ("y", "yes"):
            io.err.write("not erased\n")
            return 1
    receipt = await manager.delete_user(args.product, args.user, dry_run=args.dry_run)
    if args.json:
        _dump(io, receipt.to_json())
    else:
        io.out.write(_receipt_text(receipt))
    return 0


Command = Callable[[StorageManager, argparse.Namespace, Io], Awaitable[int]]
COMMANDS: dict[str, Command] = {"inspect": inspect, "history": history, "audit": audit, "erase": erase}
