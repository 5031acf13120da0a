"""The demo's memory does not grow with the run: N sessions and 4N sessions peak alike.

Each run is a subprocess against the suite's real ``redis-server`` (so the
store's own growth is Redis's, not the demo's) that prints its peak RSS when
it exits: ``VmHWM`` from ``/proc/self/status``, not ``ru_maxrss``, which Linux
carries over ``execve`` from the forking parent (pytest is bigger than the
demo, so every child would report pytest's size). With a list per result and per event, as
before, 3000 more sessions cost about 47 MB here (16 KB a session); with
streaming statistics the peaks differ by a few MB of allocator noise (a run
of 16,000 sessions peaked below one of 4,000). The bound, 20 MB, sits between.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

N = 1000
BOUND_KB = 20_000

SCRIPT = textwrap.dedent(
    """
    import re, sys
    from autoplay_obs.__main__ import main
    code = main(sys.argv[1:])
    with open("/proc/self/status") as status:
        hwm = re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)
    print(f"maxrss_kb={hwm}", file=sys.stderr)
    sys.exit(code)
    """
)


def peak_rss_kb(redis_url: str, sessions: int) -> int:
    # fmt: off
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, "demo", "--redis-url", redis_url, "--sessions", str(sessions),
         "--no-progress", "--cleanup"],
        capture_output=True, text=True, timeout=120,
    )
    # fmt: on
    assert result.returncode == 0, result.stderr
    assert f"autoplay-obs demo: {sessions} sessions" in result.stdout, result.stdout
    assert "removed the" in result.stdout  # and Redis is left as it was found
    match = re.search(r"maxrss_kb=(\d+)", result.stderr)
    assert match is not None, result.stderr
    return int(match.group(1))


@pytest.mark.redis_server
def test_four_times_the_sessions_take_no_more_memory(redis_url: str) -> None:
    small = peak_rss_kb(redis_url, N)
    large = peak_rss_kb(redis_url, 4 * N)
    print(f"peak RSS: {N} sessions {small} KB, {4 * N} sessions {large} KB")
    assert large - small < BOUND_KB, (small, large)
