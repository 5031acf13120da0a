"""The seed's names import from the seed's paths; each ``__all__`` is honest and sorted."""

from __future__ import annotations

import importlib

import pytest

MODULES = ["autoplay_obs.user_adoption_state", "autoplay_obs.prompts"]


def test_seed_imports():
    from autoplay_obs.prompts import ONBOARDING_SUMMARY_PROMPT
    from autoplay_obs.user_adoption_state import (
        JourneyState,
        MasteryLevel,
        SessionSnapshot,
        UserAdoptionState,
        WorkflowStatus,
        build_onboarding_summary_input,
    )

    assert callable(build_onboarding_summary_input)
    assert callable(SessionSnapshot.from_adoption_state)
    assert isinstance(ONBOARDING_SUMMARY_PROMPT, dict)
    assert {m.value for m in JourneyState} == {"onboarding", "onboarded"}
    assert {m.value for m in MasteryLevel} == {
        "novice",
        "beginner",
        "intermediate",
        "proficient",
        "power_user",
    }
    assert {m.value for m in WorkflowStatus} == {"not_started", "in_progress", "completed"}
    assert UserAdoptionState(user_id="u").user_id == "u"


@pytest.mark.parametrize("name", MODULES)
def test_every_name_in_all_exists(name):
    module = importlib.import_module(name)
    assert module.__all__, f"{name} must declare __all__"
    missing = [attr for attr in module.__all__ if not hasattr(module, attr)]
    assert missing == []


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_unique(name):
    exported = importlib.import_module(name).__all__
    assert list(exported) == sorted(exported)
    assert len(set(exported)) == len(exported)


@pytest.mark.parametrize("name", MODULES)
def test_public_names_are_all_exported(name):
    """Nothing public hides outside ``__all__`` (submodules are private, underscored)."""
    module = importlib.import_module(name)
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_") and getattr(value, "__module__", name).startswith(name)
    }
    assert public <= set(module.__all__)
