"""The ingest consumer: parsing, idempotent writes, dead letters, pending and claimed entries.

Events are made with the engine's own code (`Cdr.data()`, `RegistrationChange.data()`,
`make_event`, `Event.fields()`), so a change in what the workers write shows up here.
The contract itself (every type, every malformed field) is tested in
`tests/sipnodes/engine/test_events.py`.
"""

import contextlib
import dataclasses
import datetime
import json
import re
import signal
import uuid

import pytest
import redis
from django.core.management import call_command
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipnodes import features_services
from sipnodes.engine.events import (
    STREAM_KEY,
    CallData,
    CallSettingsData,
    CdrData,
    CrashData,
    Event,
    EventType,
    MalformedEvent,
    StatusData,
    make_event,
)
from sipnodes.engine.registrar import RegistrationChange
from sipnodes.ingest.batch import ingest_batch
from sipnodes.ingest.consumer import DEAD_LETTER_KEY, IngestConsumer
from sipnodes.ingest.parse import CDR_TIME_COLUMNS, cdr_columns, parse_entry
from sipnodes.models import Cdr as CdrRow
from sipnodes.models import LocalUser, VirtualServer
from tenants.models import User
from tests.factories import SAMPLE_T0 as T0
from tests.factories import sample_cdr_event
from tests.second_factor import verified_login
from tests.support import wait_for

REDIS_URL = "redis://127.0.0.1:6379/12"
IDLE_MS = 20  # the claim and forget thresholds of the tests on idle consumers


def registration_event(server_id: int, ts: float, action: str, count: int) -> Event:
    change = RegistrationChange(action, "100", "sip:100@127.0.0.1:5070", 3600, count)
    return make_event(change.data(), server_id, ts)


def status_event(server_id: int, ts: float, state: str, count: int) -> Event:
    return make_event(StatusData(state, "Acme PBX", count, 0), server_id, ts)


def entry(event: Event, entry_id: bytes = b"1-0") -> tuple[bytes, dict[bytes, bytes]]:
    return entry_id, {k.encode(): v.encode() for k, v in event.fields().items()}


def entries(*events: Event) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return [entry(e, f"{i + 1}-0".encode()) for i, e in enumerate(events)]


def at(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC)


@pytest.fixture
def server(tenant_a) -> VirtualServer:
    return tenant_a.server


# ---- parsing (no database) ---------------------------------------------------


def test_a_cdr_from_the_engine_becomes_the_model_columns():
    event = sample_cdr_event(7)
    parsed = parse_entry(entry(event)[1])
    assert parsed == event
    assert cdr_columns(parsed.data) == {
        "uuid": event.event_id,
        "call_id": parsed.data.call_id,
        "caller": "100",
        "dialed": "101",
        "callee": "101",
        "route": "local_user",
        "started_at": at(T0),
        "ring_at": at(T0 + 0.2),
        "answered_at": at(T0 + 2.0),
        "released_at": at(T0 + 32.6),
        "talk_seconds": 31,  # 30.6 s, rounded half up
        "released_by": "caller",
        "status": 200,
        "call_tag": 1,
        "cause": 16,
        "fci": "callTag=1;cause=16",
        "answered": True,
    }


def test_an_unanswered_cdr_has_no_answer_time():
    columns = cdr_columns(parse_entry(entry(sample_cdr_event(7, answered=False))[1]).data)
    assert columns["answered_at"] is None
    assert (columns["answered"], columns["talk_seconds"]) == (False, 0)


def test_every_field_of_the_cdr_event_has_a_column():
    for field in dataclasses.fields(CdrData):
        column = CdrRow._meta.get_field(CDR_TIME_COLUMNS.get(field.name, field.name))
        assert column.concrete and not column.is_relation


@pytest.mark.parametrize(
    "event",
    [
        registration_event(7, T0, "register", 3),
        make_event(CallData("c@h", "100", "101", "answered"), 7, T0),
        status_event(7, T0, "started", 2),
        make_event(CrashData(pid=4), 7, T0),
        make_event(CallSettingsData("100", True, "", "101", "", "", T0), 7, T0),
    ],
    ids=lambda e: e.type,
)
def test_every_type_parses_with_the_engine_definitions(event):
    assert parse_entry(entry(event)[1]) == event


def _cdr_fields(**data_changes: object) -> dict[bytes, bytes]:
    fields = entry(sample_cdr_event(7))[1]
    data = {**json.loads(fields[b"data"]), **data_changes}
    return {**fields, b"data": json.dumps(data).encode()}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "the entry is empty"),
        ({b"type": b"cdr"}, "missing field 'server_id'"),
        (_cdr_fields(start="2026-09-21T10:00:00+00:00"), "start is not a number"),
        (_cdr_fields(fci="callTag=1;cause=16", cause=300), "cause 300"),
    ],
)
def test_a_malformed_entry_is_refused_naming_what_is_wrong(fields, message):
    with pytest.raises(MalformedEvent, match=re.escape(message)):
        parse_entry(fields)


def test_over_long_text_is_cut_to_fit_rather_than_lost():
    columns = cdr_columns(parse_entry(_cdr_fields(caller="1" * 500, call_id="c" * 1000)).data)
    assert (len(columns["caller"]), len(columns["call_id"])) == (64, 255)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=8,
)
_CDR_FIELD_NAMES = [f.name for f in dataclasses.fields(CdrData)]


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(_CDR_FIELD_NAMES), value=_json_values)
def test_any_value_in_any_cdr_field_parses_or_is_refused(field, value):
    try:
        parsed = parse_entry(_cdr_fields(**{field: value}))
    except MalformedEvent:
        return
    columns = cdr_columns(parsed.data)
    assert 0 <= columns["talk_seconds"] < 2**31 and 100 <= columns["status"] <= 699


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([b"type", b"server_id", b"event_id", b"ts", b"data"])
        | st.binary(max_size=8),
        st.binary(max_size=40),
    )
)
def test_arbitrary_bytes_never_crash_the_parser(fields):
    with contextlib.suppress(MalformedEvent):
        parse_entry(fields)


# ---- one batch, one transaction ---------------------------------------------------


def test_the_same_cdr_twice_gives_one_row(server):
    event = sample_cdr_event(server.pk)
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
        sample_cdr_event(server.pk, T0),
        registration_event(server.pk, T0 + 1, "register", 2),
        sample_cdr_event(server.pk, T0 + 5),
    )
    first = ingest_batch(batch)
    before = VirtualServer.objects.values().get(pk=server.pk)
    second = ingest_batch(batch)  # the commit happened, the XACK did not
    assert first == second
    assert (first.by_type[EventType.CDR], first.by_type[EventType.REGISTRATION]) == (2, 1)
    assert CdrRow.objects.count() == 2
    assert VirtualServer.objects.values().get(pk=server.pk) == before


def test_activity_times_never_move_backwards(server):
    ingest_batch(
        entries(
            sample_cdr_event(server.pk, T0 + 100),
            registration_event(server.pk, T0 + 90, "register", 1),
        )
    )
    ingest_batch(
        entries(
            sample_cdr_event(server.pk, T0), registration_event(server.pk, T0 + 10, "register", 1)
        )
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


def test_the_workers_status_reports_set_the_client_count_newest_first(server):
    ingest_batch(entries(status_event(server.pk, T0 + 5, "started", 3)))
    server.refresh_from_db()
    assert (server.registered_clients, server.registered_clients_at) == (3, at(T0 + 5))

    # A registration read late is older than the worker's report: stale.
    ingest_batch(entries(registration_event(server.pk, T0 + 4, "expire", 0)))
    server.refresh_from_db()
    assert server.registered_clients == 3

    ingest_batch(
        entries(
            status_event(server.pk, T0 + 9, "stopped", 1),
            status_event(server.pk, T0 + 7, "reloaded", 2),
        )
    )
    server.refresh_from_db()
    assert (server.registered_clients, server.registered_clients_at) == (1, at(T0 + 9))
    # A status report is not a registration, and the worker's state is the node agent's.
    assert server.last_registration_at is None
    assert server.actual_state == VirtualServer.State.UNKNOWN


def test_worker_crashes_count_as_restarts_and_leave_the_client_count_alone(server):
    ingest_batch(entries(registration_event(server.pk, T0, "register", 2)))
    crash = make_event(CrashData(pid=4), server.pk, T0 + 1)
    result = ingest_batch(entries(crash, crash))  # one event read twice counts twice
    server.refresh_from_db()
    assert server.restart_count == 2
    assert (server.registered_clients, server.registered_clients_at) == (2, at(T0))
    assert result.by_type[EventType.CRASH] == 2


def test_call_events_are_acknowledged_and_change_nothing(server):
    before = VirtualServer.objects.values().get(pk=server.pk)
    call = make_event(CallData("c@h", "100", "101", "ringing"), server.pk, T0)
    result = ingest_batch(entries(call))
    assert result.by_type[EventType.CALL] == 1 and not result.bad
    assert VirtualServer.objects.values().get(pk=server.pk) == before


def test_events_of_an_unknown_or_purged_server_are_skipped(server):
    result = ingest_batch(
        entries(
            sample_cdr_event(server.pk),
            sample_cdr_event(server.pk + 1000),
            registration_event(server.pk + 1000, T0, "register", 1),
        )
    )
    assert (result.by_type[EventType.CDR], result.unknown_server) == (1, 2)
    assert list(CdrRow.objects.values_list("server_id", flat=True)) == [server.pk]


def test_a_bad_entry_is_reported_and_does_not_stop_the_good_ones(server):
    good = sample_cdr_event(server.pk)
    result = ingest_batch([entry(good, b"1-0"), (b"2-0", {b"type": b"cdr"})])
    assert CdrRow.objects.count() == 1
    [bad] = result.bad
    assert bad.entry_id == b"2-0" and "server_id" in bad.error


# ---- call settings changed from a phone ---------------------------------------------


def call_settings_event(
    server_id: int, changed: float, user: str = "100", **settings: object
) -> Event:
    """What the worker sends after a feature code: the user's whole DND and forwarding."""
    values = {
        "dnd": False,
        "forward_unconditional": "",
        "forward_busy": "",
        "forward_no_answer": "",
        "forward_unreachable": "",
    }
    data = CallSettingsData(user=user, changed=changed, **(values | settings))
    return make_event(data, server_id, changed)


def call_settings(server: VirtualServer, number: str = "100") -> tuple:
    user = LocalUser.objects.get(server=server, number=number)
    return (
        user.dnd,
        user.forward_unconditional,
        user.forward_busy,
        user.forward_no_answer,
        user.forward_unreachable,
        user.call_settings_changed,
    )


def test_a_phones_dnd_and_forwarding_reach_the_database(server, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = ingest_batch(
            entries(call_settings_event(server.pk, T0, dnd=True, forward_no_answer="101"))
        )
    # The worker made the change itself; its config is rendered again (one apply_server),
    # so that a restart later does not forget it.
    assert len(callbacks) == 1
    assert result.by_type[EventType.CALL_SETTINGS] == 1 and result.unknown_user == 0
    assert call_settings(server) == (True, "", "", "101", "", at(T0))


def test_the_newest_change_wins_whatever_the_order_they_are_read_in(server):
    ingest_batch(
        entries(
            call_settings_event(server.pk, T0 + 2, forward_busy="102"),
            call_settings_event(server.pk, T0 + 1, dnd=True),
        )
    )
    assert call_settings(server) == (False, "", "102", "", "", at(T0 + 2))
    ingest_batch(entries(call_settings_event(server.pk, T0, forward_unconditional="101")))
    assert call_settings(server) == (False, "", "102", "", "", at(T0 + 2))


def test_a_phones_change_read_late_does_not_undo_a_newer_portal_change(server, tenant_a):
    user = tenant_a.user
    features_services.local_user_update_call_settings(
        user=user,
        seen_changed=None,
        dnd=False,
        forward_unconditional="102",
        forward_busy="",
        forward_no_answer="",
        forward_unreachable="",
        no_answer_seconds=20,
        pickup_group=0,
    )
    user.refresh_from_db()
    phone_before = user.call_settings_changed.timestamp() - 5
    ingest_batch(entries(call_settings_event(server.pk, phone_before, dnd=True)))
    assert call_settings(server) == (False, "102", "", "", "", user.call_settings_changed)

    phone_after = user.call_settings_changed.timestamp() + 5
    ingest_batch(entries(call_settings_event(server.pk, phone_after, dnd=True)))
    assert call_settings(server) == (True, "", "", "", "", at(phone_after))


def test_a_call_settings_batch_replayed_changes_nothing(server, django_capture_on_commit_callbacks):
    batch = entries(call_settings_event(server.pk, T0, dnd=True, forward_busy="101"))
    first = ingest_batch(batch)
    before = list(LocalUser.objects.values().order_by("pk"))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        second = ingest_batch(batch)
    assert first == second and callbacks == []
    assert list(LocalUser.objects.values().order_by("pk")) == before


def test_a_user_deleted_since_is_counted_and_skipped(server, tenant_b):
    result = ingest_batch(
        entries(
            call_settings_event(server.pk, T0, user="555", dnd=True),
            call_settings_event(server.pk, T0 + 1, user="555"),
            call_settings_event(server.pk, T0, dnd=True),
        )
    )
    assert (result.unknown_user, result.by_type[EventType.CALL_SETTINGS], result.bad) == (2, 3, ())
    assert call_settings(server)[0] is True
    assert call_settings(tenant_b.server)[0] is False  # same number, another server


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"forward_busy": "+8610"}, "forward_busy '+8610' is not a number"),
        ({"forward_unreachable": "1" * 33}, "forward_unreachable"),
        ({"user": ""}, "user is empty"),
        ({"user": "1" * 33}, "user"),
    ],
)
def test_call_settings_the_portal_cannot_store_go_to_the_dead_letters(server, changes, message):
    event = call_settings_event(server.pk, T0, **changes)
    with pytest.raises(MalformedEvent, match=re.escape(message)):
        parse_entry(entry(event)[1])
    [bad] = ingest_batch(entries(event)).bad
    assert message in bad.error
    assert call_settings(server)[5] is None


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


def entries_idle(client: redis.Redis, key: str, ms: int) -> bool:
    """Every entry pending in the group has gone undelivered for more than `ms` (XPENDING)."""
    pending = client.xpending_range(key, "ingest", "-", "+", 100)
    return bool(pending) and all(p["time_since_delivered"] > ms for p in pending)


def consumer_idle(client: redis.Redis, key: str, name: str, ms: int) -> bool:
    """The group's consumer `name` has been silent for more than `ms` (XINFO CONSUMERS)."""
    consumers = client.xinfo_consumers(key, "ingest")
    return any(c["name"] == name.encode() and c["idle"] > ms for c in consumers)


def test_malformed_entries_go_to_the_dead_letter_stream_and_good_ones_are_written(server, stream):
    client, key = stream
    add(client, key, sample_cdr_event(server.pk))
    client.xadd(key, {"type": "cdr", "server_id": str(server.pk), "data": "{}"})
    add(client, key, sample_cdr_event(server.pk), status_event(server.pk, T0, "started", 0))

    consumer(key).run(drain=True)

    assert CdrRow.objects.count() == 2
    [(_, dead)] = client.xrange(f"{key}:dead")
    assert dead[b"ingest_error"] == b"missing field 'event_id'"
    assert dead[b"type"] == b"cdr" and dead[b"ingest_entry_id"]
    assert client.xpending(key, "ingest")["pending"] == 0


def test_after_a_restart_its_own_pending_entries_are_ingested_first(server, stream):
    client, key = stream
    events = [sample_cdr_event(server.pk, T0 + i) for i in range(5)]
    add(client, key, *events)
    client.xgroup_create(key, "ingest", id="0")
    client.xreadgroup("ingest", "host-1", {key: ">"}, count=3)  # read, then the process died

    consumer(key, name="host-1", batch_size=2).run(drain=True)

    assert CdrRow.objects.count() == 5
    assert client.xpending(key, "ingest")["pending"] == 0


def test_entries_of_a_dead_consumer_are_claimed_once_idle(server, stream):
    client, key = stream
    add(client, key, *(sample_cdr_event(server.pk, T0 + i) for i in range(3)))
    client.xgroup_create(key, "ingest", id="0")
    client.xreadgroup("ingest", "dead-host-1", {key: ">"})
    wait_for(lambda: entries_idle(client, key, IDLE_MS), 5, f"3 pending entries idle {IDLE_MS} ms")

    consumer(key, name="host-2", claim_idle_ms=IDLE_MS).run(drain=True)

    assert CdrRow.objects.count() == 3
    assert client.xpending(key, "ingest")["pending"] == 0


def test_silent_consumers_that_hold_nothing_are_forgotten(server, stream):
    client, key = stream
    add(client, key, sample_cdr_event(server.pk))
    client.xgroup_create(key, "ingest", id="0")
    client.xgroup_createconsumer(key, "ingest", "host-1")  # an earlier process, gone
    client.xreadgroup("ingest", "host-2", {key: ">"})  # holds an entry: kept until claimed
    wait_for(lambda: consumer_idle(client, key, "host-1", IDLE_MS), 5, f"host-1 idle {IDLE_MS} ms")

    consumer(key, name="host-3", forget_idle_ms=IDLE_MS).run(drain=True)

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
        sample_cdr_event(server.pk, T0 + 2),
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
        add(
            client,
            STREAM_KEY,
            sample_cdr_event(server.pk),
            sample_cdr_event(server.pk),
            sample_cdr_event(server.pk),
        )
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
@given(field=st.sampled_from(_CDR_FIELD_NAMES), value=_json_values)
def test_whatever_the_parser_accepts_the_database_accepts(server, field, value):
    event = sample_cdr_event(server.pk)
    fields = entry(event)[1]
    fields[b"data"] = json.dumps({**json.loads(fields[b"data"]), field: value}).encode()
    try:
        parse_entry(fields)
    except MalformedEvent:
        return
    assert ingest_batch([(b"1-0", fields)]).by_type[EventType.CDR] == 1
    assert CdrRow.objects.filter(uuid=event.event_id).exists()


def test_ingested_cdrs_are_listed_read_only_in_the_admin(server, client):
    verified_login(
        client,
        User.objects.create_superuser(username="op", email="op@example.com", password="x" * 12),
    )
    ingest_batch(entries(sample_cdr_event(server.pk)))
    row = CdrRow.objects.get()

    listing = client.get("/admin/sipnodes/cdr/", {"q": row.call_id, "answered__exact": "1"})
    assert listing.status_code == 200
    assert listing.context["cl"].result_count == 1
    assert client.get("/admin/sipnodes/cdr/add/").status_code == 403
    change = client.get(f"/admin/sipnodes/cdr/{row.pk}/change/")
    assert change.status_code == 200 and b'name="_save"' not in change.content


# ---- trimming what the group has acknowledged ---------------------------------------


def test_the_stream_keeps_only_what_is_not_yet_acknowledged(server, stream):
    client, key = stream
    add(client, key, *(sample_cdr_event(server.pk, T0 + i) for i in range(350)))

    consumer(key, batch_size=100).run(drain=True)

    assert CdrRow.objects.count() == 350
    assert client.xlen(key) < 100  # XTRIM MINID ~: whole nodes of 100 entries


def test_entries_pending_or_unread_by_any_group_are_never_trimmed(server, stream):
    client, key = stream
    add(client, key, *(sample_cdr_event(server.pk, T0 + i) for i in range(300)))
    client.xgroup_create(key, "ingest", id="0")
    [[_, held]] = client.xreadgroup("ingest", "host-1", {key: ">"}, count=150)  # not acked

    reader = consumer(key, name="host-2")
    reader.run(drain=True)  # the other 150; host-1's are not idle long enough to claim

    assert client.xlen(key) == 300  # the oldest entry is still pending
    client.xack(key, "ingest", *(entry_id for entry_id, _ in held))
    client.xgroup_create(key, "audit", id="0")  # another reader, which has read nothing
    reader.trim()
    assert client.xlen(key) == 300
    client.xgroup_destroy(key, "audit")
    reader.trim()
    assert client.xlen(key) < 100
