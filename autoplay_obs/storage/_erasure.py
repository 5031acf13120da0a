"""``delete_user``: erase one user from the primary and the outbox, for good.

Decisions:
- Order: tombstone first, then the outbox purge, then every snapshot. From
  the moment the tombstone is in the state key, no compare-and-set can land
  (the script refuses it), so no session end can be counted again; a snapshot
  frozen before the tombstone is found by the scan that follows and deleted,
  and one frozen after it belongs to a session end whose merge then fails
  with ``UserErasedError`` -- that end deletes its own snapshot again
  (``undo_erased_freeze``, called by the lifecycle). A replay of an outbox
  entry that escaped the purge meets the same tombstone.
- Every step is one key (invariant 6): a SET of the tombstone, one DEL per
  snapshot. Running it twice is harmless: the second run finds what is left.
- The analytics sinks are write-only: their copies are not erased here. The
  receipt says so and how to ask each vendor (``not_erased``).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

from autoplay_obs.errors import StorageError, UserErasedError
from autoplay_obs.storage._keys import validate_id
from autoplay_obs.storage._operator_protocol import KeyRef, OperatorStore, operator_store
from autoplay_obs.storage._tombstone import TOMBSTONE_TTL_S, tombstone

if TYPE_CHECKING:
    from autoplay_obs.storage._manager import StorageManager

__all__ = ["ErasureReceipt", "NotErased", "delete_user", "undo_erased_freeze"]

POSTHOG_HOW: Final = (
    "PostHog keeps the person and their events: delete the person (distinct_id = the user id) in "
    "People -> the person -> Delete person (tick 'delete events'), or with the API: DELETE "
    "/api/projects/<project_id>/persons/<person_id>/?delete_events=true (personal API key)"
)
AMPLITUDE_HOW: Final = (
    "Amplitude keeps the user and their events: request deletion with the User Privacy API, POST "
    'https://amplitude.com/api/2/deletions/users {"user_ids": ["<user id>"], "requester": "<you>"} '
    "(basic auth: API key and secret key), or in the UI under User Privacy / Data Deletion"
)


@dataclass(frozen=True, slots=True)
class NotErased:
    """A place that may still hold the user's data, and how to have it deleted there."""

    where: str
    how: str


@dataclass(frozen=True, slots=True)
class ErasureReceipt:
    """What ``delete_user`` found and did (with ``dry_run``: what it would do)."""

    keys_found: int
    keys_deleted: int
    outbox_purged: int
    dry_run: bool
    not_erased: tuple[NotErased, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def not_erased(manager: StorageManager) -> tuple[NotErased, ...]:
    """The analytics vendors (always: any process may have mirrored there) and any other sink."""
    places = [NotErased("posthog", POSTHOG_HOW), NotErased("amplitude", AMPLITUDE_HOW)]
    for sink in manager.sinks:
        name = str(getattr(sink, "name", type(sink).__name__))
        if name not in ("posthog", "amplitude"):
            places.append(NotErased(name, "a sink of this manager: delete the user there by its own means"))
    return tuple(places)


async def _found(store: OperatorStore, product_id: str, user_id: str) -> tuple[bool, list[KeyRef]]:
    """Whether a live (not yet erased) state exists, and the user's snapshot keys."""
    state, snapshots = False, []
    async for ref in store.scan_keys(product_id, user_id):
        if ref.session_id is None:
            state = True
        else:
            snapshots.append(ref)
    if state:
        try:
            await store.load_state(product_id, user_id)
        except UserErasedError:
            state = False
    return state, snapshots


async def delete_user(
    manager: StorageManager,
    product_id: str,
    user_id: str,
    *,
    dry_run: bool = False,
    tombstone_ttl: int = TOMBSTONE_TTL_S,
) -> ErasureReceipt:
    """Erase the user's state and every snapshot, purge their outbox entries, leave a tombstone."""
    validate_id(product_id, "product_id")
    validate_id(user_id, "user_id")
    store = operator_store(manager.primary)
    outbox = getattr(manager, "outbox", None)
    live_state, snapshots = await _found(store, product_id, user_id)
    found = int(live_state) + len(snapshots)
    if dry_run:
        queued = 0 if outbox is None else len(await outbox.pending_for(product_id, user_id))
        return ErasureReceipt(found, 0, queued, True, not_erased(manager))
    await store.put_tombstone(product_id, user_id, tombstone(), tombstone_ttl)
    manager.forget_user(product_id, user_id)
    purged = 0 if outbox is None else int(await outbox.purge_user(product_id, user_id))
    deleted = int(live_state)
    # Scanned again after the tombstone: a snapshot frozen in between is caught here.
    _, snapshots = await _found(store, product_id, user_id)
    for ref in snapshots:
        deleted += await store.delete_key(product_id, user_id, ref.session_id)
    manager.forget_user(product_id, user_id)
    return ErasureReceipt(max(found, deleted), deleted, purged, False, not_erased(manager))


async def undo_erased_freeze(manager: StorageManager, product_id: str, user_id: str, session_id: str) -> None:
    """A session end that met the tombstone: delete the snapshot it may have frozen after the erase."""
    store = manager.primary
    if isinstance(store, OperatorStore):
        with contextlib.suppress(StorageError):  # the end already reports UserErasedError
            await store.delete_key(product_id, user_id, session_id)
    manager.forget_user(product_id, user_id)
