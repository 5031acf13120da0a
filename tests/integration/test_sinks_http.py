"""The PostHog and Amplitude sinks, on their official SDKs, against a real HTTP server.

The ``recording_http_server`` fixture records what each SDK really sends and
can answer 500 / 400, hang, or stop listening. The tests assert the exact
events and properties, the idempotency keys, that nothing else was sent, that
a failing sink changes neither the outcome nor the latency of a session
start / end, that failures and recoveries show up in ``adapter.delivery``,
and that under load every event is accounted for.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import amplitude
import amplitude.constants
import posthog
import posthog.request
import pytest

from autoplay_obs.errors import ConfigurationError, MissingDependencyError
from autoplay_obs.storage import InMemoryStorageAdapter, StorageManager, end_session, start_session
from autoplay_obs.storage.adapters._analytics import DeliveryLedger, session_event_key
from autoplay_obs.storage.adapters.amplitude import AmplitudeStorageAdapter
from autoplay_obs.storage.adapters.posthog import PostHogDeliveryHook, PostHogStorageAdapter
from autoplay_obs.user_adoption_state import MasteryLevel, SessionSnapshot, UserAdoptionState

PH_PATH = "/batch/"
AMP_PATH = "/2/httpapi"
T0 = 1_700_000_000.0
SDK_TIMEOUT = 1.0  # both SDKs' request timeout in these tests; a "hang" lasts longer
OUTCOMES = ("enqueued", "delivered", "failed", "dropped", "in_flight")


@pytest.fixture(autouse=True)
def short_amplitude_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Amplitude's request timeout is a module constant (10 s), not a client option."""
    monkeypatch.setattr(amplitude.constants, "CONNECTION_TIMEOUT", SDK_TIMEOUT)


def make_posthog(server: Any, **options: Any) -> PostHogStorageAdapter:
    settings: dict[str, Any] = {
        "api_key": "phc_test",
        "host": server.url,
        "flush_interval": 0.05,
        "flush_at": 50,
        "max_retries": 0,
        "timeout": SDK_TIMEOUT,
        "close_timeout": 3.0,
    }
    settings.update(options)
    return PostHogStorageAdapter(**settings)


def make_amplitude(server: Any, **options: Any) -> AmplitudeStorageAdapter:
    settings: dict[str, Any] = {
        "api_key": "amp_test",
        "server_url": server.url + AMP_PATH,
        "flush_interval": 0.05,
        "flush_at": 100,
        "max_retries": 0,
        "close_timeout": 3.0,
    }
    settings.update(options)
    return AmplitudeStorageAdapter(**settings)


def posthog_events(server: Any) -> list[dict[str, Any]]:
    return [event for r in server.requests if r.path == PH_PATH for event in r.json["batch"]]


def amplitude_events(server: Any) -> list[dict[str, Any]]:
    return [event for r in server.requests if r.path == AMP_PATH for event in r.json["events"]]


def own(properties: dict[str, Any]) -> dict[str, Any]:
    """Our properties, without the ones the PostHog SDK adds (all ``$``-prefixed)."""
    return {k: v for k, v in properties.items() if not k.startswith("$")}


def totals(adapter: PostHogStorageAdapter | AmplitudeStorageAdapter) -> dict[str, int]:
    return {k: v for k, v in adapter.delivery.totals().items() if k in OUTCOMES}


def reasons(adapter: PostHogStorageAdapter | AmplitudeStorageAdapter, outcome: str) -> dict[str, int]:
    return {r: n for (o, r), n in adapter.delivery.snapshot().items() if o == outcome and n}


def assert_balanced(adapter: PostHogStorageAdapter | AmplitudeStorageAdapter) -> dict[str, int]:
    counts = totals(adapter)
    assert counts["enqueued"] == (
        counts["delivered"] + counts["failed"] + counts["dropped"] + counts["in_flight"]
    ), counts
    return counts


def rich_state() -> UserAdoptionState:
    state = UserAdoptionState(user_id="u_1", first_seen_at=T0, last_updated_at=T0)
    state.set_journey_state("onboarded")
    state.set_mastery(rating=7, level=MasteryLevel.PROFICIENT, description="fast")
    state.onboarding.upsert_workflow_progress("create_project", status="completed", confidence=1, now=T0)
    state.onboarding.upsert_workflow_progress("invite_team", status="in_progress", confidence=0.5, now=T0)
    state.onboarding.summary = "Created a project; inviting the team next."
    state.onboarding.completion_rate = 0.5
    state.onboarding.mark_onboarding_complete(now=T0 + 10)
    state.sessions.count = 3
    return state


def snapshot_of(state: UserAdoptionState, session_id: str, number: int, at: float) -> SessionSnapshot:
    return SessionSnapshot.from_adoption_state(
        state,
        session_id=session_id,
        session_number=number,
        started_at=at - 90.0,
        catalog_workflow_ids=["create_project", "invite_team", "configure_columns"],
        now=at,
    )


def expected_user_properties(prefix: str) -> dict[str, Any]:
    values = {
        "product_id": "prod_1",
        "journey_state": "onboarded",
        "mastery_level": "proficient",
        "mastery_rating": 7,
        "is_onboarded": True,
        "onboarding_summary": "Created a project; inviting the team next.",
        "completion_rate": 0.5,
        "session_count": 3,
        "completed_workflows": ["create_project"],
        "in_progress_workflows": ["invite_team"],
    }
    return {prefix + k: v for k, v in values.items()}


EXPECTED_SESSION_PROPERTIES = {
    "product_id": "prod_1",
    "session_id": "sess_abc",
    "session_number": 4,
    "duration_s": 90.0,
    "completion_rate": 0.3333,
    "completed_workflow_ids": ["create_project"],
    "in_progress_workflow_ids": ["invite_team"],
    "mastery_level": "proficient",
    "reached_onboarding_complete": True,
}


# ------------------------------------------------------------------ exact payloads


@pytest.mark.parametrize("prefix", [None, "ap"])
async def test_posthog_sends_exactly_the_person_properties_and_session_event(
    recording_http_server: Any, prefix: str | None
) -> None:
    server = recording_http_server
    sink = make_posthog(server, property_prefix=prefix)
    state = rich_state()
    snapshot = snapshot_of(state, "sess_abc", 4, T0 + 600)
    await sink.save_user_state("prod_1", "u_1", state.to_dict())
    await sink.save_session_snapshot("prod_1", "u_1", "sess_abc", snapshot.to_dict())
    assert await sink.flush(5)
    await sink.aclose()

    assert {(r.method, r.path) for r in server.requests} == {("POST", PH_PATH)}
    assert all(r.json["api_key"] == "phc_test" for r in server.requests)
    identify, session = sorted(posthog_events(server), key=lambda e: e["event"])
    assert identify["event"] == "$set"
    assert identify["distinct_id"] == "u_1"
    assert identify["$set"] == expected_user_properties("ap_" if prefix else "")
    assert own(identify["properties"]) == {}
    assert uuid.UUID(identify["uuid"])

    assert session["event"] == "autoplay_session_captured"
    assert session["distinct_id"] == "u_1"
    assert own(session["properties"]) == EXPECTED_SESSION_PROPERTIES  # event properties: never prefixed
    assert session["uuid"] == session_event_key("prod_1", "u_1", "sess_abc")
    assert session["timestamp"] == "2023-11-14T22:23:20+00:00"  # the snapshot's captured_at
    assert totals(sink) == {"enqueued": 2, "delivered": 2, "failed": 0, "dropped": 0, "in_flight": 0}
    assert reasons(sink, "delivered") == {"inferred": 2}


@pytest.mark.parametrize("prefix", [None, "ap"])
async def test_amplitude_sends_exactly_the_identify_and_session_event(
    recording_http_server: Any, prefix: str | None
) -> None:
    server = recording_http_server
    sink = make_amplitude(server, property_prefix=prefix)
    state = rich_state()
    snapshot = snapshot_of(state, "sess_abc", 4, T0 + 600)
    await sink.save_user_state("prod_1", "u_1", state.to_dict())
    await sink.save_session_snapshot("prod_1", "u_1", "sess_abc", snapshot.to_dict())
    assert await sink.flush(5)
    await sink.aclose()

    assert {(r.method, r.path) for r in server.requests} == {("POST", AMP_PATH)}
    for request in server.requests:
        assert set(request.json) == {"api_key", "events", "options"}
        assert request.json["api_key"] == "amp_test"
        assert request.json["options"] == {"min_id_length": 1}
    identify, session = sorted(amplitude_events(server), key=lambda e: e["event_type"])
    assert set(identify) == {"event_type", "user_id", "user_properties", "insert_id", "time", "library"}
    assert identify["event_type"] == "$identify"
    assert identify["user_id"] == "u_1"
    assert identify["user_properties"] == {"$set": expected_user_properties("ap_" if prefix else "")}
    assert uuid.UUID(identify["insert_id"])

    assert set(session) == {"event_type", "user_id", "event_properties", "insert_id", "time", "library"}
    assert session["event_type"] == "autoplay_session_captured"
    assert session["user_id"] == "u_1"
    assert session["event_properties"] == EXPECTED_SESSION_PROPERTIES
    assert session["insert_id"] == session_event_key("prod_1", "u_1", "sess_abc")
    assert session["time"] == int((T0 + 600) * 1000)
    assert totals(sink) == {"enqueued": 2, "delivered": 2, "failed": 0, "dropped": 0, "in_flight": 0}
    assert reasons(sink, "delivered") == {"acknowledged": 2}


def test_session_keys_are_deterministic_uuids_that_never_collide() -> None:
    key = session_event_key("prod_1", "u_1", "sess_abc")
    assert key == session_event_key("prod_1", "u_1", "sess_abc")
    assert uuid.UUID(key).version == 5
    tricky = [("a:b", "c", "d"), ("a", "b:c", "d"), ("a", "b", "c:d"), ('a","b', "c", "d"), ("a", "b", "c")]
    assert len({session_event_key(*ids) for ids in tricky}) == len(tricky)


def test_ledger_settles_each_event_once_across_threads() -> None:
    ledger = DeliveryLedger("test")

    def work(worker: int) -> None:
        for n in range(500):
            key = f"{worker}-{n}"
            ledger.begin(key)
            ledger.settle(key, "delivered" if n % 2 else "failed", "" if n % 2 else "http_500")
            ledger.settle(key, "delivered")  # a second report of the same event is not counted

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ledger.begin("dup")
    ledger.begin("dup")
    ledger.begin("left")
    ledger.settle("dup", "delivered")
    assert ledger.write_off("unsent_at_close") == 2
    ledger.settle("left", "delivered")  # arrives after the write-off: late, not delivered
    ledger.settle("someone-elses", "failed", "http_500")  # a shared client's other events: ignored
    assert ledger.snapshot() == {
        ("enqueued", ""): 4003,
        ("delivered", ""): 2001,
        ("failed", "http_500"): 2000,
        ("dropped", "unsent_at_close"): 2,
        ("late", "delivered"): 1,
        ("in_flight", ""): 0,
    }


async def test_reads_return_none_and_constructor_checks(recording_http_server: Any) -> None:
    for sink in (make_posthog(recording_http_server), make_amplitude(recording_http_server)):
        assert await sink.get_user_state("p", "u") is None
        assert await sink.get_session_snapshot("p", "u", "s") is None
        assert sink.describe()["server.address"] == "127.0.0.1"
        await sink.aclose()
    eu_amp = AmplitudeStorageAdapter(api_key="k", server_zone="EU")
    eu_ph = PostHogStorageAdapter(api_key="k", host="https://eu.i.posthog.com")
    assert eu_amp.describe()["server.address"] == "api.eu.amplitude.com"
    assert eu_ph.describe()["server.address"] == "eu.i.posthog.com"
    await eu_amp.aclose()  # nothing queued: nothing is sent anywhere
    await eu_ph.aclose()
    with pytest.raises(ConfigurationError):
        PostHogStorageAdapter()
    with pytest.raises(ConfigurationError):
        AmplitudeStorageAdapter(api_key="k", client=object())
    assert recording_http_server.requests == []


@pytest.mark.parametrize(
    ("module", "build"),
    [
        ("posthog", lambda: PostHogStorageAdapter(api_key="k")),
        ("amplitude", lambda: AmplitudeStorageAdapter(api_key="k")),
    ],
)
def test_missing_sdk_names_the_analytics_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, build: Any
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"autoplay-obs\[analytics\]") as caught:
        build()
    assert caught.value.extra == "analytics"


async def test_injected_clients_are_used_hooked_and_left_open(recording_http_server: Any) -> None:
    server = recording_http_server
    server.set_behaviour(PH_PATH, status=500)
    seen: list[int] = []
    hook = PostHogDeliveryHook(then=lambda e, b: seen.append(len(b)))
    ph_client = posthog.Posthog("phc_own", host=server.url, flush_interval=0.05, max_retries=0, on_error=hook)
    amp_client = amplitude.Amplitude(
        "amp_own", amplitude.Config(server_url=server.url + AMP_PATH, flush_interval_millis=50)
    )
    ph = PostHogStorageAdapter(client=ph_client, on_error_hook=hook)
    amp = AmplitudeStorageAdapter(client=amp_client)
    snapshot = snapshot_of(UserAdoptionState(user_id="user_1"), "s1", 1, T0)
    for sink in (ph, amp):
        await sink.save_session_snapshot("p", "user_1", "s1", snapshot.to_dict())
    await ph.flush(5)
    await amp.flush(5)
    assert reasons(ph, "failed") == {"http_500": 1}
    assert seen == [1]  # the client's own on_error still runs
    assert reasons(amp, "delivered") == {"acknowledged": 1}
    await ph.aclose()
    await amp.aclose()
    assert not amp_client.configuration.opt_out  # not shut down: the caller owns it
    ph_client.shutdown()
    amp_client.shutdown()


# -------------------------------------------------------- failures, latency, recovery


async def run_sessions(
    storage: StorageManager, users: list[str]
) -> tuple[list[Any], list[float], list[float]]:
    """A session start and end per user; the outcomes and the latency of each call."""
    results, starts, ends = [], [], []
    for n, user_id in enumerate(users):
        session_id = f"sess_{n}"
        began = time.perf_counter()
        opened = await start_session("prod_1", user_id, session_id, storage)
        starts.append(time.perf_counter() - began)
        snapshot = snapshot_of(opened.state, session_id, opened.state.sessions_count + 1, T0 + n)
        began = time.perf_counter()
        ended = await end_session("prod_1", user_id, snapshot, storage, summary=f"summary {n}")
        ends.append(time.perf_counter() - began)
        results.append(
            (
                opened.persisted,
                opened.degraded,
                ended.persisted,
                ended.error,
                ended.snapshot_created,
                ended.duplicate,
                ended.state.sessions_count,
                ended.state.onboarding.summary,
            )
        )
    return results, starts, ends


def ms(values: list[float]) -> str:
    return f"p50={statistics.median(values) * 1000:.2f}ms max={max(values) * 1000:.2f}ms"


FAILURES = {
    "healthy": None,
    "http_500": "http_500",
    "http_400": "http_400",
    "refused": "connection_error",
    "hang": "timeout",
}


@pytest.mark.parametrize("mode", list(FAILURES))
async def test_failing_sinks_change_neither_outcome_nor_latency(
    recording_http_server: Any, mode: str
) -> None:
    server = recording_http_server
    users = [f"user_{i}" for i in range(8)]
    baseline = StorageManager([InMemoryStorageAdapter()])
    expected, base_starts, base_ends = await run_sessions(baseline, users)

    ph, amp = make_posthog(server), make_amplitude(server)
    if mode in ("http_500", "http_400"):
        server.set_behaviour(status=int(mode[-3:]))
    elif mode == "hang":
        server.set_behaviour(delay=SDK_TIMEOUT + 2.0)
    elif mode == "refused":
        server.stop()
    storage = StorageManager([InMemoryStorageAdapter(), ph, amp])
    got, starts, ends = await run_sessions(storage, users)
    await storage.drain()
    print(
        f"\n[latency] {mode:8s} sinks: start {ms(starts)} end {ms(ends)} | "
        f"no sinks: start {ms(base_starts)} end {ms(base_ends)}"
    )
    assert got == expected  # same outcome as with no sinks at all
    # A correctness bound, not a benchmark: far below one SDK timeout, close to no sinks.
    assert max(starts + ends) < 0.25
    assert statistics.median(ends) < statistics.median(base_ends) + 0.02

    # Every start and end mirrors the state, every end sends its session: 3 events per user.
    await asyncio.gather(ph.flush(SDK_TIMEOUT * 4), amp.flush(SDK_TIMEOUT * 4))
    for sink in (ph, amp):
        counts = assert_balanced(sink)
        assert counts["enqueued"] == 3 * len(users)
        if FAILURES[mode] is None:
            assert counts["delivered"] == counts["enqueued"], sink.delivery.snapshot()
        else:
            assert reasons(sink, "failed") == {FAILURES[mode]: counts["enqueued"]}, sink.delivery.snapshot()
            assert counts["delivered"] == 0

    # The endpoint comes back: what is sent now is counted as delivered.
    server.reset_behaviour()
    server.start()
    await run_sessions(storage, ["back_1", "back_2"])
    await storage.drain()
    await asyncio.gather(ph.flush(SDK_TIMEOUT * 4), amp.flush(SDK_TIMEOUT * 4))
    failed_before = 0 if FAILURES[mode] is None else 3 * len(users)
    delivered_before = 3 * len(users) - failed_before
    for sink in (ph, amp):
        counts = assert_balanced(sink)
        assert counts["delivered"] == delivered_before + 6, sink.delivery.snapshot()
        assert counts["failed"] == failed_before
    received_ph = {e["uuid"] for e in posthog_events(server) if e["distinct_id"].startswith("back_")}
    received_amp = {e["insert_id"] for e in amplitude_events(server) if e["user_id"].startswith("back_")}
    assert len(received_ph) == len(received_amp) == 6
    await storage.aclose()
    for sink in (ph, amp):
        assert assert_balanced(sink)["in_flight"] == 0


async def test_events_retried_across_an_outage_are_delivered(recording_http_server: Any) -> None:
    server = recording_http_server
    ph = make_posthog(server, max_retries=3)  # the SDK backs off 1 s, then 2 s
    amp = make_amplitude(server, max_retries=10)  # 100 ms, 100 ms, 200 ms, ...
    storage = StorageManager([InMemoryStorageAdapter(), ph, amp])
    server.stop()
    await run_sessions(storage, ["user_a"])
    await storage.drain()
    await asyncio.sleep(0.3)  # first attempts are refused
    assert server.requests == []
    server.start()
    await asyncio.gather(ph.flush(6), amp.flush(6))
    for sink in (ph, amp):
        assert totals(sink) == {"enqueued": 3, "delivered": 3, "failed": 0, "dropped": 0, "in_flight": 0}
    assert len({e["uuid"] for e in posthog_events(server)}) == 3
    assert len({e["insert_id"] for e in amplitude_events(server)}) == 3
    await storage.aclose()


async def test_full_queues_drop_and_close_is_bounded_when_the_endpoint_hangs(
    recording_http_server: Any,
) -> None:
    server = recording_http_server
    server.set_behaviour(delay=30.0)  # hangs until the fixture stops the server
    ph = make_posthog(server, max_queue_size=2, flush_at=1, close_timeout=1.5)
    amp = make_amplitude(server, max_queue_size=2, close_timeout=1.5)
    snapshot = snapshot_of(UserAdoptionState(user_id="user_1"), "s", 1, T0)
    for sink in (ph, amp):
        for n in range(10):
            await sink.save_session_snapshot("p", "user_1", f"s{n}", snapshot.to_dict())
        assert reasons(sink, "dropped").get("queue_full", 0) >= 5, sink.delivery.snapshot()
    began = time.perf_counter()
    await asyncio.gather(ph.aclose(), amp.aclose())
    assert time.perf_counter() - began < 1.5 + 0.5
    for sink in (ph, amp):
        counts = assert_balanced(sink)
        assert counts["enqueued"] == 10 and counts["in_flight"] == 0 and counts["delivered"] == 0
        await sink.save_session_snapshot("p", "user_1", "after", snapshot.to_dict())
        assert reasons(sink, "dropped")["closed"] == 1


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param({"status": 200, "body": b"<html>ok</html>"}, id="200-not-json"),
        pytest.param({"close": True}, id="connection-dropped-after-request"),
    ],
)
async def test_sdk_blind_spots_are_written_off_never_counted_delivered(
    recording_http_server: Any, behaviour: dict[str, Any]
) -> None:
    """Amplitude loses these events without a callback; PostHog reports the dropped connection."""
    server = recording_http_server
    server.set_behaviour(**behaviour)
    ph = make_posthog(server, close_timeout=1.0)
    amp = make_amplitude(server, close_timeout=1.0)
    snapshot = snapshot_of(UserAdoptionState(user_id="user_1"), "s1", 1, T0)
    for sink in (ph, amp):
        await sink.save_user_state("p", "user_1", UserAdoptionState(user_id="user_1").to_dict())
        await sink.save_session_snapshot("p", "user_1", "s1", snapshot.to_dict())
    assert not await amp.flush(0.5)
    assert totals(amp)["in_flight"] == 2  # unknown, not delivered: the SDK never said
    await asyncio.gather(ph.aclose(), amp.aclose())
    assert server.requests, "the SDKs did post"
    assert reasons(amp, "dropped") == {"unsent_at_close": 2}
    expected_ph = (
        {"delivered": {"inferred": 2}} if "status" in behaviour else {"failed": {"connection_error": 2}}
    )
    for outcome, expected in expected_ph.items():
        assert reasons(ph, outcome) == expected, ph.delivery.snapshot()
    for sink in (ph, amp):
        assert assert_balanced(sink)["in_flight"] == 0


# --------------------------------------------------------------------------- load


async def test_two_thousand_session_ends_are_all_accounted_for(recording_http_server: Any) -> None:
    server = recording_http_server
    ph = make_posthog(server, flush_interval=0.2, flush_at=100, close_timeout=15.0)
    amp = make_amplitude(server, flush_interval=0.2, flush_at=200, close_timeout=15.0)
    storage = StorageManager([InMemoryStorageAdapter(), ph, amp])
    ends = [
        (
            f"user_{i % 200}",
            snapshot_of(UserAdoptionState(user_id=f"user_{i % 200}"), f"sess_{i}", i // 200 + 1, T0 + i),
        )
        for i in range(2000)
    ]

    began = time.perf_counter()
    for chunk in range(0, len(ends), 100):
        await asyncio.gather(
            *(end_session("prod_1", user_id, snap, storage) for user_id, snap in ends[chunk : chunk + 100])
        )
    elapsed = time.perf_counter() - began
    await storage.aclose()
    closed = time.perf_counter() - began - elapsed

    received = {
        "posthog": {e["uuid"] for e in posthog_events(server)},
        "amplitude": {e["insert_id"] for e in amplitude_events(server)},
    }
    for sink in (ph, amp):
        counts = assert_balanced(sink)
        path = PH_PATH if sink is ph else AMP_PATH
        posts = sum(r.path == path for r in server.requests)
        print(f"\n[load] {sink.name}: {sink.delivery.snapshot()} in {posts} requests")
        assert counts["in_flight"] == 0
        assert counts["delivered"] + counts["failed"] + counts["dropped"] == counts["enqueued"] == 4000
        assert counts["delivered"] == 4000  # a healthy local endpoint: nothing may be lost
        assert len(received[sink.name]) == counts["delivered"]  # every delivered event arrived, once keyed
    sessions = {session_event_key("prod_1", user_id, snap.session_id) for user_id, snap in ends}
    assert sessions <= received["posthog"] and sessions <= received["amplitude"]
    print(f"[load] 2000 session ends in {elapsed:.2f}s, close (flush + shutdown) in {closed:.2f}s")


# --------------------------------------------------------------------- seed snippet

SEED_SNIPPET = """
import os
from autoplay_obs.storage import StorageManager, RedisStorageAdapter
from autoplay_obs.storage.adapters.amplitude import AmplitudeStorageAdapter
from autoplay_obs.storage.adapters.posthog import PostHogStorageAdapter

storage = StorageManager([
    RedisStorageAdapter(redis_url=os.environ["REDIS_URL"]),  # read + write
    AmplitudeStorageAdapter(api_key=os.environ["AMPLITUDE_API_KEY"]),  # write-only
    PostHogStorageAdapter(api_key=os.environ["POSTHOG_API_KEY"]),      # write-only
])
"""


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Fail any connection that would leave the machine; the attempts are listed."""
    attempts: list[object] = []
    connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and host not in ("127.0.0.1", "::1", "localhost"):
            attempts.append(address)
            raise OSError(f"test forbids a connection to {address}")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield attempts


async def test_seed_snippet_builds_write_only_sinks(
    recording_http_server: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch, loopback_only: list[object]
) -> None:
    server = recording_http_server
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("AMPLITUDE_API_KEY", "amp_seed")
    monkeypatch.setenv("POSTHOG_API_KEY", "phc_seed")
    # The snippet names no host: point the SDKs' defaults here, so nothing could leave.
    monkeypatch.setattr(posthog.request, "DEFAULT_HOST", server.url)
    monkeypatch.setitem(amplitude.constants.SERVER_URL["US"], "v2", server.url + AMP_PATH)
    namespace: dict[str, Any] = {}
    exec(compile(SEED_SNIPPET, "<seed snippet>", "exec"), namespace)
    storage = namespace["storage"]

    _, amp, ph = storage.adapters
    assert isinstance(amp, AmplitudeStorageAdapter) and isinstance(ph, PostHogStorageAdapter)
    assert storage.sinks == [amp, ph]
    for sink in (amp, ph):
        assert sink.describe()["server.address"] == "127.0.0.1"
        assert await sink.get_user_state("prod_1", "u_123") is None
        assert await sink.get_session_snapshot("prod_1", "u_123", "sess_abc") is None
        sink.close_timeout = 1.0
    assert await storage.get_user_state("prod_1", "u_123") is None  # the real Redis is empty
    began = time.perf_counter()
    await storage.aclose()
    assert time.perf_counter() - began < 2 * 1.0 + 0.5
    assert server.requests == [] and loopback_only == []
    assert os.environ["POSTHOG_API_KEY"] == "phc_seed"
