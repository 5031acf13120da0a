"""What telemetry records, read once from named environment variables; setters override them.

Decisions:
- Every switch has one environment variable and one setter (or a
  ``Telemetry`` constructor argument); the setter wins. They are read once,
  at import, never per call.
- ``OTEL_SEMCONV_STABILITY_OPT_IN`` is OpenTelemetry's own opt-in list: with
  ``gen_ai_latest_experimental`` in it, the lifecycle spans also carry the
  GenAI memory conventions (development status, so off by default).
- Content (the onboarding summary as ``gen_ai.memory.content``) needs its own
  opt-in on top: it is the user's data.
- The user id is omitted unless asked for; ``hashed`` is an HMAC-SHA256 with
  ``AUTOPLAY_OBS_USER_ID_KEY`` or a random per-process key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from autoplay_obs.errors import ConfigurationError

__all__ = [
    "ENV_CAPTURE_CONTENT",
    "ENV_DB_METRICS",
    "ENV_RECORD_USER_ID",
    "ENV_SEMCONV_OPT_IN",
    "ENV_SWITCH",
    "ENV_USER_ID_KEY",
    "GENAI_OPT_IN",
    "USER_ID_MODES",
    "Switches",
]

ENV_SWITCH: Final = "AUTOPLAY_OBS_TELEMETRY"
ENV_RECORD_USER_ID: Final = "AUTOPLAY_OBS_RECORD_USER_ID"
ENV_USER_ID_KEY: Final = "AUTOPLAY_OBS_USER_ID_KEY"
ENV_DB_METRICS: Final = "AUTOPLAY_OBS_DB_CLIENT_METRICS"
ENV_CAPTURE_CONTENT: Final = "AUTOPLAY_OBS_CAPTURE_CONTENT"
ENV_SEMCONV_OPT_IN: Final = "OTEL_SEMCONV_STABILITY_OPT_IN"
GENAI_OPT_IN: Final = "gen_ai_latest_experimental"
USER_ID_MODES: Final = ("omit", "hashed", "raw")
_OFF: Final = frozenset({"off", "0", "false", "no", "disabled"})
_ON: Final = frozenset({"on", "1", "true", "yes", "enabled"})


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = environ.get(name, "").strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    return default


@dataclass(slots=True)
class Switches:
    """The current settings; one instance per ``Telemetry``."""

    enabled: bool = True
    user_id_mode: str = "omit"
    user_id_key: bytes = b""
    db_metrics: bool = True
    """Record ``db.client.operation.duration`` (off when redis-py 8 records it already)."""
    genai: bool = False
    capture_content: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Switches:
        env = os.environ if environ is None else environ
        mode = env.get(ENV_RECORD_USER_ID, "omit").strip().lower() or "omit"
        opt_in = {part.strip() for part in env.get(ENV_SEMCONV_OPT_IN, "").split(",")}
        switches = cls(
            enabled=_flag(env, ENV_SWITCH, True),
            db_metrics=_flag(env, ENV_DB_METRICS, True),
            genai=GENAI_OPT_IN in opt_in,
            capture_content=_flag(env, ENV_CAPTURE_CONTENT, False),
        )
        switches.record_user_id(mode if mode in USER_ID_MODES else "omit", env.get(ENV_USER_ID_KEY))
        return switches

    def record_user_id(self, mode: str, key: str | bytes | None = None) -> None:
        """``omit``, ``hashed`` (keyed by ``key``, the env key, or a random one) or ``raw``."""
        if mode not in USER_ID_MODES:
            raise ConfigurationError(f"user id recording must be one of {USER_ID_MODES}, got {mode!r}")
        if key is None:
            key = os.environ.get(ENV_USER_ID_KEY) or secrets.token_bytes(32)
        self.user_id_key = key.encode() if isinstance(key, str) else key
        self.user_id_mode = mode

    def user_id_attribute(self, user_id: object) -> str | None:
        """What to record for ``user_id`` (None: nothing)."""
        if self.user_id_mode == "omit" or not isinstance(user_id, str):
            return None
        if self.user_id_mode == "raw":
            return user_id
        return hmac.new(self.user_id_key, user_id.encode(), hashlib.sha256).hexdigest()
