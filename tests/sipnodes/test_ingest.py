"""The ingest consumer: parsing, idempotent writes, dead letters, pending and claimed entries.

Events are made with the engine's own code (`Cdr.data()`, `RegistrationChange.data()`,
`Event.fields()`), so a change in the format the workers write shows up here.
"""

import contextlib
import datetime
import re
import signal
import time
import uuid

import pytest
import redis
from django.core.management import call_command
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipnodes.engine.cdr import CallTag, Cdr
from sipnodes.engine.events import STREAM_KEY, Event, make_event
from sipnodes.engine.registrar import RegistrationChange
from sipnodes.ingest import (
    DEAD_LETTER_KEY,
    BadEvent,
    CdrEvent,
    IgnoredEvent,
    IngestConsumer,
    RegistrationEvent,
    ingest_batch,
    parse_entry,
)
from sipnodes.models import Cdr as CdrRow
from sipnodes.models import VirtualServer
from tenants.models import User

REDIS_URL = "redis://127.0.0.1:6379/12"
T0 = 1_790_000_000.0  # 2026-09-21, a fixed wall-clock time


def cdr_event(server_id: int, start: float = T0, **changes: object) -> Event:
    cdr = Cdr(
        uuid=str(uuid.uuid4()),
        call_id=f"{uuid.uuid4().hex}@127.0.0.1",
        caller="100",
        dialed="101",
        callee="101",
        route="local",
        start=start,
        ring=start + 0.2,
        answer=start + 2.0,
        release=start + 32.6,
        released_by="caller",
        status=200,
        call_tag=CallTag.CALLER_BYE,
        cause=16,
    )
    data = {**cdr.data(), **changes}
    return make_event("cdr", server_id, start + 32.6, data, event_id=cdr.uuid)


def registration_event(server_id: int, ts: float, action: str, count: int) -> Event:
    change = RegistrationChange(action, "100", "sip:100@127.0.0.1:5070", 3600, count)
    return make_event("registration", server_id, ts, change.data())


def entry(event: Event, entry_id: bytes = b"1-0") -> tuple[bytes, dict[bytes, bytes]]:
    return entry_id, {k.encode(): v.encode() for k, v in event.fields().items()}


def entries(*events: Event) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return [entry(e, f"{i + 1}-0".encode()) for i, e in enumerate(events)]


def with_data(event: Event, **changes: object) -> Event:
    return Event(event.type, event.server_id, event.event_id, event.ts, {**event.data, **changes})


def at(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC)


@pytest.fixture
def server(tenant_a) -> VirtualServer:
    return tenant_a.server


# ---- parsing (no database) ---------------------------------------------------


def test_a_cdr_from_the_engine_parses_into_the_model_columns():
    event = cdr_event(7)
    parsed = parse_entry(entry(event)[1])
    assert isinstance(parsed, CdrEvent)
    assert parsed.server_id == 7
    assert str(parsed.uuid) == event.event_id
    assert parsed.started_at == at(T0)
    assert parsed.answered_at == at(T0 + 2.0)
    assert parsed.released_at == at(T0 + 32.6)
    assert parsed.talk_seconds == 31  # 30.6 s, rounded half up
    assert (parsed.call_tag, parsed.cause, parsed.fci) == (1, 16, "callTag=1;cause=16")
    assert (parsed.status, parsed.answered, parsed.released_by) == (200, True, "caller")


def test_an_unanswered_cdr_has_no_answer_time():
    event = cdr_event(7, answer=None, talk_seconds=0.0, answered=False, status=486)
    parsed = parse_entry(entry(event)[1])
    assert isinstance(parsed, CdrEvent)
    assert (parsed.answered_at, parsed.answered, parsed.talk_seconds) == (None, False, 0)


def test_a_registration_keeps_its_time_action_and_count():
    parsed = parse_entry(entry(registration_event(7, T0, "register", 3))[1])
    assert parsed == RegistrationEvent(
        server_id=7, at=at(T0), action="register", registered_clients=3
    )


@pytest.mark.parametrize("type_", ["call", "status"])
def test_call_and_status_events_are_recognised_and_ignored(type_):
    parsed = parse_entry(entry(make_event(type_, 7, T0, {"state": "started"}))[1])
    assert parsed == IgnoredEvent(server_id=7, type=type_)


def _cdr_fields(**data_changes: object) -> dict[bytes, bytes]:
    return entry(with_data(cdr_event(7), **data_changes))[1]


def _replace(fields: dict[bytes, bytes], **changes: bytes | None) -> dict[bytes, bytes]:
    out = dict(fields)
    for name, value in changes.items():
        if value is None:
            del out[name.encode()]
        else:
            out[name.encode()] = value
    return out


_GOOD = entry(cdr_event(7))[1]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "empty"),
        (_replace(_GOOD, type=None), "missing field 'type'"),
        (_replace(_GOOD, type=b"fax"), "unknown event type 'fax'"),
        (_replace(_GOOD, server_id=b"-3"), "server_id"),
        (_replace(_GOOD, server_id=b"99999999999999999999"), "server_id"),
        (_replace(_GOOD, event_id=b"not-a-uuid"), "event_id"),
        (_replace(_GOOD, event_id=str(uuid.uuid4()).encode()), "must be its uuid"),
        (_replace(_GOOD, ts=b"nan"), "ts"),
        (_replace(_GOOD, ts=b"1e300"), "ts"),
        (_replace(_GOOD, data=b"{not json"), "data is not JSON"),
        (_replace(_GOOD, data=b"[" * 100_000), "data is not JSON"),
        (_replace(_GOOD, data=b"[1, 2]"), "data is not a JSON object"),
        (_replace(_GOOD, type=b"\xff\xfe"), "not UTF-8"),
        (_cdr_fields(start="yesterday"), "start"),
        (_cdr_fields(start=None), "start"),
        (_cdr_fields(start="2026-09-21T10:00:00"), "no UTC offset"),
        (_cdr_fields(status=42), "status"),
        (_cdr_fields(status=True), "status"),
        (_cdr_fields(answered="yes"), "answered"),
        (_cdr_fields(caller="10\x000"), "NUL"),
        (_cdr_fields(caller="\ud800"), "not valid Unicode"),
        (_cdr_fields(caller=100), "caller is not a string"),
        (_cdr_fields(fci="callTag=one"), "fci part"),
        (_cdr_fields(fci="callTag=1;cause=300"), "Q.850"),
        (_cdr_fields(talk_seconds=-1), "talk_seconds"),
        (_cdr_fields(uuid="x"), "uuid"),
        (_cdr_fields(callee=None), "callee is not a string"),
        (entry(registration_event(7, T0, "reboot", 1))[1], "action"),
        (entry(registration_event(7, T0, "register", -1))[1], "registered_clients"),
    ],
)
def test_a_malformed_entry_is_a_bad_event_naming_what_is_wrong(fields, message):
    with pytest.raises(BadEvent, match=re.escape(message)):
        parse_entry(fields)


def test_over_long_text_is_cut_to_fit_rather_than_lost():
    parsed = parse_entry(_cdr_fields(caller="1" * 500, call_id="c" * 1000))
    assert isinstance(parsed, CdrEvent)
    assert (len(parsed.caller), len(parsed.call_id)) == (64, 255)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(sorted(cdr_event(7).data)), value=_json_values)
def test_any_value_in_any_cdr_field_parses_or_is_a_bad_event(field, value):
    try:
        parsed = parse_entry(_cdr_fields(**{field: value}))
    except BadEvent:
        return
    assert isinstance(parsed, CdrEvent)
    assert 0 <= parsed.talk_seconds < 2**31 and 100 <= parsed.status <= 699


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([b"type", b"server_id", b"event_id", b"ts", b"data"])
        | st.binary(max_size=8),
        st.binary(max_size=40),
    )
)
def test_arbitrary_bytes_never_crash_the_parser(fields):
    with contextlib.suppress(BadEvent):
        parse_entry(fields)


# ---- one batch, one transaction ---------------------------------------------------


def test_the_same_cdr_twice_gives_one_row(server):
    event = cdr_event(server.pk)
    ingest_batch(entries(event, event))
    ingest_batch(entries(event))
    row = CdrRow.objects.get()
    assert str(row.uuid) == event.event_id
    assert (row.server, row.caller, row.dialed, row.cause, row.call_tag) == (
        server,
        "100",
        "101",
        16,
        1,
    )


def test_a_batch_replayed_after_a_crash_adds_nothing(server):
    batch = entries(
        cdr_event(server.pk, T0),
        registration_event(server.pk, T0 + 1, "register", 2),
        cdr_event(server.pk, T0 + 5),
    )
    first = ingest_batch(batch)
    before = VirtualServer.objects.values().get(pk=server.pk)
    second = ingest_batch(batch)  # the commit happened, the XACK did not
    assert first == second
    assert (first.cdrs, first.registrations) == (2, 1)
    assert CdrRow.objects.count() == 2
    assert VirtualServer.objects.values().get(pk=server.pk) == before


def test_activity_times_never_move_backwards(server):
    ingest_batch(
        entries(
            cdr_event(server.pk, T0 + 100), registration_event(server.pk, T0 + 90, "register", 1)
        )
    )
    ingest_batch(
        entries(cdr_event(server.pk, T0), registration_event(server.pk, T0 + 10, "register", 1))
    )
    server.refresh_from_db()
    assert server.last_call_at == at(T0 + 100)
    assert server.last_registration_at == at(T0 + 90)
    assert CdrRow.objects.count() == 2  # the late CDR is still recorded


def test_only_a_register_counts_as_a_registration(server):
    ingest_batch(entries(registration_event(server.pk, T0, "unregister", 0)))
    ingest_batch(entries(registration_event(server.pk, T0 + 1, "expire", 0)))
    server.refresh_from_db()
    assert server.last_registration_at is None


def test_the_client_count_follows_the_newest_event_not_the_stream_order(server):
    ingest_batch(
        entries(
            registration_event(server.pk, T0 + 3, "register", 3),
            registration_event(server.pk, T0 + 1, "register", 1),
            registration_event(server.pk, T0 + 2, "register", 2),
        )
    )
    server.refresh_from_db()
    assert (server.registered_clients, server.last_registration_at) == (3, at(T0 + 3))

    ingest_batch(entries(registration_event(server.pk, T0 + 4, "unregister", 2)))
    server.refresh_from_db()
    assert server.registered_clients == 2

    # Read late (claimed from a consumer that died): older than the last REGISTER, so stale.
    ingest_batch(entries(registration_event(server.pk, T0 + 2.5, "unregister", 0)))
    server.refresh_from_db()
    assert server.registered_clients == 2


def test_a_late_unregister_never_moves_the_count_back(server):
    ingest_batch(entries(registration_event(server.pk, T0 + 5, "unregister", 1)))
    # Read late from another consumer: older than the count already applied.
    ingest_batch(entries(registration_event(server.pk, T0 + 4, "expire", 0)))
    server.refresh_from_db()
    assert (server.registered_clients, server.registered_clients_at) == (1, at(T0 + 5))


def test_worker_crashes_count_as_restarts_and_other_status_is_ignored(server):
    crash = make_event("status", server.pk, T0, {"state": "crashed", "pid": 4})
    started = make_event("status", server.pk, T0, {"state": "started"})
    result = ingest_batch(entries(crash, started, crash))
    server.refresh_from_db()
    assert server.restart_count == 2
    assert result.ignored == 1


def test_events_of_an_unknown_or_purged_server_are_skipped(server):
    result = ingest_batch(
        entries(
            cdr_event(server.pk),
            cdr_event(server.pk + 1000),
            registration_event(server.pk + 1000, T0, "register", 1),
        )
    )
    assert (result.cdrs, result.unknown_server) == (1, 2)
    assert list(CdrRow.objects.values_list("server_id", flat=True)) == [server.pk]


def test_a_bad_entry_is_reported_and_does_not_stop_the_good_ones(server):
    good = cdr_event(server.pk)
    result = ingest_batch([entry(good, b"1-0"), (b"2-0", {b"type": b"cdr"})])
    assert CdrRow.objects.count() == 1
    [bad] = result.bad
    assert bad.entry_id == b"2-0" and "server_id" in bad.error


# ---- the consumer, against Redis ---------------------------------------------------


@pytest.fixture
def stream():
    """A stream and dead-letter stream of this test's own in Redis database 12."""
    client = redis.Redis.from_url(REDIS_URL)
    key = f"test:ingest:{uuid.uuid4().hex}"
    yield client, key
    client.delete(key, f"{key}:dead")
    client.close()


def consumer(key: str, **kwargs: object) -> IngestConsumer:
    return IngestConsumer(
        redis_url=REDIS_URL, stream=key, dead_letter_stream=f"{key}:dead", **kwargs
    )


def add(client: redis.Redis, key: str, *events: Event) -> None:
    for event in events:
        client.xadd(key, event.fields())


def test_malformed_entries_go_to_the_dead_letter_stream_and_good_ones_are_written(server, stream):
    client, key = stream
    add(client, key, cdr_event(server.pk))
    client.xadd(key, {"type": "cdr", "server_id": str(server.pk), "data": "{}"})
    add(client, key, cdr_event(server.pk), make_event("status", server.pk, T0, {}))

    consumer(key).run(drain=True)

    assert CdrRow.objects.count() == 2
    [(_, dead)] = client.xrange(f"{key}:dead")
    assert dead[b"ingest_error"] == b"missing field 'event_id'"
    assert dead[b"type"] == b"cdr" and dead[b"ingest_entry_id"]
    assert client.xpending(key, "ingest")["pending"] == 0


def test_after_a_restart_its_own_pending_entries_are_ingested_first(server, stream):
    client, key = stream
    events = [cdr_event(server.pk, T0 + i) for i in range(5)]
    add(client, key, *events)
    client.xgroup_create(key, "ingest", id="0")
    client.xreadgroup("ingest", "host-1", {key: ">"}, count=3)  # read, then the process died

    consumer(key, name="host-1", batch_size=2).run(drain=True)

    assert CdrRow.objects.count() == 5
    assert client.xpending(key, "ingest")["pending"] == 0


def test_entries_of_a_dead_consumer_are_claimed_once_idle(server, stream):
    client, key = stream
    add(client, key, *(cdr_event(server.pk, T0 + i) for i in range(3)))
    client.xgroup_create(key, "ingest", id="0")
    client.xreadgroup("ingest", "dead-host-1", {key: ">"})
    time.sleep(0.05)

    consumer(key, name="host-2", claim_idle_ms=20).run(drain=True)

    assert CdrRow.objects.count() == 3
    assert client.xpending(key, "ingest")["pending"] == 0


def test_silent_consumers_that_hold_nothing_are_forgotten(server, stream):
    client, key = stream
    add(client, key, cdr_event(server.pk))
    client.xgroup_create(key, "ingest", id="0")
    client.xgroup_createconsumer(key, "ingest", "host-1")  # an earlier process, gone
    client.xreadgroup("ingest", "host-2", {key: ">"})  # holds an entry: kept until claimed
    time.sleep(0.05)

    consumer(key, name="host-3", forget_idle_ms=20).run(drain=True)

    names = {c["name"] for c in client.xinfo_consumers(key, "ingest")}
    assert names == {b"host-2", b"host-3"}


def test_a_fresh_stream_and_group_are_created(server, stream):
    client, key = stream
    consumer(key).run(drain=True)
    assert client.xinfo_groups(key)[0]["name"] == b"ingest"


def test_registration_events_reach_the_server_through_the_stream(server, stream):
    client, key = stream
    add(
        client,
        key,
        registration_event(server.pk, T0, "register", 1),
        registration_event(server.pk, T0 + 1, "register", 2),
        cdr_event(server.pk, T0 + 2),
    )
    consumer(key).run(drain=True)
    server.refresh_from_db()
    assert (server.registered_clients, server.last_registration_at, server.last_call_at) == (
        2,
        at(T0 + 1),
        at(T0 + 2),
    )


def test_the_command_drains_the_stream_then_exits_and_gives_back_the_signals(server):
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(STREAM_KEY, DEAD_LETTER_KEY)
    sigint_before = signal.getsignal(signal.SIGINT)
    try:
        add(client, STREAM_KEY, cdr_event(server.pk), cdr_event(server.pk), cdr_event(server.pk))
        with override_settings(REDIS_URL=REDIS_URL):
            call_command("ingest_events", "--once", "--batch-size", "2")
        assert CdrRow.objects.count() == 3
        assert client.xpending(STREAM_KEY, "ingest")["pending"] == 0
        assert signal.getsignal(signal.SIGINT) is sigint_before
    finally:
        client.delete(STREAM_KEY, DEAD_LETTER_KEY)
        client.close()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(field=st.sampled_from(sorted(cdr_event(7).data)), value=_json_values)
def test_whatever_the_parser_accepts_the_database_accepts(server, field, value):
    try:
        parse_entry(_cdr_fields(**{field: value}))
    except BadEvent:
        return
    event = with_data(cdr_event(server.pk), **{field: value})
    assert ingest_batch(entries(event)).cdrs == 1
    assert CdrRow.objects.filter(uuid=event.event_id).exists()


def test_ingested_cdrs_are_listed_read_only_in_the_admin(server, client):
    client.force_login(
        User.objects.create_superuser(username="op", email="op@example.com", password="x" * 12)
    )
    ingest_batch(entries(cdr_event(server.pk)))
    row = CdrRow.objects.get()

    listing = client.get("/admin/sipnodes/cdr/", {"q": row.call_id, "answered__exact": "1"})
    assert listing.status_code == 200
    assert listing.context["cl"].result_count == 1
    assert client.get("/admin/sipnodes/cdr/add/").status_code == 403
    change = client.get(f"/admin/sipnodes/cdr/{row.pk}/change/")
    assert change.status_code == 200 and b'name="_save"' not in change.content
