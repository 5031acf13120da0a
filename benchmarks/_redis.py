"""A throwaway local ``redis-server`` for benchmarks.

Benchmarks must not import from ``tests/``, so this is a deliberately tiny
starter: free 127.0.0.1 port, private tmp dir, persistence off (so fsync and
snapshots never show up in the numbers), killed on exit.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["local_redis"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def local_redis(timeout: float = 10.0) -> Iterator[str]:
    """Yield ``redis://127.0.0.1:PORT/0`` of a fresh server; SystemExit if none is on PATH."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found on PATH (apt-get install redis-server)")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="ap-bench-redis-") as workdir:
        # fmt: off
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
             "--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # fmt: on
        try:
            deadline = time.monotonic() + timeout
            while not _answers_ping(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"redis-server did not start on port {port}")
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait(timeout=10)
