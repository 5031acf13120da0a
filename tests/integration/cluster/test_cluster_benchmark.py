"""``benchmarks/cluster.py`` still runs end to end (tiny sizes), so it does not rot between uses.

It starts its own standalone server and cluster. Nothing about speed is
asserted: the numbers belong in the harness's output and docs/scaling.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import find_server_binary

ROOT = Path(__file__).resolve().parents[3]


def test_the_cluster_harness_runs_on_both_targets() -> None:
    find_server_binary("redis-server", env_var="AUTOPLAY_REDIS_SERVER")
    find_server_binary("redis-cli", env_var="AUTOPLAY_REDIS_CLI")
    args = ["--pairs", "2", "--users", "2", "--repeat", "1", "--warmup", "1"]
    command = [sys.executable, "-m", "benchmarks.cluster", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Unclosed" not in done.stderr, done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith(("standalone ", "cluster "))]
    assert [row[0] for row in rows] == ["standalone", "cluster"]
    assert done.stdout.count(" primary ") == 1 + 3 and done.stdout.count(" replica ") == 3
