"""A session start re-encodes only the state's tail: the splice must be byte for byte encode()'s output.

The manager trusts ``splice_tail`` on its own writes, so any difference from a
full ``encode`` would be a silently different stored document.
"""

from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, given, settings
from test_codec_properties import states

from autoplay_obs.storage import InMemoryStorageAdapter, StorageManager, end_session, start_session
from autoplay_obs.storage._protocol import revision_head, splice_tail
from autoplay_obs.user_adoption_state import SessionSnapshot, UserAdoptionState, encode
from autoplay_obs.user_adoption_state._models import _StateTail, encode_tail

OLD, NEW = "a" * 32, "b" * 32


def spliced_after_open(state: UserAdoptionState, session_id: str) -> tuple[bytes | None, bytes]:
    """(the splice, a full encode) of ``state`` after a session start changed it."""
    state.revision = OLD
    previous = encode(state)
    state.set_current_session(session_id)
    state.revision = NEW
    tail = encode_tail(state)
    assert tail is not None
    return splice_tail(previous, revision_head(NEW), *tail), encode(state)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=states)
def test_a_spliced_start_is_byte_for_byte_a_full_encode(state: UserAdoptionState) -> None:
    spliced, full = spliced_after_open(state, "sess_next")
    assert spliced == full


def test_look_alike_keys_and_values_do_not_move_the_splice() -> None:
    """The tail key inside metadata, and quotes in a session id, cannot be taken for the tail."""
    trap = ',"last_updated_at":1,"sessions":{}}'
    state = UserAdoptionState(user_id="u", metadata={"last_updated_at": trap, trap: [trap]})
    state.set_current_session(trap)
    spliced, full = spliced_after_open(state, f'x"{trap}\\')
    assert spliced == full
    assert msgspec.json.decode(full)["metadata"] == {"last_updated_at": trap, trap: [trap]}


def test_the_tail_is_the_last_fields_of_the_state_in_order() -> None:
    """A field added after ``sessions`` must join the tail, or the splice would drop it."""
    names = UserAdoptionState.__struct_encode_fields__
    assert _StateTail.__struct_encode_fields__ == names[-len(_StateTail.__struct_fields__) :]


def test_a_document_that_is_not_ours_is_never_spliced() -> None:
    tail = encode_tail(UserAdoptionState(user_id="u"))
    assert tail is not None
    assert splice_tail(b'{"_v":1,"user_id":"u"}', revision_head(NEW), *tail) is None


async def test_starts_after_our_own_writes_store_exactly_what_encode_writes() -> None:
    """Through the manager: every stored document is its own full encoding, start after end."""
    adapter = InMemoryStorageAdapter()
    storage = StorageManager([adapter])
    for n in range(1, 4):
        started = await start_session("p", "u", f"s{n}", storage)
        assert started.persisted
        stored = await adapter.load_state("p", "u")
        assert stored is not None
        assert stored.raw == encode(msgspec.json.decode(stored.raw, type=UserAdoptionState))
        assert stored.raw == encode(started.state)
        snapshot = SessionSnapshot.from_adoption_state(
            started.state, session_id=f"s{n}", session_number=n, started_at=1e9, catalog_workflow_ids=[]
        )
        assert (await end_session("p", "u", snapshot, storage, summary="x")).persisted
