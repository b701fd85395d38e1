"""The event contract: every type survives the stream and the spool; a bad entry is refused."""

import dataclasses
import json
import re
import uuid

import pytest

from sipnodes.engine.events import (
    CallData,
    CallSettingsData,
    CdrData,
    CrashData,
    Event,
    EventType,
    MalformedEvent,
    RegistrationData,
    StatusData,
    TrunkData,
    make_event,
)
from tests.factories import SAMPLE_T0, sample_cdr, sample_cdr_event

EVENTS = {
    "cdr": sample_cdr_event(7),
    "unanswered cdr": sample_cdr_event(7, answered=False),
    "registration": make_event(
        RegistrationData("register", "100", "sip:100@127.0.0.1:5070", 3600, 1), 7, SAMPLE_T0
    ),
    "call": make_event(CallData("c1@127.0.0.1", "100", "101", "ringing"), 7, SAMPLE_T0),
    "status": make_event(StatusData("stopped", "Acme PBX", 3, 1), 7, SAMPLE_T0 + 0.125),
    "crash": make_event(CrashData(pid=991), 7, SAMPLE_T0),
    "trunk": make_event(
        TrunkData(3, "failing", "403 Forbidden", SAMPLE_T0, SAMPLE_T0 + 30), 7, SAMPLE_T0
    ),
    "call settings": make_event(
        CallSettingsData("100", True, "", "201", "", "", SAMPLE_T0), 7, SAMPLE_T0
    ),
}


def entry(event: Event) -> dict[bytes, bytes]:
    """The entry as redis-py reads it back."""
    return {k.encode(): v.encode() for k, v in event.fields().items()}


@pytest.mark.parametrize("event", EVENTS.values(), ids=EVENTS.keys())
def test_every_type_round_trips_through_the_stream_and_the_spool(event):
    assert Event.from_entry(entry(event)) == event
    assert Event.from_json(event.to_json()) == event


def test_every_type_has_a_payload_class():
    assert {e.type for e in EVENTS.values()} == set(EventType)


def test_the_entry_carries_times_as_numbers_and_every_payload_field():
    fields = EVENTS["cdr"].fields()
    assert set(fields) == {"type", "server_id", "event_id", "ts", "data"}
    assert fields["type"] == "cdr" and fields["server_id"] == "7"
    assert float(fields["ts"]) == SAMPLE_T0 + 32.6
    data = json.loads(fields["data"])
    assert list(data) == [f.name for f in dataclasses.fields(CdrData)]
    assert (data["start"], data["answer"], data["release"]) == (
        SAMPLE_T0,
        SAMPLE_T0 + 2.0,
        SAMPLE_T0 + 32.6,
    )
    assert (data["call_tag"], data["cause"], data["fci"]) == (1, 16, "callTag=1;cause=16")


def test_a_cdr_event_is_identified_by_the_cdr_uuid_others_by_a_new_uuid():
    cdr = sample_cdr()
    assert make_event(cdr.data(), 7, SAMPLE_T0).event_id == cdr.uuid
    status = StatusData("started", "Acme PBX", 0, 0)
    ids = {make_event(status, 7, SAMPLE_T0).event_id for _ in range(2)}
    assert len(ids) == 2 and all(uuid.UUID(i).version == 4 for i in ids)


def test_the_type_follows_the_payload():
    with pytest.raises(ValueError, match="a cdr event cannot carry CallData"):
        Event(EventType.CDR, 7, str(uuid.uuid4()), SAMPLE_T0, EVENTS["call"].data)


def test_fields_a_newer_worker_adds_are_ignored():
    event = EVENTS["registration"]
    fields = entry(event)
    fields[b"data"] = json.dumps({**json.loads(fields[b"data"]), "instance": "urn:x"}).encode()
    assert Event.from_entry(fields) == event


def _with(event: Event, **changes: bytes | None) -> dict[bytes, bytes]:
    fields = entry(event)
    for name, value in changes.items():
        if value is None:
            del fields[name.encode()]
        else:
            fields[name.encode()] = value
    return fields


def _with_data(event: Event, **changes: object) -> dict[bytes, bytes]:
    data = json.loads(event.fields()["data"])
    for name, value in changes.items():
        if value is _MISSING:
            del data[name]
        else:
            data[name] = value
    return _with(event, data=json.dumps(data).encode())


_MISSING = object()
_CDR = EVENTS["cdr"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (_with(_CDR, type=None), "missing field 'type'"),
        (_with(_CDR, type=b"fax"), "unknown event type 'fax'"),
        (_with(_CDR, type=b"\xff\xfe"), "field 'type' is not UTF-8"),
        (_with(_CDR, server_id=b"-3"), "server_id '-3' is not a positive integer"),
        (_with(_CDR, server_id=b"0"), "server_id '0' is not a positive integer"),
        (_with(_CDR, server_id=b"99999999999999999999"), "is not a positive integer"),
        (_with(_CDR, server_id=b"9" * 5000), "is not a positive integer"),
        (_with(_CDR, event_id=b"not-a-uuid"), "event_id 'not-a-uuid' is not a UUID"),
        (_with(_CDR, event_id=str(uuid.uuid4()).encode()), "a CDR's event_id must be its uuid"),
        (_with(_CDR, ts=b"nan"), "ts 'nan' is not a time in UTC epoch seconds"),
        (_with(_CDR, ts=b"1e300"), "ts '1e300' is not a time"),
        (_with(_CDR, ts=b"2026-09-21T10:00:00+00:00"), "is not a time in UTC epoch seconds"),
        (_with(_CDR, data=b"{not json"), "data is not JSON"),
        (_with(_CDR, data=b"[" * 100_000), "data is not JSON"),
        (_with(_CDR, data=b"[1, 2]"), "data is not a JSON object"),
        (_with_data(_CDR, fci=_MISSING), "data has no 'fci'"),
        (_with_data(_CDR, start="2026-09-21T10:00:00+00:00"), "start is not a number"),
        (_with_data(_CDR, start=None), "start must not be null"),
        (_with_data(_CDR, ring=-1.0), "ring -1.0 is not in 0.0-"),
        (_with_data(_CDR, release=1e300), "release 1e+300 is not in"),
        (_with_data(_CDR, status=42), "status 42 is not in 100-699"),
        (_with_data(_CDR, status=True), "status is not a number"),
        (_with_data(_CDR, status=200.5), "status 200.5 is not an integer"),
        (_with_data(_CDR, cause=300), "cause 300 is not in 1-127"),
        (_with_data(_CDR, call_tag=0), "call_tag 0 is not in 1-32767"),
        (_with_data(_CDR, talk_seconds=-1), "talk_seconds -1 is not in"),
        (_with_data(_CDR, answered="yes"), "answered is not true or false"),
        (_with_data(_CDR, caller="10\x000"), "caller contains a NUL character"),
        (_with_data(_CDR, caller="\ud800"), "caller is not valid Unicode"),
        (_with_data(_CDR, caller=100), "caller is not a string"),
        (_with_data(_CDR, callee=None), "callee must not be null"),
        (_with_data(_CDR, released_by="nobody"), "not one of callee, caller, server"),
        (_with_data(_CDR, uuid="x"), "uuid 'x' is not a UUID"),
        (_with_data(EVENTS["registration"], action="reboot"), "action 'reboot' is not one of"),
        (_with_data(EVENTS["registration"], registered_clients=-1), "registered_clients -1"),
        (_with_data(EVENTS["call"], state="held"), "state 'held' is not one of"),
        (_with_data(EVENTS["status"], state="crashed"), "state 'crashed' is not one of"),
        (_with_data(EVENTS["crash"], pid="991"), "pid is not a number"),
    ],
)
def test_a_malformed_entry_is_refused_naming_what_is_wrong(fields, message):
    with pytest.raises(MalformedEvent, match=re.escape(message)):
        Event.from_entry(fields)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{", "not JSON"),
        ("[1]", "not a JSON object of strings"),
        ('{"type": "cdr", "ts": 1}', "not a JSON object of strings"),
        ('{"type": "cdr"}', "missing field 'server_id'"),
    ],
)
def test_an_unreadable_spool_line_is_refused(line, message):
    with pytest.raises(MalformedEvent, match=re.escape(message)):
        Event.from_json(line)
