"""The storage contract and lifecycle suites of ``tests/unit``, run unchanged on the real cluster.

Every test there that takes the ``backend`` fixture is collected here too; in
this directory ``backend`` is a ``RedisStorageAdapter`` on the 3+3 cluster
(see conftest.py), so concurrent ends from several managers, retried ends and
the compare-and-set contract meet real slot routing. New cases added to those
suites run here without any change to this file.
"""

from __future__ import annotations

import inspect
from types import ModuleType

from tests.unit import test_lifecycle, test_storage_contract


def _backend_tests(module: ModuleType) -> dict[str, object]:
    return {
        name: fn
        for name, fn in vars(module).items()
        if name.startswith("test_") and callable(fn) and "backend" in inspect.signature(fn).parameters
    }


ADOPTED = {**_backend_tests(test_storage_contract), **_backend_tests(test_lifecycle)}
globals().update(ADOPTED)


def test_the_suites_were_adopted() -> None:
    """Guards the mechanism: an import that silently found nothing would pass vacuously."""
    assert len(_backend_tests(test_storage_contract)) >= 10
    assert len(_backend_tests(test_lifecycle)) >= 10
    assert all(name in globals() for name in ADOPTED)
