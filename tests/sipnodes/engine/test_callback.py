"""The call-back service without sockets: the parser, the checks, and a fake dialer."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipnodes.engine import callback as cb
from sipnodes.engine.callback import (
    CallbackOutcome,
    CallbackRefused,
    CallbackRequest,
    CallbackService,
    CallbackSettings,
    MessageError,
    encode,
    encode_signed,
    parse,
    signature,
)

from .helpers import T0, make_engine

AS = ("127.0.0.1", 40000)
WALL = 1_700_000_000.0
SECRET = b"correct horse battery staple"


class FakeDialer:
    """Records what it is asked; refuses with `refuse`, or runs `on_start` (to end at once)."""

    def __init__(self) -> None:
        self.started: list[CallbackRequest] = []
        self.cancelled: list[str] = []
        self.refuse: CallbackRefused | None = None
        self.on_start: Callable[[CallbackRequest], None] | None = None

    def start_callback(self, request: CallbackRequest, now: float) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.started.append(request)
        if self.on_start is not None:
            self.on_start(request)

    def cancel_callback(self, callid: str, now: float) -> bool:
        self.cancelled.append(callid)
        return any(r.callid == callid for r in self.started)


def service(address: str = "127.0.0.1", default_caller: str = "", secret: bytes = b""):
    dialer = FakeDialer()
    return CallbackService(CallbackSettings(address, default_caller, secret), dialer, T0), dialer


def fields(reply: bytes) -> dict[str, str]:
    message = parse(reply)
    return {"method": message.method, **message.fields}


def ask(svc: CallbackService, data: bytes, source=AS, now: float = T0, wall: float = WALL):
    """The one ACK the service answers `data` with, as a dict."""
    [(reply, to)] = svc.receive(data, source, now, wall)
    assert to == source
    answer = fields(reply)
    assert answer["method"] == "ACK"
    return answer


def outcome(callid: str = "c1", result: int = cb.RESPONSE_CONNECTED) -> CallbackOutcome:
    return CallbackOutcome(callid, result, 16, 42.5, WALL + 3, WALL + 7.25)


# ---- parser -------------------------------------------------------------------------------------


def test_a_message_is_parsed_with_its_values_decoded():
    message = parse(b"REQUEST: callid=a%3Bb%20c;callee1=100;callee2=%2B8613800000000\r\n")
    assert message.method == "REQUEST"
    assert message.fields == {"callid": "a;b c", "callee1": "100", "callee2": "+8613800000000"}
    assert parse(b"CANCEL:callid=1").fields == {"callid": "1"}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty message"),
        (b"\r\n", "empty message"),
        (b"\x00\xff\x10binary", "not printable ASCII"),
        (b"REQUEST: callid=\xe4\xb8\xad", "not printable ASCII"),
        (b"REQUEST: callid=1;" + b"x" * 1500, "too large"),
        (b"REQUEST callid=1", "no ':'"),
        (b"request: callid=1", "upper-case"),
        (b"REQUEST: callid", "field 1: no '='"),
        (b"REQUEST: callid=1; callee1=100", "field 2: the name"),
        (b"REQUEST: Callid=1", "field 1: the name"),
        (b"REQUEST: callid=1;;callee1=2", "field 2: no '='"),
        (b"REQUEST: " + b";".join(b"f%d=1" % i for i in range(17)), "too many fields"),
        (b"REQUEST: callid=50%", "callid: bad character or percent-encoding"),
        (b"REQUEST: callid=%zz", "callid: bad character or percent-encoding"),
        (b"REQUEST: callid=a b", "callid: bad character"),
        (b"REQUEST: callid=%ff", "callid: not UTF-8"),
        (b"REQUEST: callid=%0a", "callid: control characters"),
    ],
)
def test_what_is_not_a_message_is_refused_saying_why(data, reason):
    with pytest.raises(MessageError) as refused:
        parse(data)
    assert refused.value.result == cb.RESULT_MALFORMED
    assert reason in refused.value.reason


def test_a_duplicate_field_is_refused_with_the_callid_echoed():
    with pytest.raises(MessageError) as refused:
        parse(b"REQUEST: callid=7;callee1=100;callee1=101")
    assert (refused.value.result, refused.value.reason) == (2, "duplicate field callee1")
    assert refused.value.callid == "7"


NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
VALUES = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20)


@given(st.dictionaries(NAMES, VALUES, min_size=1, max_size=cb.MAX_FIELDS))
def test_what_encode_writes_parse_reads_back(values):
    data = encode("REQUEST", values.items())
    if len(data) <= cb.MAX_DATAGRAM:
        assert parse(data).fields == values


@settings(max_examples=500)
@given(
    st.one_of(
        st.binary(max_size=1600),
        st.text(max_size=200).map(lambda t: ("REQUEST: " + t).encode(errors="replace")),
        st.lists(st.tuples(NAMES, st.text(max_size=12)), max_size=20).map(
            lambda pairs: ("REQUEST: " + ";".join(f"{n}={v}" for n, v in pairs)).encode()
        ),
    )
)
def test_fuzz_the_parser_and_the_service_refuse_and_never_raise(data):
    try:
        parse(data)
    except MessageError as exc:
        assert exc.result in (cb.RESULT_MALFORMED, cb.RESULT_BAD_FIELD) and exc.reason
    svc, dialer = service()
    for reply, _ in svc.receive(data, AS, T0, WALL):
        answer = fields(reply)  # every reply is itself a valid message
        assert answer["method"] == "ACK"
        assert answer["result"] == "0" or answer["reason"]
    for request in dialer.started:  # only what passed every check reached the dialer
        assert cb._NUMBER.match(request.callee1) and cb._NUMBER.match(request.callee2)


# ---- the service --------------------------------------------------------------------------------


def test_a_request_is_acked_and_handed_to_the_dialer_with_the_defaults():
    svc, dialer = service()
    answer = ask(svc, b"REQUEST: callid=c1;callee1=100;callee2=101")
    assert answer == {"method": "ACK", "callid": "c1", "result": "0"}
    assert dialer.started == [CallbackRequest("c1", "100", "101", "anonymous", "100", 0)]

    svc, dialer = service(default_caller="8000")
    ask(svc, b"REQUEST: callid=c2;callee1=100;callee2=101;caller1=;maxduration=")
    assert dialer.started[0].caller1 == "8000" and dialer.started[0].maxduration == 0
    data = (
        b"REQUEST: callid=c3;callee1=9555;callee2=101;caller1=anonymous;caller2=200;maxduration=60"
    )
    assert ask(svc, data)["result"] == "0"
    assert dialer.started[1] == CallbackRequest("c3", "9555", "101", "anonymous", "200", 60)


@pytest.mark.parametrize(
    ("data", "result", "reason"),
    [
        (b"REQUEST: callee1=100;callee2=101", 2, "callid missing"),
        (b"REQUEST: callid=" + b"x" * 65 + b";callee1=1;callee2=2", 2, "callid must be"),
        (b"REQUEST: callid=c1;callee2=101", 2, "callee1 missing"),
        (b"REQUEST: callid=c1;callee1=100", 2, "callee2 missing"),
        (b"REQUEST: callid=c1;callee1=;callee2=101", 2, "callee1 missing"),
        (b"REQUEST: callid=c1;callee1=10a;callee2=101", 2, "callee1 is not a number"),
        (b"REQUEST: callid=c1;callee1=100;callee2=anonymous", 2, "callee2 is not a number"),
        (b"REQUEST: callid=c1;callee1=100;callee2=101;caller1=*78", 2, "caller1 is not a number"),
        (b"REQUEST: callid=c1;callee1=100;callee2=101;caller2=x", 2, "caller2 is not a number"),
        (b"REQUEST: callid=c1;callee1=1;callee2=2;maxduration=-1", 2, "maxduration must be"),
        (b"REQUEST: callid=c1;callee1=1;callee2=2;maxduration=86401", 2, "maxduration must be"),
        (b"REQUEST: callid=c1;callee1=1;callee2=1;callee2=2", 2, "duplicate field callee2"),
        (b"DIAL: callid=c1;callee1=1;callee2=2", 3, "unknown method DIAL"),
        (b"CANCEL: callid=nope", 5, "no call-back with this callid"),
        (b"CANCEL: nothing=1", 2, "callid missing"),
        (b"", 1, "empty message"),
        (b"\x16\x03\x01\x02\x00\x01", 1, "not printable ASCII text"),
        (b"x" * 2000, 1, "message too large"),
    ],
)
def test_every_bad_input_gets_a_non_zero_ack_naming_the_problem(data, result, reason):
    svc, dialer = service()
    answer = ask(svc, data)
    assert answer["result"] == str(result)
    assert reason in answer["reason"]
    assert dialer.started == []


def test_the_callid_is_echoed_whenever_it_can_be_read():
    svc, _ = service()
    assert ask(svc, b"REQUEST: callid=c9;callee1=x;callee2=1")["callid"] == "c9"
    assert ask(svc, b"DIAL: callid=c9")["callid"] == "c9"
    assert ask(svc, b"REQUEST: callid=c9;x=%")["callid"] == ""  # grammar broken: unknown


def test_a_callid_in_use_is_refused_until_the_call_back_ends():
    svc, dialer = service()
    ask(svc, b"REQUEST: callid=c1;callee1=100;callee2=101")
    answer = ask(svc, b"REQUEST: callid=c1;callee1=102;callee2=103")
    assert (answer["result"], answer["reason"]) == (
        "4",
        "a call-back with this callid is in progress",
    )
    assert len(dialer.started) == 1
    assert svc.ended(outcome("c1")) != []
    assert ask(svc, b"REQUEST: callid=c1;callee1=102;callee2=103")["result"] == "0"


def test_a_refusal_by_the_dialer_is_the_acks_result_and_frees_the_callid():
    svc, dialer = service()
    dialer.refuse = CallbackRefused(cb.RESULT_NUMBER_REFUSED, "callee1 404: no such number")
    answer = ask(svc, b"REQUEST: callid=c1;callee1=555;callee2=101")
    assert (answer["result"], answer["reason"]) == ("10", "callee1 404: no such number")
    assert svc.active == {}
    dialer.refuse = None
    assert ask(svc, b"REQUEST: callid=c1;callee1=100;callee2=101")["result"] == "0"


def test_cancel_reaches_the_dialer_and_the_response_goes_where_the_request_came_from():
    svc, dialer = service(address="")
    ask(svc, b"REQUEST: callid=c1;callee1=100;callee2=101", source=("10.0.0.5", 5000))
    assert ask(svc, b"CANCEL: callid=c1", source=("10.0.0.6", 6000))["result"] == "0"
    assert dialer.cancelled == ["c1"]
    [(reply, to)] = svc.ended(outcome("c1", cb.RESPONSE_CANCELLED))
    assert to == ("10.0.0.5", 5000)
    assert fields(reply) == {
        "method": "RESPONSE",
        "callid": "c1",
        "result": "22",
        "cause": "16",
        "duration": "42.500",
        "answer1": "1700000003.000",
        "answer2": "1700000007.250",
    }
    assert svc.ended(outcome("c1")) == []  # once only
    assert ask(svc, b"CANCEL: callid=c1")["result"] == "5"


def test_a_response_shows_an_unanswered_leg_as_an_empty_time():
    ended = dataclasses.replace(outcome(), result=20, cause=17, duration=0.0, answer1=None)
    message = parse(cb.response(dataclasses.replace(ended, answer2=None)))
    assert (message.fields["answer1"], message.fields["answer2"]) == ("", "")
    assert message.fields["duration"] == "0.000"


def test_a_stopping_server_starts_nothing():
    svc, dialer = service()
    svc.stopping = True
    answer = ask(svc, b"REQUEST: callid=c1;callee1=100;callee2=101")
    assert (answer["result"], answer["reason"]) == ("11", "the server is stopping")
    assert dialer.started == []


def test_answers_are_never_answered():
    svc, _ = service()
    assert svc.receive(b"ACK: callid=1;result=3;reason=x", AS, T0, WALL) == []
    assert svc.receive(b"RESPONSE: callid=1;result=0", AS, T0, WALL) == []


# ---- address and rate ---------------------------------------------------------------------------


def test_a_datagram_from_another_address_is_dropped_silently():
    svc, dialer = service(address="127.0.0.1")
    for data in (b"REQUEST: callid=c1;callee1=100;callee2=101", b"garbage", b""):
        assert svc.receive(data, ("127.0.0.2", 40000), T0, WALL) == []
    assert dialer.started == [] and svc.dropped == 3
    assert ask(svc, b"CANCEL: callid=x", source=("::ffff:127.0.0.1", 1))["result"] == "5"


def test_a_blank_address_admits_any_source():
    svc, _ = service(address="")
    assert ask(svc, b"CANCEL: callid=x", source=("203.0.113.9", 1))["result"] == "5"


def test_an_as_over_the_rate_is_told_once_a_second_then_dropped():
    svc, dialer = service()
    for i in range(int(cb.SOURCE_BURST)):
        ask(svc, b"CANCEL: callid=c%d" % i)
    answer = ask(svc, b"REQUEST: callid=late;callee1=100;callee2=101")
    assert (answer["callid"], answer["result"]) == ("late", "9")
    assert svc.receive(b"REQUEST: callid=x;callee1=100;callee2=101", AS, T0 + 0.05, WALL) == []
    assert dialer.started == [] and svc.limited == 2
    # Tokens come back at SOURCE_RATE a second.
    assert ask(svc, b"REQUEST: callid=c;callee1=1;callee2=2", now=T0 + 1.0)["result"] == "0"


def test_many_sources_share_one_total_rate():
    svc, _ = service(address="")
    answered = [
        svc.receive(b"CANCEL: callid=x", (f"10.0.{i // 250}.{i % 250}", 1), T0, WALL)
        for i in range(1000)
    ]
    acks = [fields(r[0][0])["result"] for r in answered if r]
    assert acks.count("5") == cb.TOTAL_BURST
    assert acks.count("9") <= cb.TOLD_RATE  # reflection is bounded, whatever the sources
    assert len(svc._sources) <= cb.MAX_SOURCES


# ---- signature, timestamp, replay ---------------------------------------------------------------


def signed(*pairs: tuple[str, str], ts: float = WALL, method: str = "REQUEST") -> bytes:
    return encode_signed(method, [*pairs, ("ts", str(int(ts)))], SECRET)


REQ = (("callid", "s1"), ("callee1", "100"), ("callee2", "101"))


def upper_case_sig(data: bytes) -> bytes:
    head, sig = data.rsplit(b";sig=", 1)
    return head + b";sig=" + sig.upper()


def test_a_signed_request_is_accepted_once():
    svc, dialer = service(secret=SECRET)
    data = signed(*REQ)
    assert ask(svc, data)["result"] == "0"
    assert len(dialer.started) == 1
    answer = ask(svc, data)
    assert (answer["result"], answer["reason"]) == ("8", "replayed message")
    assert ask(svc, signed(("callid", "s1"), method="CANCEL"))["result"] == "0"


@pytest.mark.parametrize(
    ("data", "result", "reason"),
    [
        (encode("REQUEST", REQ), 6, "sig missing"),
        (signed(*REQ) + b";x=1", 6, "sig must be the last field"),
        (signed(*REQ)[:-1] + b"0", 6, "sig does not match"),
        (upper_case_sig(signed(*REQ)), 6, "sig must be 64 lower-case hex digits"),
        (signed(*REQ).replace(b"callee2=101", b"callee2=102"), 6, "sig does not match"),
        (encode_signed("REQUEST", REQ, b"another secret"), 6, "sig does not match"),
        (encode_signed("REQUEST", REQ, SECRET), 7, "ts missing"),
        (encode_signed("REQUEST", [*REQ, ("ts", "soon")], SECRET), 7, "ts missing"),
        (signed(*REQ, ts=WALL - 31), 7, "more than 30 s away"),
        (signed(*REQ, ts=WALL + 31), 7, "more than 30 s away"),
        (encode_signed("CANCEL", [("callid", "s1")], SECRET), 7, "ts missing"),
    ],
)
def test_with_a_secret_an_unsigned_or_stale_message_is_refused(data, result, reason):
    svc, dialer = service(secret=SECRET)
    answer = ask(svc, data)
    assert answer["result"] == str(result) and reason in answer.get("reason", "")
    assert dialer.started == []


def test_the_signature_of_the_worked_example_in_the_docs():
    """docs/callback.md shows this datagram and signature: they must stay true."""
    unsigned = b"REQUEST: callid=42;callee1=100;callee2=101;ts=1700000000"
    assert signature(b"s3cret-shared-with-the-as", unsigned) == (
        "0c85b354949ed242965ff6ba7f41bee371abe0451346ee4df15e7263a703ad03"
    )


def test_the_replay_cache_forgets_what_the_window_refuses_anyway_and_is_bounded():
    cache = cb.ReplayCache(limit=2)
    assert cache.add(("a", 100, "s"), 100.0) == cb.RESULT_ACCEPTED
    assert cache.add(("a", 100, "s"), 130.0) == cb.RESULT_REPLAYED
    assert cache.add(("b", 100, "s"), 100.0) == cb.RESULT_ACCEPTED
    assert cache.add(("c", 100, "s"), 100.0) == cb.RESULT_RATE_LIMITED
    assert cache.add(("c", 100, "s"), 131.0) == cb.RESULT_ACCEPTED and len(cache) == 1


# ---- in the engine ------------------------------------------------------------------------------


def callback_engine(**callback):
    engine = make_engine(callback={"app_server_address": "127.0.0.1", **callback})
    dialer = FakeDialer()
    engine.callbacks.dialer = dialer
    return engine, dialer


def test_the_engine_acks_before_the_response_of_a_call_back_that_ends_at_once():
    engine, dialer = callback_engine(default_caller="8000")
    dialer.on_start = lambda r: engine._callback_ended(outcome(r.callid, 20))
    engine.receive_callback(b"REQUEST: callid=c1;callee1=100;callee2=101", AS, T0)
    methods = [(parse(data).method, to) for data, to in engine.callback_outbox]
    assert methods == [("ACK", AS), ("RESPONSE", AS)]
    assert dialer.started[0].caller1 == "8000"


def test_the_engine_takes_new_callback_settings_on_reload_and_refuses_at_stop():
    engine, dialer = callback_engine()
    engine.receive_callback(b"CANCEL: callid=x", ("127.0.0.2", 1), T0)
    assert engine.callback_outbox == []
    engine.reload(
        dataclasses.replace(
            engine.config,
            callback=dataclasses.replace(engine.config.callback, app_server_address="127.0.0.2"),
        ),
        T0,
    )
    engine.receive_callback(b"CANCEL: callid=x", ("127.0.0.2", 1), T0)
    assert parse(engine.callback_outbox.pop()[0]).fields["result"] == "5"
    engine.stop(T0)
    engine.receive_callback(b"REQUEST: callid=c1;callee1=100;callee2=101", ("127.0.0.2", 1), T0)
    assert parse(engine.callback_outbox.pop()[0]).fields["result"] == "11"


def test_the_engine_hands_requests_to_its_b2bua_and_reports_their_end():
    """The wiring with the real dialer: ACK at once, RESPONSE once the call-back ends."""
    engine = make_engine()
    engine.receive_callback(b"REQUEST: callid=w1;callee1=100;callee2=101", AS, T0)
    assert [parse(d).fields["result"] for d, _ in engine.callback_outbox] == ["0"]
    engine.callback_outbox.clear()
    engine.receive_callback(b"CANCEL: callid=w1", AS, T0 + 0.001)
    engine.handle_timer(T0 + 0.01)
    replies = [(parse(d).method, parse(d).fields["result"], to) for d, to in engine.callback_outbox]
    assert replies == [("ACK", "0", AS), ("RESPONSE", "22", AS)]
    engine.callback_outbox.clear()
    engine.receive_callback(b"REQUEST: callid=w2;callee1=100;callee2=101", AS, T0 + 1)
    engine.handle_timer(T0 + 1.01)  # callee1 has no registered phone
    [ack_, ended] = [parse(d) for d, _ in engine.callback_outbox]
    assert (ack_.method, ended.method, ended.fields["result"]) == ("ACK", "RESPONSE", "20")
    assert engine.callbacks.active == {}
