"""Prompts the library ships (it never runs them): the onboarding summary."""

from __future__ import annotations

from autoplay_obs.prompts._onboarding_summary import ONBOARDING_SUMMARY_PROMPT

__all__ = ["ONBOARDING_SUMMARY_PROMPT"]
