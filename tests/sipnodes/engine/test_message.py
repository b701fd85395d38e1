"""The lean SIP parser and writer: strict where RFC 3261 is strict, liberal where it is liberal."""

import contextlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipnodes.engine.message import (
    Address,
    Headers,
    RemoteProtocolError,
    Request,
    Response,
    Uri,
    Via,
    header_key,
    parse,
    parse_addresses,
    quoted_string,
)

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKnashds7;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: Bob <sip:bob@example.com>;tag=456248\r\n"
    b"To: Bob <sip:bob@example.com>\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b'Contact: "Bob, at home" <sip:bob@192.0.2.4;transport=udp>;expires=60;'
    b'+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"\r\n'
    b"Content-Length: 0\r\n\r\n"
)


def test_a_register_is_read_lazily_and_completely():
    msg = parse(REGISTER)
    assert isinstance(msg, Request) and msg.method == "REGISTER"
    assert msg.uri.host == "example.com" and msg.uri.user is None
    assert msg.top_via.branch == "z9hG4bKnashds7" and "rport" in msg.top_via.parameters
    assert msg.from_address.tag == "456248" and msg.to_address.tag is None
    assert msg.to_address.uri.user == "bob"
    assert (msg.cseq.sequence, msg.cseq.method) == (1826, "REGISTER")
    [contact] = msg.contact
    assert contact.name == "Bob, at home"
    assert contact.uri.port is None and contact.uri.parameters == {"transport": "udp"}
    assert contact.parameters["expires"] == "60"
    assert contact.parameters["+sip.instance"].startswith('"<urn:uuid:')


def test_header_names_are_case_insensitive_and_compact_forms_expand():
    data = (
        b"OPTIONS sip:x@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/TCP h.example.com;branch=z9hG4bK1\r\n"
        b"VIA  : SIP/2.0/UDP second.example.com;branch=z9hG4bK2\r\n"
        b"f: <sip:a@example.com>;tag=1\r\nt: sip:x@example.com\r\n"
        b"i: abc\r\ncseq: 9 OPTIONS\r\nl: 0\r\n\r\n"
    )
    msg = parse(data)
    assert [v.host for v in msg.via] == ["h.example.com", "second.example.com"]
    assert msg.headers["Call-ID"] == "abc" and msg.headers.get("call-id") == "abc"
    assert msg.to_address.uri.user == "x" and msg.to_address.parameters == {}


def test_folded_lines_and_whitespace_around_the_via_protocol_are_accepted():
    data = (
        b"OPTIONS sip:x@example.com SIP/2.0\r\n"
        b"Via: SIP / 2.0 / UDP\r\n    192.0.2.1:5060 ;branch=z9hG4bK3\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:x@example.com>\r\n"
        b"Call-ID: abc\r\nCSeq: 9\r\n OPTIONS\r\n\r\n"
    )
    msg = parse(data)
    assert (msg.top_via.transport, msg.top_via.port, msg.top_via.branch) == (
        "UDP",
        5060,
        "z9hG4bK3",
    )
    assert msg.cseq.method == "OPTIONS"


def test_a_datagram_may_carry_octets_after_the_body():
    data = REGISTER.replace(b"Content-Length: 0", b"Content-Length: 4") + b"abcdEXTRA"
    assert parse(data).body == b"abcd"


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ((b"Content-Length: 0", b"Content-Length: 10"), 400),  # larger than the body
        ((b"Content-Length: 0", b"Content-Length: -1"), 400),
        ((b"Content-Length: 0\r\n", b"Content-Length: 0\r\nl: 4\r\n"), 400),  # two values
        ((b"CSeq: 1826 REGISTER", b"CSeq: 1826 INVITE"), 400),
        ((b"CSeq: 1826 REGISTER", b"CSeq: 99999999999 REGISTER"), 400),
        ((b"REGISTER sip:example.com SIP/2.0", b"REGISTER  sip:example.com SIP/2.0"), 400),
        ((b"REGISTER sip:example.com SIP/2.0", b"REGISTER sip:example.com SIP/7.0"), 505),
        ((b"REGISTER sip:example.com SIP/2.0", b"REGISTER <sip:example.com> SIP/2.0"), 400),
        ((b"Call-ID: 843817637684230@998sdasdh09\r\n", b""), 400),
        ((b"Max-Forwards: 70", b"Max Forwards: 70"), 400),
    ],
)
def test_what_rfc_3261_forbids_is_refused_with_a_status(change, status):
    with pytest.raises(RemoteProtocolError) as err:
        parse(REGISTER.replace(*change))
    assert err.value.status == status


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage",
        b"\xff\xfe\r\n\r\n",
        REGISTER.replace(b"Via: SIP/2.0/UDP", b"Via: nonsense"),
        REGISTER.replace(b"From: Bob <sip:bob@example.com>;tag=456248", b"From: <<<"),
        REGISTER.replace(b"CSeq: 1826 REGISTER", b"CSeq: seven REGISTER"),
        REGISTER.replace(b"REGISTER sip:example.com SIP/2.0", b"REGISTER nope SIP/2.0"),
        REGISTER.replace(b"Max-Forwards: 70", b"no colon here"),
        b"SIP/2.0 abc OK\r\n\r\n",
    ],
)
def test_garbage_is_refused_with_a_remote_error(raw):
    with pytest.raises(RemoteProtocolError):
        parse(raw)


def test_responses_keep_an_empty_or_unusual_reason_phrase():
    base = REGISTER.replace(b"REGISTER sip:example.com SIP/2.0", b"SIP/2.0 200")
    assert parse(base).phrase == ""
    msg = parse(base.replace(b"SIP/2.0 200", "SIP/2.0 200 = 2**3 * 5**2 но".encode()))
    assert isinstance(msg, Response) and msg.code == 200 and msg.phrase.endswith("но")


def test_unknown_uri_schemes_are_values_not_errors():
    assert Uri.parse("tel:+1-212-555-1212").scheme == "tel"
    assert not Uri.parse("urn:service:sos").is_sip
    assert Uri.parse("sips:[2001:db8::1]:5061;transport=tcp").port == 5061
    with pytest.raises(ValueError):
        Uri.parse("sip:user@host name")


def test_contact_lists_split_outside_quotes_and_brackets():
    found = parse_addresses(['"a, b" <sip:1@h>;q=0.5, sip:2@h;expires=3', "<sip:3@h;lr>"])
    assert [a.uri.user for a in found] == ["1", "2", "3"]
    assert found[1].parameters == {"expires": "3"}  # addr-spec: the parameter is the header's
    assert found[2].uri.parameters == {"lr": None}
    with pytest.raises(ValueError):
        Address.parse('"unterminated <sip:1@h>')


def test_writing_uses_canonical_names_and_a_computed_content_length():
    msg = Request("MESSAGE", "sip:x@example.com", body=b"hi")
    msg.headers.add("via", "SIP/2.0/UDP h;branch=z9hG4bK1")
    msg.headers.set("call-id", "c")
    msg.headers.set("CSEQ", "1 MESSAGE")
    msg.headers.set("www-authenticate", "Digest x")
    data = bytes(msg)
    assert data.startswith(b"MESSAGE sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=")
    assert b"\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nWWW-Authenticate: Digest x\r\n" in data
    assert data.endswith(b"Content-Length: 2\r\n\r\nhi")


def test_via_round_trips_with_received_and_rport():
    via = Via.parse("SIP/2.0/udp 10.0.0.1:5062;branch=z9hG4bKx;rport")
    stamped = Via(via.transport, via.host, via.port, {**via.parameters, "rport": "4000"})
    assert str(stamped) == "SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKx;rport=4000"
    assert Via.parse(str(stamped)) == stamped


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~", min_size=1, max_size=12)
_value = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r\n"),
    max_size=40,
).map(str.strip)


@given(
    method=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=10),
    extra=st.lists(st.tuples(_token, _value), max_size=6),
    body=st.binary(max_size=64),
)
def test_what_is_written_parses_back_the_same(method, extra, body):
    headers = Headers()
    headers.add("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc")
    headers.set("From", "<sip:a@example.com>;tag=1")
    headers.set("To", "<sip:b@example.com>")
    headers.set("Call-ID", "id@host")
    headers.set("CSeq", f"7 {method}")
    for name, value in extra:
        if header_key(name) not in ("via", "from", "to", "call-id", "cseq", "content-length"):
            headers.add(name, value)
    original = Request(method, "sip:b@example.com", headers, body)
    again = parse(bytes(original))
    assert isinstance(again, Request)
    assert (again.method, again.uri_text, again.body) == (method, original.uri_text, body)
    assert list(again.headers.items()) == [
        (name, value)
        for name, value in list(original.headers.items()) + [("Content-Length", str(len(body)))]
    ]


@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_a_protocol_error(data):
    try:
        msg = parse(b"OPTIONS sip:x@h SIP/2.0\r\n" + data)
    except RemoteProtocolError:
        return
    for view in ("via", "contact", "from_address", "to_address", "cseq", "max_forwards"):
        with contextlib.suppress(ValueError, KeyError):
            getattr(msg, view)


@given(st.text(max_size=40))
def test_any_display_name_round_trips_through_a_quoted_string(name):
    header = f"{quoted_string(name)} <sip:100@example.com>;tag=x"
    address = Address.parse(header)
    assert address.name == re.sub(r"[\x00-\x1f\x7f]+", " ", name)
    assert address.uri.text == "sip:100@example.com" and address.tag == "x"
