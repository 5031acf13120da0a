"""The storage suites written for one server, run unchanged on the real cluster.

Adopted here: every test of the contract and lifecycle suites (``tests/unit``)
that takes the ``backend`` fixture, and every test of the real-server storage
suite (``tests/integration/test_redis_storage.py``: unreadable and repairable
documents, wrong key types, the documented key layout) that needs nothing but
``adapter``, ``raw`` and ``make_snapshot``. In this directory those fixtures
are a ``RedisStorageAdapter`` and a client on the 3+3 cluster (conftest.py),
so concurrent ends from several managers, retried ends, corrupt documents and
the compare-and-set contract meet real slot routing. Cases added to those
suites later run here with no change to this file.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

from tests.integration import test_redis_storage
from tests.unit import test_lifecycle, test_storage_contract

CLUSTER_FIXTURES = {"backend", "adapter", "raw", "make_snapshot"}


def _parametrized(fn: Callable[..., Any]) -> set[str]:
    names: set[str] = set()
    for mark in getattr(fn, "pytestmark", []):
        if mark.name == "parametrize":
            argnames = mark.args[0]
            names |= set(argnames.split(",") if isinstance(argnames, str) else argnames)
    return {n.strip() for n in names}


def _adoptable(module: ModuleType, needs: str) -> dict[str, Callable[..., Any]]:
    """The module's tests that take ``needs`` and no fixture the cluster does not provide."""
    found: dict[str, Callable[..., Any]] = {}
    for name, fn in vars(module).items():
        if not (name.startswith("test_") and inspect.isfunction(fn)):
            continue
        fixtures = set(inspect.signature(fn).parameters) - _parametrized(fn)
        if needs in fixtures and fixtures <= CLUSTER_FIXTURES:
            found[name] = fn
    return found


SUITES = {
    test_storage_contract: _adoptable(test_storage_contract, "backend"),
    test_lifecycle: _adoptable(test_lifecycle, "backend"),
    test_redis_storage: _adoptable(test_redis_storage, "adapter"),
}
globals().update({name: fn for tests in SUITES.values() for name, fn in tests.items()})


def test_the_suites_were_adopted() -> None:
    """Guards the mechanism: an import that silently found nothing would pass vacuously."""
    assert all(len(tests) >= 8 for tests in SUITES.values()), {m.__name__: len(t) for m, t in SUITES.items()}
    assert "test_unreadable_state_degrades_and_is_left_byte_for_byte" in globals()
    assert "test_concurrent_ends_from_two_managers_conflict_and_lose_nothing" in globals()
