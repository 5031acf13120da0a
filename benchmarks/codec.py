"""Round trip stored bytes -> model -> bytes: ours vs a bare msgspec floor vs the reference.

- ours: ``decode_user_state`` / ``decode_session_snapshot`` then ``encode`` -- the
  public codec path, range rules and the post-decode rule check included.
- floor: the same JSON through mirror Structs with no constraints and no
  ``__post_init__``; nothing can go faster with msgspec, so ours should stay
  within 1.3x of it.
- reference: ``json.loads -> from_dict -> to_dict -> json.dumps`` with
  ``autoplay_sdk`` 0.13.0, when it is installed; ours should be >= 10x faster.

Run ``python -m benchmarks.codec`` (or ``python benchmarks/codec.py``) from the
repository root. Each figure is the median over several repeats of the mean
time per round trip.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoplay_obs.user_adoption_state import decode_session_snapshot, decode_user_state, encode
from benchmarks._data import build

# --- the floor: mirror Structs, same field names, no constraints, no hooks ----


class _Mastery(msgspec.Struct):
    rating: int = 0
    level: str = "novice"
    description: str = ""


class _Step(msgspec.Struct):
    step_id: str
    status: str = "not_started"
    confidence: float = 0.0
    evidence: str = ""
    completed_at: float | None = None
    last_evaluated_at: float = 0.0


class _Workflow(msgspec.Struct):
    workflow_id: str
    status: str = "not_started"
    confidence: float = 0.0
    evidence: str = ""
    source: str = "unknown"
    first_detected_at: float | None = None
    completed_at: float | None = None
    last_evaluated_at: float = 0.0
    steps: dict[str, _Step] = {}


class _StepIn(msgspec.Struct):
    decided_at: float = 0.0
    should_step_in: bool = False
    timing_assessment: str = ""
    reason: str = ""
    suggested_workflow_ids: list[str] = []


class _Onboarding(msgspec.Struct):
    welcomed: bool = False
    exploration_started_at: float = 0.0
    distinct_features_seen: int = 0
    explore_gate_passed: bool = False
    workflow_progress: dict[str, _Workflow] = {}
    last_step_in: _StepIn | None = None
    last_reasoned_at: float | None = None
    last_welcome_at: float | None = None
    proactive_support_count: int = 0
    onboarding_completed_at: float | None = None
    summary: str | None = None
    completion_rate: float = 0.0


class _IndexEntry(msgspec.Struct):
    session_id: str
    session_number: int
    started_at: float
    captured_at: float


class _Sessions(msgspec.Struct):
    count: int = 0
    current_session_id: str | None = None
    index: list[_IndexEntry] = []
    onboarding_session_id: str | msgspec.UnsetType = msgspec.UNSET


class _State(msgspec.Struct, kw_only=True):
    rev: str | msgspec.UnsetType = msgspec.field(default=msgspec.UNSET, name="_rev")
    v: int = msgspec.field(default=1, name="_v")
    user_id: str
    metadata: dict[str, Any] = {}
    journey_state: str = "onboarding"
    mastery: _Mastery = msgspec.field(default_factory=_Mastery)
    discovered_features: list[str] = []
    onboarding: _Onboarding = msgspec.field(default_factory=_Onboarding)
    first_seen_at: float = 0.0
    last_updated_at: float = 0.0
    last_judged_at: float | None = None
    sessions: _Sessions = msgspec.field(default_factory=_Sessions)


class _Snapshot(msgspec.Struct, kw_only=True):
    v: int = msgspec.field(default=1, name="_v")
    frozen_: bool = msgspec.field(default=True, name="_frozen")
    session_id: str
    session_number: int
    user_id: str
    started_at: float
    captured_at: float = 0.0
    duration_s: float = 0.0
    journey_state: str = "onboarding"
    mastery: _Mastery = msgspec.field(default_factory=_Mastery)
    proactive_support_count: int = 0
    distinct_features_seen: int = 0
    discovered_features: list[str] = []
    reached_onboarding_complete: bool = False
    completion_rate: float = 0.0
    completion_rate_denominator: str = "all_catalog_workflows"
    total_catalog_workflows: int = 0
    completed_workflow_ids: list[str] = []
    in_progress_workflow_ids: list[str] = []
    untouched_workflow_ids: list[str] = []
    workflow_progress: dict[str, _Workflow] = {}


# --- contenders ----------------------------------------------------------------

RoundTrip = Callable[[bytes], bytes]


def _floor(cls: type[msgspec.Struct]) -> RoundTrip:
    decoder = msgspec.json.Decoder(cls)
    encoder = msgspec.json.Encoder()
    return lambda raw: encoder.encode(decoder.decode(raw))


def _ours_state(raw: bytes) -> bytes:
    return encode(decode_user_state(raw).value)


def _ours_snapshot(raw: bytes) -> bytes:
    return encode(decode_session_snapshot(raw).value)


def _reference(cls: Any) -> RoundTrip:
    return lambda raw: json.dumps(cls.from_dict(json.loads(raw)).to_dict()).encode()


def _measure(
    contenders: dict[str, RoundTrip], raw: bytes, iterations: dict[str, int], repeats: int
) -> dict[str, list[float]]:
    """Per contender, ``repeats`` samples of the mean microseconds per call.

    Contenders take turns within each repeat, so a burst of load on the
    machine hits neighbouring samples alike and their ratio stays honest.
    """
    for name, fn in contenders.items():  # warm caches and lazily built decoders
        for _ in range(max(1, iterations[name] // 10)):
            fn(raw)
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, fn in contenders.items():
                n = iterations[name]
                start = time.perf_counter_ns()
                for _ in range(n):
                    fn(raw)
                samples[name].append((time.perf_counter_ns() - start) / n / 1_000)
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def _check_equivalent(raw: bytes, contenders: dict[str, RoundTrip]) -> None:
    """Every contender must give back the same document, or the race is meaningless."""
    expected = json.loads(raw)
    for name, fn in contenders.items():
        if json.loads(fn(raw)) != expected:
            raise SystemExit(f"{name} did not round-trip the document unchanged")


def _paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of the per-repeat ratios (samples of one repeat ran side by side)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def run(iterations: int, repeats: int) -> dict[str, dict[str, float]]:
    data = build()
    try:
        from autoplay_sdk.user_adoption_state import models as ref
    except ImportError:
        ref = None
    cases: list[tuple[str, bytes, dict[str, RoundTrip]]] = [
        ("state", data.state_bytes, {"ours": _ours_state, "floor": _floor(_State)}),
        ("snapshot", data.snapshot_bytes, {"ours": _ours_snapshot, "floor": _floor(_Snapshot)}),
    ]
    if ref is not None:
        cases[0][2]["reference"] = _reference(ref.UserAdoptionState)
        cases[1][2]["reference"] = _reference(ref.SessionSnapshot)
    results: dict[str, dict[str, float]] = {}
    for label, raw, contenders in cases:
        _check_equivalent(raw, contenders)
        # The reference is ~10x slower; fewer calls keep each repeat comparable in length.
        counts = {name: iterations // 10 if name == "reference" else iterations for name in contenders}
        samples = _measure(contenders, raw, counts, repeats)
        result = {name: statistics.median(values) for name, values in samples.items()}
        result["ours/floor"] = _paired_ratio(samples["ours"], samples["floor"])
        if "reference" in samples:
            result["reference/ours"] = _paired_ratio(samples["reference"], samples["ours"])
        result["bytes"] = len(raw)
        results[label] = result
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Many short samples: on a shared machine the median shrugs off bursts of load.
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args(argv)
    results = run(args.iterations, args.repeats)
    print(
        f"codec round trip, bytes -> model -> bytes; median of {args.repeats} repeats "
        "(targets: ours/floor <= 1.3x, reference/ours >= 10x)"
    )
    for label, r in results.items():
        line = (
            f"{label:9s} {int(r['bytes']):6d} B  ours {r['ours']:8.1f} us  "
            f"floor {r['floor']:8.1f} us  ours/floor {r['ours/floor']:.2f}x"
        )
        if "reference" in r:
            line += f"  reference {r['reference']:8.1f} us  reference/ours {r['reference/ours']:.1f}x"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
