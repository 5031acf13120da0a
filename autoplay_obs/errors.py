"""The one error tree of autoplay_obs.

Backend exceptions (redis-py, PostHog, Amplitude, msgspec) are mapped to these
types at a single boundary and re-raised ``from`` the original, so a caller
catches ``AutoplayError`` and nothing else::

    AutoplayError
    ├── ConfigurationError        bad setup: no adapters, bad URL, bad option
    │   └── MissingDependencyError   an optional extra is not installed (also ImportError)
    ├── CallTimeoutError          a blocking call (storage.sync) waited past its bound (also TimeoutError)
    ├── InvalidIdError            empty / over-long / non-str product, user or session id (also ValueError)
    ├── InvalidValueError         a mutation got a value it cannot store, e.g. NaN (also ValueError)
    ├── DocumentError             a stored document cannot be used as it is
    │   ├── UnreadableDocumentError  not JSON, not an object, or a required field is unusable
    │   └── UnsupportedVersionError  ``_v`` is a version this code does not know
    ├── StorageError              the primary store could not do what was asked
    │   ├── StorageUnavailableError  connection refused, timed out, or the server errored
    │   ├── ConflictError            compare-and-set kept losing to concurrent writers
    │   └── UserErasedError          the user was erased (``delete_user``): its tombstone refuses writes
    └── OutboxError               the local outbox could not keep or hand back a session end
        ├── OutboxCorruptError       the file is not an outbox this code can read (left untouched)
        ├── OutboxTimeoutError       locked by another process, or slower than its timeout
        └── OutboxWriteError         cannot write: read-only, disk full, I/O error, entry too large

Lifecycle calls (``on_session_start`` / ``on_session_end``) never raise
``DocumentError`` or ``StorageError`` into the host: they degrade, report it
in their result and telemetry, and leave stored data untouched.
"""

from __future__ import annotations

__all__ = [
    "AutoplayError",
    "CallTimeoutError",
    "ConfigurationError",
    "ConflictError",
    "DocumentError",
    "InvalidIdError",
    "InvalidValueError",
    "MissingDependencyError",
    "OutboxCorruptError",
    "OutboxError",
    "OutboxTimeoutError",
    "OutboxWriteError",
    "StorageError",
    "StorageUnavailableError",
    "UnreadableDocumentError",
    "UnsupportedVersionError",
    "UserErasedError",
]


class AutoplayError(Exception):
    """Base of every error this library raises on purpose."""


class ConfigurationError(AutoplayError):
    """The library was set up in a way that cannot work."""


class MissingDependencyError(ConfigurationError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(f'{feature} needs the "{extra}" extra: pip install "autoplay-obs[{extra}]"')
        self.extra = extra


class CallTimeoutError(AutoplayError, TimeoutError):
    """A blocking call waited past its bound; the work was cancelled on the library's loop."""


class InvalidIdError(AutoplayError, ValueError):
    """An id cannot be used to address stored data."""


class InvalidValueError(AutoplayError, ValueError):
    """A value handed to a model mutation cannot be stored (e.g. NaN)."""


class DocumentError(AutoplayError):
    """A stored document cannot be used as it is; it is left where it is."""


class UnreadableDocumentError(DocumentError):
    """The bytes are not a document of the expected kind at all."""


class UnsupportedVersionError(DocumentError):
    """The document's ``_v`` is not one this code knows; never overwritten."""

    def __init__(self, version: object) -> None:
        super().__init__(f"unsupported document version _v={version!r}; expected 1")
        self.version = version


class StorageError(AutoplayError):
    """The primary store failed an operation."""


class StorageUnavailableError(StorageError):
    """The store could not be reached, timed out, or answered with an error."""


class ConflictError(StorageError):
    """A compare-and-set lost to concurrent writers more times than allowed."""


class UserErasedError(StorageError):
    """The user's state is an erasure tombstone: nothing of theirs is read or written until it expires.

    Final, not transient: a retry or a replay gets the same answer.
    """

    def __init__(self, erased_at: float | None = None) -> None:
        super().__init__("this user was erased (delete_user); the tombstone refuses writes until it expires")
        self.erased_at = erased_at


class OutboxError(AutoplayError):
    """The local outbox failed; the session end falls back to today's not-persisted result."""


class OutboxCorruptError(OutboxError):
    """The outbox file is not one this code can read; it is never deleted or rewritten."""


class OutboxTimeoutError(OutboxError):
    """The outbox stayed locked, or an operation ran past its timeout (a put may still land)."""


class OutboxWriteError(OutboxError):
    """The outbox cannot be written: read-only place, disk full, I/O error, or an entry too large."""
