"""Persist user state and frozen session snapshots across sessions.

The public API is the seed's: ``StorageManager``, the adapters, and the
lifecycle calls. ``start_session`` / ``end_session`` return the full outcome of
what the seed's calls do.
"""

from __future__ import annotations

from autoplay_obs.storage._audit import AuditReport, Finding
from autoplay_obs.storage._erasure import ErasureReceipt, NotErased
from autoplay_obs.storage._history import SessionRecord
from autoplay_obs.storage._keys import session_key, user_state_key
from autoplay_obs.storage._lifecycle import (
    build_agent_context,
    end_session,
    init_user_state,
    on_session_end,
    on_session_start,
    start_session,
)
from autoplay_obs.storage._manager import StorageManager
from autoplay_obs.storage._operator_protocol import OperatorStore
from autoplay_obs.storage._outbox import Outbox
from autoplay_obs.storage._outbox_types import OutboxStatus
from autoplay_obs.storage._protocol import AtomicStore, AutoplayStorageAdapter, Stored
from autoplay_obs.storage._replay import FlushResult
from autoplay_obs.storage._results import (
    AdapterCall,
    Outcome,
    SessionEndResult,
    SessionStartResult,
)
from autoplay_obs.storage._summary import Summarizer
from autoplay_obs.storage._tombstone import TOMBSTONE_TTL_S
from autoplay_obs.storage.adapters.memory import InMemoryStorageAdapter
from autoplay_obs.storage.adapters.redis import RedisStorageAdapter

__all__ = [
    "AdapterCall",
    "AtomicStore",
    "AuditReport",
    "AutoplayStorageAdapter",
    "ErasureReceipt",
    "Finding",
    "FlushResult",
    "InMemoryStorageAdapter",
    "NotErased",
    "OperatorStore",
    "Outbox",
    "OutboxStatus",
    "Outcome",
    "RedisStorageAdapter",
    "SessionEndResult",
    "SessionRecord",
    "SessionStartResult",
    "StorageManager",
    "Stored",
    "Summarizer",
    "TOMBSTONE_TTL_S",
    "build_agent_context",
    "end_session",
    "init_user_state",
    "on_session_end",
    "on_session_start",
    "session_key",
    "start_session",
    "user_state_key",
]
