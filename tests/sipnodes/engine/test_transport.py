import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipnodes.engine.transport import FramingError, StreamFramer

MSG = (
    b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n"
    b"To: <sip:x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 4\r\n\r\nbody"
)


def test_joined_messages_and_keepalives():
    f = StreamFramer()
    assert f.feed(b"\r\n\r\n" + MSG + MSG + b"\r\n" + MSG[:10]) == [MSG, MSG]
    assert f.feed(MSG[10:]) == [MSG]


@given(st.lists(st.integers(min_value=1, max_value=len(MSG) * 3 - 1), max_size=8))
def test_any_split_gives_the_same_messages(cuts):
    data = MSG * 3
    points = sorted(set(cuts))
    pieces = [data[a:b] for a, b in zip([0] + points, points + [len(data)], strict=False)]
    f = StreamFramer()
    out = []
    for piece in pieces:
        out += f.feed(piece)
    assert out == [MSG, MSG, MSG]


# linphonec 5.1 over TCP, as it sent it: Authorization after Content-Length.
LINPHONE_REGISTER = (
    b"REGISTER sip:127.0.0.1:5070;transport=tcp SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:34567;alias;branch=z9hG4bK.xyz;rport\r\n"
    b"From: <sip:100@127.0.0.1>;tag=Abc\r\n"
    b"To: sip:100@127.0.0.1\r\n"
    b"CSeq: 21 REGISTER\r\n"
    b"Call-ID: q9iBd\r\n"
    b"Max-Forwards: 70\r\n"
    b"Supported: replaces, outbound, gruu, path\r\n"
    b'Contact: "Linphone 100" <sip:100@127.0.0.1:34567;transport=tcp>;'
    b'+sip.instance="<urn:uuid:a4f5c1d0-0000-1000-8000-000000000001>"\r\n'
    b"Expires: 3600\r\n"
    b"User-Agent: Linphone-Desktop/5.1 (belle-sip/5.1)\r\n"
    b"Content-Length: 0\r\n"
    b'Authorization:  Digest realm="vs12.sipcloud", nonce="abc", algorithm=MD5, '
    b'username="100", uri="sip:127.0.0.1:5070;transport=tcp", response="0"\r\n\r\n'
)


def test_content_length_anywhere_in_the_headers():
    f = StreamFramer()
    assert f.feed(LINPHONE_REGISTER + MSG) == [LINPHONE_REGISTER, MSG]


def test_compact_content_length():
    f = StreamFramer()
    msg = MSG.replace(b"Content-Length: 4", b"l: 4")
    assert f.feed(msg) == [msg]


def test_bounded_buffer_and_missing_length():
    with pytest.raises(FramingError):
        StreamFramer(limit=100).feed(b"x" * 101)
    with pytest.raises(FramingError):
        StreamFramer(limit=200).feed(MSG.replace(b"Content-Length: 4", b"Content-Length: 999"))
    with pytest.raises(FramingError):
        StreamFramer().feed(MSG.replace(b"Content-Length: 4\r\n", b""))
