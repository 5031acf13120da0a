"""The outbox across real processes and real file-system failures.

- A process SIGKILLed in a loop of puts loses none that returned: a new
  process sees every one it acknowledged, and nothing twice.
- Two processes claiming from one file replay every entry exactly once, each
  user's sessions in queue order.
- A garbage file, a damaged outbox, a read-only directory and a full disk
  (a file-size rlimit) are each a clear ``OutboxError``, never a crash, and the
  user's file is left as it was.

Children run ``python -c`` with this checkout first on ``sys.path``; each
prints what it acknowledged, flushed, before going on.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from autoplay_obs.errors import OutboxCorruptError
from autoplay_obs.storage._outbox import Outbox
from autoplay_obs.storage._outbox_types import OutboxItem

ROOT = Path(__file__).resolve().parents[2]
PRELUDE = """
import asyncio, json, os, sys, time
from autoplay_obs.errors import OutboxError
from autoplay_obs.storage._outbox import Outbox
from autoplay_obs.storage._outbox_types import OutboxItem
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _spawn(code: str, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    script = PRELUDE + textwrap.dedent(code)
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(), **kwargs,
    )  # fmt: skip


def _run(code: str, *args: str, **kwargs: object) -> str:
    child = _spawn(code, *args, **kwargs)
    out, err = child.communicate(timeout=90)
    assert child.returncode == 0, err
    return out


def _rest_of(child: subprocess.Popen[str], returncode: int = -signal.SIGKILL) -> str:
    """What the child printed after the lines already read, through the same buffered file
    (``communicate`` reads the raw pipe and would lose lines that ``readline`` read ahead)."""
    assert child.stdout is not None and child.stderr is not None
    out, err = child.stdout.read(), child.stderr.read()
    assert child.wait(timeout=90) == returncode, err
    return out


PUT_FOREVER = """
async def main(path, synchronous, first):
    box = Outbox(path, synchronous=synchronous)
    await box.open()
    i = int(first)
    while True:
        await box.put(OutboxItem("prod", f"u{i % 7}", f"s{i}", b"x" * 300, "summary"))
        sys.stdout.write(f"s{i}\\n")
        sys.stdout.flush()
        i += 1
asyncio.run(main(*sys.argv[1:]))
"""

READ_ALL = """
import sqlite3
async def main(path):
    async with Outbox(path) as box:
        seen = [e.session_id for u in range(7) for e in await box.pending_for("prod", f"u{u}")]
        status = (await box.status()).as_dict()
    check = sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0]
    print(json.dumps({"seen": seen, "status": status, "integrity": check}))
asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_processes_killed_mid_put_lose_no_acknowledged_entry(tmp_path: Path, synchronous: str) -> None:
    path = str(tmp_path / "outbox.db")
    acknowledged: list[str] = []
    for _ in range(3):  # each writer starts on the file the last one was killed over
        first = len(acknowledged)  # the put in flight at a kill may have landed: put again, idempotent
        child = _spawn(PUT_FOREVER, path, synchronous, str(first))
        assert child.stdout is not None
        batch = [child.stdout.readline().strip() for _ in range(100)]
        child.send_signal(signal.SIGKILL)  # while the loop is in or between puts
        batch += _rest_of(child).split()
        assert batch[:100] == [f"s{i}" for i in range(first, first + 100)]
        acknowledged += batch

    found = json.loads(_run(READ_ALL, path))
    seen = found["seen"]
    assert found["integrity"] == "ok"
    assert len(seen) == len(set(seen)) == found["status"]["depth"]
    assert set(acknowledged) <= set(seen)
    # At most the one put in flight at the last kill landed without being acknowledged.
    assert set(seen) - set(acknowledged) <= {f"s{len(acknowledged)}"}


CLAIM_UNTIL_EMPTY = """
async def main(path, go):
    async with Outbox(path) as box:
        print("ready", flush=True)
        while not os.path.exists(go):
            await asyncio.sleep(0.005)
        while True:
            entries = await box.claim(5, lease_s=300)
            if not entries:
                if (await box.status()).pending == 0:
                    return
                await asyncio.sleep(0.002)
                continue
            for e in entries:  # stamped before the ack: a user's next claim comes after it
                print(time.monotonic_ns(), e.user_id, e.session_id, flush=True)
            await box.ack([e.id for e in entries])
asyncio.run(main(*sys.argv[1:]))
"""


async def test_two_processes_claiming_one_file_replay_each_entry_once_in_user_order(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    users, per_user = 12, 20
    async with Outbox(path) as box:
        for n in range(per_user):
            for u in range(users):
                await box.put(OutboxItem("prod", f"u{u}", f"{n:03d}", b"{}"))
    go = tmp_path / "go"
    children = [_spawn(CLAIM_UNTIL_EMPTY, str(path), str(go)) for _ in range(2)]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    go.touch()
    replays: list[tuple[int, str, str]] = []
    for child in children:
        out = await asyncio.to_thread(_rest_of, child, 0)
        replays += [
            (int(ts), user, session) for ts, user, session in (line.split() for line in out.splitlines())
        ]

    counts = Counter((user, session) for _, user, session in replays)
    assert len(counts) == users * per_user and set(counts.values()) == {1}
    for u in range(users):
        in_order = [session for _, user, session in sorted(replays) if user == f"u{u}"]
        assert in_order == [f"{n:03d}" for n in range(per_user)]
    async with Outbox(path) as box:
        status = await box.status()
    assert (status.depth, status.replayed_total) == (0, users * per_user)


async def test_a_garbage_file_is_refused_on_open_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    garbage = bytes(range(256)) * 64
    path.write_bytes(garbage)
    with pytest.raises(OutboxCorruptError, match="left untouched"):
        await Outbox(path).open()
    assert path.read_bytes() == garbage


async def test_a_damaged_outbox_is_a_corrupt_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    async with Outbox(path) as box:
        for i in range(50):
            await box.put(OutboxItem("prod", "u", f"s{i}", b"x" * 500))
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    with path.open("r+b") as f:  # keep the header and schema page, scribble over the rest
        f.seek(page)
        f.write(b"\xff" * (path.stat().st_size - page))
    with pytest.raises(OutboxCorruptError, match="not a readable outbox"):
        async with Outbox(path) as box:
            await box.status()


def _drop_file_permission_override() -> None:
    """Run as root (CI containers, this sandbox), a child must lose CAP_DAC_OVERRIDE and friends
    for a read-only directory to mean anything; dropped from the bounding set before exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


TRY_PUT = """
async def main(path):
    try:
        async with Outbox(path) as box:
            await box.put(OutboxItem("prod", "u", "s-new", b"{}"))
        print("written")
    except OutboxError as exc:
        print(type(exc).__name__, exc)
asyncio.run(main(sys.argv[1]))
"""


async def test_a_read_only_directory_is_a_write_error(tmp_path: Path) -> None:
    existing = tmp_path / "ro" / "outbox.db"
    existing.parent.mkdir()
    async with Outbox(existing) as box:
        await box.put(OutboxItem("prod", "u", "s-old", b"{}"))
    existing.chmod(0o400)
    existing.parent.chmod(0o500)
    drop = _drop_file_permission_override if os.geteuid() == 0 else None
    try:
        for path in (existing.parent / "new.db", existing):
            out = _run(TRY_PUT, str(path), preexec_fn=drop)
            assert out.startswith("OutboxWriteError") and str(path) in out, out
    finally:
        existing.parent.chmod(0o700)
    assert not (existing.parent / "new.db").exists()


FILL_THE_DISK = """
import resource, signal
async def main(path):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    async with Outbox(path) as box:
        await box.put(OutboxItem("prod", "u", "first", b"{}"))
        used = max(os.path.getsize(path + suffix) for suffix in ("", "-wal"))
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (used + 64 * 1024, hard))
        accepted, error = 0, None
        for i in range(1000):
            try:
                await box.put(OutboxItem("prod", "u", f"s{i}", b"x" * 16384))
                accepted += 1
            except OutboxError as exc:
                error = f"{type(exc).__name__}: {exc}"
                break
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        after = await box.put(OutboxItem("prod", "u", "after", b"{}"))
        depth = (await box.status()).depth
    print(json.dumps({"accepted": accepted, "error": error, "after": after.queued, "depth": depth}))
asyncio.run(main(sys.argv[1]))
"""


def test_a_full_disk_is_a_write_error_and_the_outbox_recovers(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    result = json.loads(_run(FILL_THE_DISK, str(path)))
    assert result["error"] is not None and result["error"].startswith("OutboxWriteError"), result
    assert str(path) in result["error"]
    assert result["after"] is True and result["depth"] == result["accepted"] + 2


PUT_AFTER_FORK = """
async def put(box, session):
    return (await box.put(OutboxItem("prod", "u", session, b"{}"))).queued
box = Outbox(sys.argv[1])
assert asyncio.run(put(box, "before-fork"))
parent_owner = box.owner
pid = os.fork()
if pid == 0:  # the child's first call opens its own connection and worker thread, and claims as itself
    os._exit(0 if asyncio.run(put(box, "in-child")) and box.owner != parent_owner else 1)
_, code = os.waitpid(pid, 0)
assert asyncio.run(put(box, "in-parent")) and code == 0
box.close()
async def read():
    async with Outbox(sys.argv[1]) as again:
        return [e.session_id for e in await again.pending_for("prod", "u")]
print(" ".join(asyncio.run(read())))
"""


def test_an_outbox_made_before_a_fork_works_in_the_child_and_the_parent(tmp_path: Path) -> None:
    out = _run(PUT_AFTER_FORK, str(tmp_path / "outbox.db"))
    assert out.split() == ["before-fork", "in-child", "in-parent"]
