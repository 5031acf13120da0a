"""The one loop that changes a user's state: read, change a copy, compare-and-set, repeat.

Decisions:
- A change is a pure function: it gets a state of its own (the stored state's
  ``copy()``, or a new state when there is none) and returns the changed
  state, or None when there is nothing to change. On a conflict it runs again
  on the state the primary returned with its refusal; nothing it saw before
  is reused.
- The expectation of each compare-and-set is the token of the document the
  change was applied to, so a write lands only on the state it was computed
  from. A refusal whose current token is our own new revision means the write
  landed and only its reply was lost (redis-py resent it): it is a success.
- Writers for one user in this process wait in line on a lock, so they do not
  fight; a writer that queued behind another starts from what that one wrote.
- An optional snapshot write goes first, with the first compare-and-set (one
  round trip on a primary with ``freeze_and_swap``). That is a single try: a
  change may depend on the snapshot write's outcome, so after a conflict the
  caller merges again knowing it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from autoplay_obs.errors import AutoplayError, ConflictError
from autoplay_obs.storage._doc_trace import stamped
from autoplay_obs.storage._protocol import AtomicStore, Stored, new_revision, token_of
from autoplay_obs.storage._results import Outcome
from autoplay_obs.telemetry import _hooks as telemetry
from autoplay_obs.user_adoption_state import UserAdoptionState, decode_user_state, encode
from autoplay_obs.user_adoption_state._json_values import plain_json

if TYPE_CHECKING:
    from autoplay_obs.storage._adapters import Lru

__all__ = ["Change", "Current", "StateUpdate", "StateWriter"]

Change = Callable[[UserAdoptionState], "UserAdoptionState | None"]
Run = Callable[..., Awaitable[Any]]
Swapped = tuple[bool, "Stored | None"]


class Current(NamedTuple):
    """A stored state document, its decoding, and the repairs the decoding made.

    ``state`` is the manager's own: read it, ``copy()`` it, never change it.
    """

    stored: Stored
    state: UserAdoptionState
    repairs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StateUpdate:
    """What ``update`` did. ``state`` is the caller's own."""

    state: UserAdoptionState
    written: bool
    conflicts: int
    repairs: tuple[str, ...]
    raw: bytes
    """The bytes written (empty when nothing was)."""
    before: UserAdoptionState | None
    """The state the change was last applied to (None: there was none); read-only."""
    snapshot_created: bool | AutoplayError | None = None
    """The snapshot write's outcome, when one was given: True, False (already there) or its error."""


class _UserSlot:
    """One user's writers in this process, in line; gone when nobody holds or awaits it."""

    __slots__ = ("key", "lock", "slots", "users")

    def __init__(self, slots: dict[tuple[str, str], _UserSlot], key: tuple[str, str]) -> None:
        self.slots, self.key = slots, key
        self.lock = asyncio.Lock()
        self.users = 0

    async def __aenter__(self) -> None:
        self.users += 1
        try:
            await self.lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self.lock.release()
        self._leave()

    def _leave(self) -> None:
        self.users -= 1
        if self.users == 0:
            del self.slots[self.key]


def _own(user_id: str, state: UserAdoptionState | None) -> UserAdoptionState:
    """A state of the caller's own to change: a copy of ``state``, or a new one."""
    return UserAdoptionState(user_id=user_id) if state is None else state.copy()


def _repairs(current: Current | None) -> tuple[str, ...]:
    return () if current is None else current.repairs


def _stored_bytes(changed: UserAdoptionState) -> bytes:
    """What a write stores: a fresh revision, plain-JSON metadata, this writer's trace id."""
    changed.revision = new_revision()
    changed.metadata = plain_json(changed.metadata)
    return stamped(encode(changed))  # _trace_id: this writer's trace (issue 12)


def _swap_outcome(result: Swapped) -> Outcome:
    return Outcome.OK if result[0] else Outcome.CONFLICT


class StateWriter:
    """Reads and compare-and-sets user states on the primary, remembering the last seen."""

    def __init__(self, primary: AtomicStore, run: Run, known: Lru[tuple[str, str], Current], deadline: float):
        self._primary = primary
        self._run = run
        self._known = known
        self._deadline = deadline
        self._slots: dict[tuple[str, str], _UserSlot] = {}

    def forget(self, product_id: str, user_id: str) -> None:
        self._known.put((product_id, user_id), None)

    async def read(self, product_id: str, user_id: str, *, fresh: bool) -> Current | None:
        key = (product_id, user_id)
        known = None if fresh else self._known.get_recent(key)
        if known is not None:
            return known
        stored = await self._run(
            "primary",
            "load_state",
            lambda: self._primary.load_state(product_id, user_id),
            lambda found: Outcome.OK if found is not None else Outcome.NOT_FOUND,
        )
        return self._remember(key, stored)

    def _remember(self, key: tuple[str, str], stored: Stored | None) -> Current | None:
        """``stored`` decoded and remembered; a document that cannot be read raises ``DocumentError``."""
        if stored is None:
            self._known.put(key, None)
            return None
        decoded = decode_user_state(stored.raw, user_id=key[1])
        current = Current(stored, decoded.value, decoded.repairs)
        self._known.put(key, current)
        return current

    async def update(
        self,
        product_id: str,
        user_id: str,
        change: Change,
        current: Current | None,
        freeze: tuple[str, bytes] | None,
    ) -> StateUpdate:
        key = (product_id, user_id)
        async with self._user_slot(key):
            latest = self._known.get_recent(key)
            if latest is not None and (current is None or latest.stored is not current.stored):
                current = latest  # written by this process while we waited in line
            if freeze is not None:
                return await self._try_with_freeze(key, change, current, freeze)
            return await self._until_it_sticks(key, change, current)

    async def _until_it_sticks(
        self, key: tuple[str, str], change: Change, current: Current | None
    ) -> StateUpdate:
        """Compare-and-set ``change`` of the freshest state, until one lands (or the deadline)."""
        deadline = time.monotonic() + self._deadline
        conflicts = 0
        while True:
            before = None if current is None else current.state
            changed = change(_own(key[1], before))
            if changed is None:
                return StateUpdate(_own(key[1], before), False, conflicts, _repairs(current), b"", before)
            raw = _stored_bytes(changed)
            expected = None if current is None else current.stored.token
            swapped = await self._swap(*key, raw, expected)
            if self._landed(key, changed, raw, swapped):
                return StateUpdate(changed.copy(), True, conflicts, _repairs(current), raw, before)
            conflicts += 1
            current = self._lost(key, conflicts, expected, swapped[1])
            if time.monotonic() > deadline:
                raise ConflictError(f"state of one user changed {conflicts} times under this writer")
            await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**conflicts)))

    async def _try_with_freeze(
        self, key: tuple[str, str], change: Change, current: Current | None, freeze: tuple[str, bytes]
    ) -> StateUpdate:
        """The snapshot write and one compare-and-set in one round trip; a single try, since the
        change may depend on the snapshot write's answer, which the caller then knows."""
        before = None if current is None else current.state
        changed = change(_own(key[1], before))
        if changed is None:
            created = await self._freeze(*key, freeze)
            return StateUpdate(_own(key[1], before), False, 0, _repairs(current), b"", before, created)
        raw = _stored_bytes(changed)
        expected = None if current is None else current.stored.token
        created, swapped = await self._freeze_and_swap(*key, freeze, raw, expected)
        if self._landed(key, changed, raw, swapped):
            return StateUpdate(changed.copy(), True, 0, _repairs(current), raw, before, created)
        current = self._lost(key, 1, expected, swapped[1])
        return StateUpdate(
            _own(key[1], current and current.state), False, 1, _repairs(current), b"", before, created
        )

    def _landed(self, key: tuple[str, str], changed: UserAdoptionState, raw: bytes, swapped: Swapped) -> bool:
        """Whether the write landed -- or landed and only its reply was lost (our own token is
        there) -- remembering what is stored now."""
        ok, found = swapped
        token = token_of(raw)
        if not ok and (found is None or found.token != token):
            return False
        self._known.put(key, Current(Stored(raw, token), changed))
        return True

    def _lost(
        self, key: tuple[str, str], conflicts: int, expected: str | None, found: Stored | None
    ) -> Current | None:
        """A lost compare-and-set: counted, and the state the primary returned is the next base."""
        telemetry.cas_retry(conflicts, expected, None if found is None else found.token)
        return self._remember(key, found)

    def _user_slot(self, key: tuple[str, str]) -> _UserSlot:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _UserSlot(self._slots, key)
        return slot

    async def _swap(self, product_id: str, user_id: str, raw: bytes, expected: str | None) -> Swapped:
        result: Swapped = await self._run(
            "primary",
            "swap_state",
            lambda: self._primary.swap_state(product_id, user_id, raw, expected),
            _swap_outcome,
        )
        return result

    async def _freeze(self, product_id: str, user_id: str, freeze: tuple[str, bytes]) -> bool | AutoplayError:
        """The snapshot write alone (the change turned out to be a no-op), its error in its place."""
        try:
            created: bool = await self._run(
                "primary",
                "create_snapshot",
                lambda: self._primary.create_snapshot(product_id, user_id, *freeze),
                lambda new: Outcome.OK if new else Outcome.DUPLICATE,
            )
        except AutoplayError as exc:
            return exc
        return created

    async def _freeze_and_swap(
        self, product_id: str, user_id: str, freeze: tuple[str, bytes], raw: bytes, expected: str | None
    ) -> tuple[bool | AutoplayError, Swapped]:
        """The snapshot write, then the first compare-and-set, in one round trip."""

        def outcome(result: tuple[bool | AutoplayError, Swapped | AutoplayError]) -> Outcome:
            created, swapped = result
            if isinstance(created, AutoplayError) or isinstance(swapped, AutoplayError):
                return Outcome.ERROR
            return _swap_outcome(swapped)

        bundled = self._primary.freeze_and_swap  # type: ignore[attr-defined]
        created, swapped = await self._run(
            "primary",
            "freeze_and_swap",
            lambda: bundled(product_id, user_id, freeze, raw, expected),
            outcome,
        )
        if isinstance(swapped, AutoplayError):
            raise swapped
        return created, swapped
