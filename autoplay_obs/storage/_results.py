"""What a storage call did, for the caller and for telemetry: never swallowed."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from autoplay_obs.errors import AutoplayError, OutboxError
from autoplay_obs.user_adoption_state import SessionSnapshot, UserAdoptionState

__all__ = ["AdapterCall", "Outcome", "Role", "SessionEndResult", "SessionStartResult"]

Role = Literal["primary", "sink"]


class Outcome(str, Enum):
    """How one adapter call ended; also the span and metric label value."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    NOT_FOUND = "not_found"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class AdapterCall:
    """One call the manager made to one adapter."""

    adapter: str
    role: Role
    operation: str
    outcome: Outcome
    duration_s: float
    error_type: str | None = None


@dataclass(frozen=True, slots=True)
class _Result:
    state: UserAdoptionState
    persisted: bool
    """The state change reached the primary."""
    error: AutoplayError | None = None
    """Why the primary part failed, when it did."""
    repairs: tuple[str, ...] = ()
    """Repairs made while reading the stored state (each one is counted)."""
    conflicts: int = 0
    """Compare-and-set attempts lost to concurrent writers before success."""
    _calls: list[AdapterCall] = field(default_factory=list, repr=False)

    @property
    def adapter_calls(self) -> tuple[AdapterCall, ...]:
        """Calls so far: sink writes finish in the background (``await storage.drain()``)."""
        return tuple(self._calls)


@dataclass(frozen=True, slots=True)
class SessionStartResult(_Result):
    onboarding_session: SessionSnapshot | None = None
    degraded: bool = False
    """The state is a stand-in (primary down, or its document refused); nothing was written."""


@dataclass(frozen=True, slots=True)
class SessionEndResult(_Result):
    snapshot_created: bool | None = None
    """True: this call froze the snapshot; False: it already existed; None: the write failed."""
    duplicate: bool = False
    """The session was already counted in the state (a retried end); nothing changed."""
    trimmed: int = 0
    """Index entries dropped to keep the newest 50."""
    summary_error: str | None = None
    """The summarizer's error type when it raised or timed out (the session was still saved)."""
    summary_truncated: int = 0
    """Characters cut from the summary to keep it within the manager's ``max_summary_chars``."""
    queued: bool = False
    """Not acknowledged by the primary, but durably in the manager's outbox: it will be replayed."""
    outbox_error: OutboxError | None = None
    """Why the outbox could not take the session (it is then lost, as without an outbox)."""
