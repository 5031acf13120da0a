"""The benchmark harnesses still run end to end (tiny sizes): they must not rot between uses.

These check that each harness completes and that its contenders agree on the
document (the codec harness refuses to time contenders that do not round-trip
the same bytes). They assert nothing about speed: timings belong in the
harnesses' own output, not in tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_codec_harness_runs_and_its_contenders_agree() -> None:
    out = _run("benchmarks.codec", "--iterations", "20", "--repeats", "1")
    assert "state" in out and "snapshot" in out and "reference/ours" in out


@pytest.mark.redis_server
def test_lifecycle_harness_runs_every_variant_against_a_real_redis(redis_url: str) -> None:
    out = _run(
        "benchmarks.lifecycle", "--pairs", "3", "--sizes", "5", "30", "--sizes-at-users", "2",
        "--users", "1", "2", "--repeat", "1", "--warmup", "1", "--profile", "--redis-url", redis_url,
    )  # fmt: skip
    for variant in ("reference", "floor", "ours"):
        assert variant in out
    assert "server us/pair" in out and "ours / other" in out
    for bucket in ("copy", "encode", "decode", "redis-py", "telemetry", "lifecycle"):
        assert f"\n{bucket} " in out, bucket  # a row of the profile breakdown


def test_telemetry_overhead_harness_runs() -> None:
    out = _run("benchmarks.telemetry_overhead", "--pairs", "3", "--rounds", "1")
    assert "no-sdk" in out and "sdk+prom" in out
